"""The run-tag contract has two sides: the platform's names (reprise/tags.py) and the copy that
step_kit, a repository of its own, keeps. They must be the same strings."""

from __future__ import annotations

import step_kit.step as step_side

from reprise import tags


def test_step_kit_tags_equal_the_platforms() -> None:
    for name in ("OUTPUT_TAG", "OUTPUT_DIGEST_TAG", "OUTPUT_CONTENT_TAG", "STEP_TAG", "ERROR_TAG"):
        assert getattr(step_side, name) == getattr(tags, name), name


def test_derived_names_are_the_spelled_ones() -> None:
    # the names other tools (the MLflow UI, search filters in the docs) know them by
    assert tags.OUTPUT_DIGEST_TAG.format(name="clean") == "reprise.output.clean.sha256"
    assert tags.OUTPUT_CONTENT_TAG.format(name="clean") == "reprise.output.clean.digest"
    assert tags.REGISTERED_MODEL_TAG == "reprise.output.registered_model"
    assert tags.COMPONENT_SHA_TAG == "reprise.component.sha"
    assert tags.COMPONENT_TAG.format(key="train_model.sha") == "reprise.component.train_model.sha"
