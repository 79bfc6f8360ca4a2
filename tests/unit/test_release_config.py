"""A checkout at a release tag reruns the release's manifest: it takes the run-mode settings of
its command line and refuses any other step or setting, naming it."""

from typing import Any

import pytest
from omegaconf import OmegaConf

from reprise.errors import RepriseError
from reprise.pipeline import release_config


def _config(**changes: Any) -> dict[str, Any]:
    config = {
        "main": {
            "steps": "all",
            "release": "auto",
            "cache": False,
            "register": True,
            "registered_model_name": "m",
            "wandb": {"mode": "auto", "project": "p"},
        },
        "model": {"name": "decision_tree", "max_depth": None, "ratio": 0.1},
        "components": {"repository": "git://127.0.0.1/c.git", "version": "1.0.0"},
    }
    for key, value in changes.items():
        OmegaConf.update(conf := OmegaConf.create(config), key.replace("__", "."), value)
        config = OmegaConf.to_container(conf)
    return config


RELEASE = {"version": "1.2.3", "config": _config()}


def test_the_release_config_takes_the_run_mode_settings_of_the_command_line() -> None:
    given = OmegaConf.create(
        _config(main__cache=True, main__register=False, main__wandb__mode="disabled")
    )
    merged = release_config(given, RELEASE)
    assert merged.main.register is False and merged.main.cache is True
    assert merged.main.wandb.mode == "disabled" and merged.model.max_depth is None


def test_a_release_without_the_register_setting_takes_it_from_the_command_line() -> None:
    old = {"version": "1.0.0", "config": _config()}
    del old["config"]["main"]["register"]
    merged = release_config(OmegaConf.create(_config(main__register=False)), old)
    assert merged.main.register is False


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("main.steps", "get_data", "main.steps=get_data"),
        ("model.max_depth", 6, "model.max_depth=6"),
        ("model.ratio", 0.1000001, "model.ratio=0.1000001"),
        ("model.name", "random_forest", "model.name=random_forest"),
        ("components.version", "1.0.1", "components.version=1.0.1"),
        ("main.registered_model_name", "", "main.registered_model_name="),
    ],
)
def test_any_other_step_or_setting_is_refused_naming_it(key: str, value: Any, shown: str) -> None:
    given = OmegaConf.create(_config(**{key.replace(".", "__"): value}))
    with pytest.raises(RepriseError) as refused:
        release_config(given, RELEASE)
    said = str(refused.value)
    assert "This checkout is release 1.2.3" in said and shown in said
    assert "main.release=off" in said


def test_a_setting_the_release_did_not_have_is_refused() -> None:
    given = OmegaConf.create({**_config(), "extra": {"key": 1}})
    with pytest.raises(RepriseError, match="extra.key=1"):
        release_config(given, RELEASE)


@pytest.mark.parametrize("jobs", ["abc", 0, -1, 1.5, True, None, "2; touch x"])
def test_a_job_count_that_is_not_one_is_refused(jobs: Any) -> None:
    from reprise.pipeline import _jobs

    with pytest.raises(RepriseError, match="main.jobs is .* not a count of steps"):
        _jobs(jobs)
    assert _jobs(2) == 2
