"""`reprise new-component NAME` (issue 12, item 5): a component in the shape of the others that
passes ruff and its own test at once and runs as an MLflow project; hostile or taken names are
refused in one line; the folder appears whole or not at all. Every test writes into a copy of
components-repo, never into the real one."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from step_kit.cli import parse_args

import pandas as pd
import pytest
import yaml

from reprise import new_component
from reprise.errors import RepriseError
from support import ROOT, Workspace, _copy_components, reprise

NAME = "row_counter"
RUFF = str(ROOT / ".venv" / "bin" / "ruff")
MLFLOW = str(ROOT / ".venv" / "bin" / "mlflow")
HOSTILE_NAMES = [
    "",
    "Row_counter",
    "ROWS",
    "1st_step",
    "_private",
    "trailing_",
    "double__underscore",
    "kebab-case",
    "with space",
    "dotted.name",
    ".",
    "..",
    "../escape",
    "nested/name",
    "/absolute",
    "back\\slash",
    "a;touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "a|touch pwned",
    "a&&b",
    ">pwned",
    "line\nbreak",
    "nul\x00byte",
    "café",
    "class",
]


@pytest.fixture
def components(tmp_path: Path) -> Path:
    """A copy of components-repo (without the components' tests) beside a copy of the root
    pyproject.toml, the configuration `make test` collects components with."""
    copy = tmp_path / "components-repo"
    _copy_components(copy)
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return copy


def listing(folder: Path) -> list[str]:
    """Every path under ``folder``, hidden ones too, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def reprise_command(*args: str) -> subprocess.CompletedProcess:
    """``python -m reprise ARGS`` as a user types it."""
    return reprise(*args, timeout=120)


def test_the_component_has_the_shape_of_the_others(components: Path) -> None:
    created = new_component.create(NAME, components)
    folder = components / NAME
    assert created.folder == folder
    assert created.logic_module == f"{NAME}_logic.py" and created.output == f"{NAME}_data"
    assert listing(folder) == [
        "MLproject",
        "conftest.py",
        "python_env.yaml",
        "requirements.in",
        "requirements.txt",
        f"{NAME}_logic.py",
        "run.py",
        "step_kit",
        "tests",
        f"tests/test_{NAME}_logic.py",
    ]
    assert os.readlink(folder / "step_kit") == "../step_kit"
    assert (folder / "step_kit").resolve() == (components / "step_kit").resolve()

    spec = yaml.safe_load((folder / "MLproject").read_text())
    assert spec["name"] == NAME and spec["python_env"] == "python_env.yaml"
    parameters = spec["entry_points"]["main"]["parameters"]
    assert list(parameters) == ["input_artifact", "input_sha256", "example"]
    assert all(p["description"] for p in parameters.values())
    command = spec["entry_points"]["main"]["command"]
    assert command.split() == [
        "python",
        "run.py",
        *(f"--{name}={{{name}}}" for name in parameters),
    ]
    args = parse_args(folder, ["--input_artifact=runs:/abc/table.parquet"])
    assert vars(args) == {
        "input_artifact": "runs:/abc/table.parquet",
        "input_sha256": "",
        "example": "?",
    }

    # the environment is an existing component's lock, byte for byte: `make lock` agrees with it
    source = components / created.environment_from
    for name in ("python_env.yaml", "requirements.txt"):
        assert (folder / name).read_bytes() == (source / name).read_bytes(), name
    requirements = (folder / "requirements.in").read_text().split("\n", 1)[1].split()
    assert set(requirements) == new_component.BASE_REQUIREMENTS
    assert set(requirements) <= set((source / "requirements.in").read_text().split())
    assert "mlflow==" in (folder / "requirements.txt").read_text()


@pytest.mark.parametrize("name", [NAME, "s" * new_component.MAX_NAME_LENGTH, "step2"])
def test_the_component_passes_ruff_and_its_own_test(components: Path, name: str) -> None:
    new_component.create(name, components)
    folder = components / name
    config = str(ROOT / "pyproject.toml")
    for check in (["check"], ["format", "--check", "--diff"]):
        result = subprocess.run(
            [RUFF, *check, "--config", config, str(folder)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    # as `make test` collects it (the root configuration) and from the components folder alone,
    # as the published components repository runs its tests
    for cwd, target in ((components.parent, f"components-repo/{name}"), (components, name)):
        result = subprocess.run(
            [sys.executable, "-m", "pytest", target, "-q", "-p", "no:cacheprovider"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2 passed" in result.stdout


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_a_hostile_name_is_refused_and_nothing_is_written(components: Path, name: str) -> None:
    before = listing(components.parent)
    with pytest.raises(RepriseError) as refused:
        new_component.create(name, components)
    message = str(refused.value)
    assert f"Component name {name!r} is not a lower-snake-case Python identifier." in message
    assert "Fix: name it in lower snake case" in message
    assert "\n" not in message
    assert listing(components.parent) == before


def test_a_name_too_long_is_refused(components: Path) -> None:
    name = "s" * (new_component.MAX_NAME_LENGTH + 1)
    with pytest.raises(RepriseError, match=r"is 41 characters long, over 40\. Fix: name it"):
        new_component.create(name, components)
    assert not (components / name).exists()


def test_a_taken_name_is_refused_and_left_as_it_is(components: Path) -> None:
    (components / "notes").write_text("mine\n")
    (components / "linked").symlink_to("nowhere")
    existing = sorted(p.parent.name for p in components.glob("*/MLproject"))[0]
    before = {p: p.read_bytes() for p in (components / existing).rglob("*") if p.is_file()}
    for name in (existing, "step_kit", "notes", "linked"):
        with pytest.raises(RepriseError) as refused:
            new_component.create(name, components)
        assert str(refused.value) == (
            f"{components / name} exists already; it is left as it is. Fix: choose another "
            "name, or remove that folder first if it is yours to remove."
        )
    assert (components / "notes").read_text() == "mine\n"
    assert os.readlink(components / "linked") == "nowhere"
    assert {p: p.read_bytes() for p in (components / existing).rglob("*") if p.is_file()} == before


def test_a_missing_components_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    for missing in (tmp_path / "nowhere", tmp_path / "a-file"):
        with pytest.raises(RepriseError, match=r"^Components folder .* does not exist\. Fix: "):
            new_component.create(NAME, missing)
    assert sorted(os.listdir(tmp_path)) == ["a-file"]


def test_the_command_answers_in_one_line(components: Path) -> None:
    created = reprise_command("new-component", NAME, "--components-dir", str(components))
    assert created.returncode == 0, created.stderr
    assert f"Created component {NAME} in {components / NAME}" in created.stdout
    assert (components / NAME / "MLproject").is_file()
    for name in (NAME, "Bad/Name", "x; touch pwned"):
        refused = reprise_command("new-component", name, "--components-dir", str(components))
        assert refused.returncode == 1
        assert refused.stdout == ""
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "Fix: " in lines[0], refused.stderr
    assert not (ROOT / "pwned").exists() and not (components / "pwned").exists()


def test_a_kill_midway_leaves_no_component(components: Path) -> None:
    """Killed (SIGKILL) while writing, the command leaves no component folder, only its scratch
    folder, which the next command removes before it writes the component whole."""
    locks = {path: path.read_bytes() for path in components.glob("*/requirements.txt")}
    for path in locks:  # reading a lock blocks: the command stops midway, its other files written
        path.unlink()
        os.mkfifo(path)
    process = subprocess.Popen(
        [sys.executable, "-m", "reprise", "new-component", NAME, "--components-dir", components],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    scratch = components / new_component.SCRATCH
    try:
        deadline = time.monotonic() + 60
        while not list(scratch.glob(f"*/{NAME}/python_env.yaml")):
            assert process.poll() is None and time.monotonic() < deadline, "never got midway"
            time.sleep(0.05)
        assert list(scratch.glob(f"*/{NAME}/run.py"))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert not (components / NAME).exists()
    assert [p.name for p in components.iterdir() if p.name.startswith(NAME)] == []
    (left,) = scratch.iterdir()
    assert (left / "owner.json").is_file()

    for path, text in locks.items():
        path.unlink()
        path.write_bytes(text)
    created = new_component.create(NAME, components)
    assert (components / NAME / "requirements.txt").read_bytes() == locks[
        components / created.environment_from / "requirements.txt"
    ]
    assert not scratch.exists()  # the dead command's scratch folder is gone with this one's


def test_make_lock_locks_a_new_component(components: Path) -> None:
    shutil.copy2(ROOT / "Makefile", components.parent / "Makefile")
    new_component.create(NAME, components)
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(components.parent), "lock"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # the project locks itself, then the components' own `make lock` locks every component
    lines = result.stdout.splitlines()
    assert any(line.startswith("cd project && ") for line in lines)
    (loop,) = [line for line in lines if line.startswith("for dir in ")]
    folders = loop.removeprefix("for dir in ").split("; do")[0].split()
    expected = sorted(p.parent.name for p in components.glob("*/MLproject"))
    assert NAME in expected
    assert folders == expected


def test_a_folder_that_cannot_be_written_is_named(components: Path) -> None:
    (components / new_component.SCRATCH).write_text("in the way\n")
    with pytest.raises(RepriseError) as refused:
        new_component.create(NAME, components)
    assert str(refused.value) == (
        f"Component {NAME} cannot be written in {components}: File exists. Fix: make that "
        "folder writable, or pass --components-dir with one that is."
    )
    assert not (components / NAME).exists()


@pytest.mark.e2e
@pytest.mark.xdist_group("new-component")
def test_the_new_component_runs_as_an_mlflow_project(
    components: Path, workspace: Workspace
) -> None:
    from mlflow.tracking import MlflowClient

    new_component.create(NAME, components)
    # a small real table, logged as an artifact of a run of its own, as an earlier step would
    table = pd.read_parquet(components / "get_data" / "data" / "sample1.parquet").head(300)
    path = workspace.path / "table.parquet"
    table.to_parquet(path, index=False)
    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    experiment_id = client.create_experiment(
        "reprise-test", artifact_location=(workspace.path / "mlartifacts").as_uri()
    )
    upstream = client.create_run(experiment_id).info.run_id
    client.log_artifact(upstream, str(path))
    client.set_terminated(upstream)

    result = subprocess.run(
        [MLFLOW, "run", str(components / NAME), "--env-manager", "local",
         "--experiment-name", "reprise-test",
         "-P", f"input_artifact=runs:/{upstream}/table.parquet",
         "-P", f"input_sha256={hashlib.sha256(path.read_bytes()).hexdigest()}",
         "-P", "example=?"],
        cwd=workspace.path,
        env=workspace.env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (run,) = client.search_runs([experiment_id], filter_string=f"tags.`reprise.step` = '{NAME}'")
    assert run.info.status == "FINISHED"
    uri = run.data.tags[f"reprise.output.{NAME}_data"]
    assert uri == f"runs:/{run.info.run_id}/{NAME}_data.parquet"
    assert run.data.tags[f"reprise.output.{NAME}_data.sha256"]
    output = pd.read_parquet(
        client.download_artifacts(run.info.run_id, f"{NAME}_data.parquet", str(workspace.path))
    )
    pd.testing.assert_frame_equal(output, table)
    assert run.data.metrics == {
        "rows": 300,
        "cells_equal_example": int(table.astype("string").eq("?").sum().sum()),
    }
    assert run.data.metrics["cells_equal_example"] > 0  # the sample holds '?' for missing


# make expands $(x): a value meant to reach the shell as $(...) is written $$(...) for make
MAKE_NAMES = ['"; touch {m}; echo "', "'; touch {m}; '", "$$(touch {m}) `touch {m}`", "-rf", ""]


@pytest.mark.e2e
@pytest.mark.xdist_group("new-component")
def test_make_new_component_takes_the_name_as_one_word(tmp_path: Path) -> None:
    before = sorted(os.listdir(ROOT / "components-repo"))
    for number, template in enumerate(MAKE_NAMES):
        marker = tmp_path / f"made-{number}"
        result = subprocess.run(
            ["make", "--no-print-directory", "-C", str(ROOT), "new-component",
             f"NAME={template.format(m=marker)}"],
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-2000:]
        assert not marker.exists(), f"NAME={template!r} ran a command: {output[-2000:]}"
        assert "is not a lower-snake-case Python identifier. Fix: " in output, output[-2000:]
        assert "Traceback" not in output, output[-2000:]
    assert sorted(os.listdir(ROOT / "components-repo")) == before
