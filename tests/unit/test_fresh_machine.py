"""The fresh-machine bootstrap (project/bootstrap.py) and where a run's local state goes
(reprise/paths.py), issue 11 item 1: code tier; tests/e2e/test_fresh_machine_e2e.py runs it whole."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from reprise import paths
from support import ROOT

BOOTSTRAP = ROOT / "project" / "bootstrap.py"
MLFLOW = re.search(r"^mlflow==(\S+)", (ROOT / "project" / "requirements.txt").read_text(), re.M)[1]
OTHER_PYTHONS = [
    Path(f"/root/.pyenv/versions/{v}/bin/python{v.rsplit('.', 1)[0]}")
    for v in ("3.7.16", "3.8.18", "3.9.18", "3.10.13", "3.12.1", "3.13.0")
]


def bootstrap(python: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """project/bootstrap.py ARGS by ``python``, as `mlflow run` starts it (in project/)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "REPRISE_"))}
    env["REPRISE_CACHE_DIR"] = str(tmp_path / "cache")
    return subprocess.run(
        [python, BOOTSTRAP.name, *args],
        cwd=BOOTSTRAP.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("python", OTHER_PYTHONS, ids=lambda p: p.name)
def test_another_python_is_refused_in_one_line_naming_both(python: Path, tmp_path: Path) -> None:
    if not python.exists():
        pytest.skip(f"{python} is not installed here")
    result = bootstrap(str(python), tmp_path, "--steps=all", "--hydra_options=")
    found = python.name.removeprefix("python")
    assert result.returncode == 1
    assert result.stderr == (
        f"bootstrap.py: The project needs Python 3.11; mlflow runs it with Python {found} "
        f"({python}). Fix: make a venv with Python 3.11 (python3.11 -m venv .venv), activate it, "
        f"pip install mlflow=={MLFLOW}, and rerun.\n"
    )
    assert not (tmp_path / "cache").exists()


def test_an_interpreter_holding_every_pin_runs_main_in_place_with_the_same_arguments(
    tmp_path: Path,
) -> None:
    # the repository's venv holds every pin of project/requirements.txt
    result = bootstrap(sys.executable, tmp_path, "--steps=get_data", "--hydra_options=--cfg job")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "steps: get_data" in result.stdout  # main.py's Hydra printed the composed config
    assert not (tmp_path / "cache").exists()  # no environment was made


@pytest.mark.parametrize(
    ("uri", "folder"),
    [
        ("sqlite:////srv/runs/mlflow.db", "/srv/runs"),
        ("sqlite:////srv/my%20runs/mlflow.db", "/srv/my runs"),
        ("file:///srv/runs/mlruns", "/srv/runs"),
        ("/srv/runs/mlruns", "/srv/runs"),
        ("sqlite:///relative.db", None),
        ("mlruns", None),
        ("http://127.0.0.1:5000", None),
        ("https://user:secret@mlflow.example.org", None),
        ("postgresql://user:secret@db/mlflow", None),
        ("databricks", None),
        ("", None),
    ],
)
def test_the_folder_of_a_local_store_only(uri: str, folder: str | None) -> None:
    assert paths.local_store_folder(uri) == (Path(folder) if folder else None)


@pytest.mark.parametrize(
    ("root", "clone"),
    [
        (Path(tempfile.gettempdir()) / "tmpa1b2c3d4", True),
        (Path(tempfile.gettempdir()) / "reprise", False),
        (Path(tempfile.gettempdir()) / "pytest-of-root" / "tmpa1b2c3d4", False),
        (ROOT, False),
    ],
)
def test_mlflow_clone_is_a_tmp_folder_of_the_temp_folder(root: Path, clone: bool) -> None:
    assert paths.in_mlflow_clone(root.resolve()) is clone


def test_the_runs_line_names_store_experiment_and_the_wandb_sync_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "my state"))
    line = paths.where_runs_go("sqlite:////x/mlflow.db", "adult", "offline")
    runs = tmp_path / "my state" / "wandb"
    assert line == (
        "runs go to the MLflow store sqlite:////x/mlflow.db, experiment 'adult'; W&B offline runs "
        f"to {runs} (upload them with: wandb sync '{runs}'/offline-run-*)"
    )


@pytest.mark.parametrize("mode", ["disabled", "online"])
def test_the_default_experiment_is_named_with_how_to_name_one(mode: str) -> None:
    line = paths.where_runs_go("http://***@mlflow.example.org", "Default", mode)
    assert line.startswith(
        "runs go to the MLflow store http://***@mlflow.example.org, experiment 'Default' (MLflow's "
        "default: name one with --experiment-name NAME or MLFLOW_EXPERIMENT_NAME)"
    )
    assert ("W&B" in line) is (mode == "online") and "wandb sync" not in line


def test_the_readme_names_what_a_fresh_machine_needs_at_the_locked_versions() -> None:
    releases = (ROOT / "README.md").read_text().split("## Releases", 1)[1]
    python = re.search(r'^python: "(\d+\.\d+)', (ROOT / "project" / "python_env.yaml").read_text())
    assert f"needs Python {python[1]}" in releases
    assert f"pip install mlflow=={MLFLOW}" in releases
