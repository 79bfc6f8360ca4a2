"""A config node as plain Python (reprise/plain_config.py): settings by name, resolved, or one
line naming the setting that is not a mapping."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from reprise.errors import RepriseError
from reprise.plain_config import plain_dict


def test_a_mapping_comes_back_resolved_as_plain_python() -> None:
    cfg = OmegaConf.create({"main": {"seed": 7, "copy": "${main.seed}", "steps": ["a", "b"]}})
    settings = plain_dict(cfg.main, "main")
    assert settings == {"seed": 7, "copy": 7, "steps": ["a", "b"]}
    assert type(settings) is dict and type(settings["steps"]) is list


def test_a_list_where_settings_by_name_are_expected_is_refused_naming_it() -> None:
    cfg = OmegaConf.create({"init": ["address", "auto"]})
    with pytest.raises(RepriseError, match=r"^hydra.launcher.ray.init is a list, where settings"):
        plain_dict(cfg.init, "hydra.launcher.ray.init")


def test_a_key_that_is_not_a_name_is_refused() -> None:
    cfg = OmegaConf.create({"steps": {}, 1: "one"})
    with pytest.raises(
        RepriseError, match=r"^pipeline has keys that are not names: 1\. Fix: quote"
    ):
        plain_dict(cfg, "pipeline")
