"""What the platform and step_kit, a repository of its own, each keep a copy of: the run-tag names
(reprise/tags.py) must be the same strings, and the collector pause of their processes' imports
(startup.py) the same code."""

from __future__ import annotations

import inspect

import step_kit.startup
import step_kit.step as step_side

import reprise.startup
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


def test_step_kit_pauses_the_collector_as_the_platform_does() -> None:
    step_side_code = inspect.getsource(step_kit.startup.imports_paused)
    assert step_side_code == inspect.getsource(reprise.startup.imports_paused)
