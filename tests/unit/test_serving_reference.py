"""The model reference (reprise/serving/reference.py): one parse of a models:/ URI for the
version resolved and for the alias the server follows."""

from __future__ import annotations

import pytest

from reprise.errors import RepriseError
from reprise.serving.reference import ModelReference, parse_models_uri, pinned_uri


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("models:/adult@prod", ("adult", None, "prod")),
        ("models:/adult/3", ("adult", "3", None)),
        ("models:/adult", ("adult", None, None)),
        ("runs:/abc/model", None),
        ("/tmp/model", None),
    ],
)
def test_a_models_uri_parses_to_name_version_alias(uri: str, parsed: tuple | None):
    assert parse_models_uri(uri) == parsed


def test_only_an_alias_is_followed():
    assert ModelReference(model="models:/adult@prod").alias == ("adult", "prod")
    assert ModelReference(model="models:/adult/3").alias is None
    assert ModelReference(model="runs:/abc/model").alias is None
    assert ModelReference(release="1.0.0").alias is None


def test_an_alias_is_pinned_to_the_version_it_pointed_to():
    assert pinned_uri("models:/adult@prod", {"name": "adult", "version": "7"}) == "models:/adult/7"
    assert pinned_uri("runs:/abc/model", {}) == "runs:/abc/model"


def test_a_release_and_a_model_together_are_refused():
    with pytest.raises(RepriseError, match="pass one of --release X.Y.Z and --model URI"):
        ModelReference(release="1.0.0", model="models:/adult@prod")
