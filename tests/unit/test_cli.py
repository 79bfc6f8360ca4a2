"""The command line as users expect it: --version, --log-level, defaults in every --help, the
declared steps in `run --help` and `run --list-steps`, `run -m` for a sweep, and `make ui`."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reprise import api, graph, paths, tracking
from reprise.cli import (
    LOG_LEVELS,
    build_parser,
    declared_steps_line,
    main,
    platform_version,
)
from reprise.versioning import current_version
from support import ROOT, reprise


def python_m_reprise(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return reprise(*args, env=env, timeout=120)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": parser, **sub.choices}


@pytest.fixture
def mlflow_uri() -> Iterator[None]:
    """Leave MLflow's tracking URI as the test found it."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(previous)


# --version


def test_version_is_the_one_a_release_bumps() -> None:
    result = python_m_reprise("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"reprise {current_version(ROOT / '.bumpversion.cfg')}\n"


def test_version_is_the_packages() -> None:
    from importlib.metadata import version

    # the venv is synced from pyproject.toml, which a release bumps with .bumpversion.cfg
    assert platform_version() == version("reprise")


# --log-level


def test_a_wrong_log_level_is_one_line_naming_the_choices() -> None:
    result = python_m_reprise("--log-level", "verbose", "doctor")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Log level 'verbose' is not one of DEBUG, INFO, WARNING, ERROR." in lines[0]
    assert "Fix: give --log-level one of them" in lines[0]
    assert result.stdout == ""


def test_a_wrong_log_level_in_the_environment_is_refused_too(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REPRISE_LOG_LEVEL", "loud")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert main(["ui"]) == 2
    assert "Log level 'loud' is not one of DEBUG, INFO, WARNING, ERROR." in caplog.text


def test_the_log_level_reaches_the_steps_through_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REPRISE_LOG_LEVEL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:s3cret@127.0.0.1:5000")
    assert main(["--log-level", "warning", "ui"]) == 0
    # the steps' processes inherit it; step_kit's configure_logging reads it
    assert os.environ["REPRISE_LOG_LEVEL"] == "WARNING"
    assert capsys.readouterr().out == "open http://127.0.0.1:5000 in a browser\n"


def test_the_log_level_defaults_to_the_environments_else_info(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REPRISE_LOG_LEVEL", raising=False)
    assert build_parser().parse_args(["doctor"]).log_level == "INFO"
    monkeypatch.setenv("REPRISE_LOG_LEVEL", "ERROR")
    assert build_parser().parse_args(["doctor"]).log_level == "ERROR"
    assert set(LOG_LEVELS) == {"DEBUG", "INFO", "WARNING", "ERROR"}


def test_a_step_logs_at_the_level_given(tmp_path: Path) -> None:
    code = (
        "import logging; from step_kit.step import configure_logging; configure_logging(); "
        "print(logging.getLevelName(logging.getLogger().level))"
    )
    env = {**os.environ, "REPRISE_LOG_LEVEL": "DEBUG"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT / "components-repo",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "DEBUG", result.stderr


# defaults in every --help


@pytest.mark.parametrize("command", list(subcommands()))
def test_every_help_shows_the_defaults(command: str) -> None:
    parser = subcommands()[command]
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if action.default in (None, "", False, argparse.SUPPRESS) or not action.option_strings:
            continue
        help_text = " ".join((action.help or "").split())
        assert help_text, f"{command} {action.option_strings[0]} has no help"
        shown = help_text if "(default" in help_text else f"{help_text} (default: {action.default})"
        assert shown in text, f"{command} {action.option_strings[0]}: {text}"


def test_help_never_shows_the_servers_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPRISE_SERVE_API_KEY", "s3cret-key")
    assert "s3cret-key" not in subcommands()["serve"].format_help()


# the declared steps


def test_run_help_names_the_declared_steps(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["run", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    names = graph.declared(graph.project_config()).names
    assert f"Declared steps (in running order): {', '.join(names)}." in text
    assert "--steps STEPS comma-separated declared steps, or all (default: all)" in text


def test_the_steps_are_read_only_when_help_is_printed() -> None:
    code = (
        "import sys; from reprise.cli import build_parser; "
        "build_parser().parse_args(['run', '--steps', 'all']); print('hydra' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr


def test_a_broken_config_does_not_break_run_help(tmp_path: Path) -> None:
    config = tmp_path / "project" / "config"
    config.mkdir(parents=True)
    (config / "config.yaml").write_text("defaults:\n  - pipeline: missing\n")
    line = declared_steps_line(tmp_path)
    assert line.startswith("Declared steps: unknown, the project's config does not compose (")
    assert "missing" in line and "\n" not in line
    (config / "config.yaml").write_text("main:\n  cache: true\n")
    assert "no pipeline.steps" in declared_steps_line(tmp_path)


def test_list_steps_prints_each_step_and_its_component(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--list-steps"]) == 0
    pipeline = graph.declared(graph.project_config())
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [
        [step.name, step.component] for step in pipeline.steps.values()
    ]


def test_list_steps_of_a_bad_override_is_one_line(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["run", "--list-steps", "pipeline=absent"]) == 1
    assert capsys.readouterr().out == ""
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "absent" in record.getMessage() and "\n" not in record.getMessage()


# run -m


def test_run_takes_a_sweep_as_typed_and_after_a_double_dash() -> None:
    parser = build_parser()
    typed = parser.parse_args(["run", "-m", "model.max_depth=4,8"])
    assert typed.multirun and typed.overrides == ["model.max_depth=4,8"]
    dashed = parser.parse_args(["run", "--", "-m", "model.max_depth=4,8"])
    assert not dashed.multirun and dashed.overrides == ["-m", "model.max_depth=4,8"]
    assert parser.parse_args(["run", "--multirun", "model.max_depth=4,8"]).multirun


def test_the_api_suggests_a_sweep_command_that_parses() -> None:
    with pytest.raises(api.ConfigError) as refused:
        api.run(["-m", "model.max_depth=4,8"])
    assert "Fix: run it from a shell: python -m reprise run -m key=a,b" in str(refused.value)
    suggested = str(refused.value).split("python -m reprise ", 1)[1].split(" (or", 1)[0]
    args = build_parser().parse_args(shlex.split(suggested))
    assert args.command == "run" and args.multirun and args.overrides == ["key=a,b"]


# the MLflow UI


def test_the_hint_after_a_run_says_make_ui_for_the_default_store(
    mlflow_uri: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    store = f"sqlite:///{paths.ROOT / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    monkeypatch.chdir(paths.ROOT)
    hint = tracking.ui_hint()
    assert (
        hint
        == f"make ui (or: {shlex.quote(sys.executable)} -m mlflow ui --backend-store-uri {store})"
    )


def test_the_hint_names_another_store_and_folder(
    mlflow_uri: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mlflow

    store = f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    monkeypatch.chdir(tmp_path)
    hint = tracking.ui_hint()
    assert hint.startswith(f"MLFLOW_TRACKING_URI={store} make -C {paths.ROOT} ui (or: ")
    assert f"mlflow ui --backend-store-uri {store}" in hint


def test_the_hint_for_a_server_is_its_url(mlflow_uri: None) -> None:
    import mlflow

    mlflow.set_tracking_uri("https://bob:s3cret@mlflow.example.org/team")
    assert tracking.ui_hint() == "open https://mlflow.example.org/team in a browser"
