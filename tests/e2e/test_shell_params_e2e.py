"""No MLproject parameter reaches a shell unquoted (issue 10, item 1), and a sweep whose points
failed exits non-zero.

Every parameter of every MLproject (read from the files) gets each value of a class of shell
metacharacters. The command line is built by MLflow's own code and run by MLflow's own launcher
(``bash -c``) with a stub ``python`` on PATH that records its argv: each parameter must arrive as
exactly one word, unchanged, and no file may appear. Real ``mlflow run project`` runs then prove
the real path, up to the composed config (Hydra's ``--cfg job``) and the step selection."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from step_kit.cli import parse_args

import pytest
import yaml
from mlflow.projects import utils as project_utils
from mlflow.projects.backend.local import _run_entry_point
from mlflow.tracking import MlflowClient

from reprise.project_args import hydra_arguments, quote_value, split_options, steps_override
from support import ROOT, Workspace, run_reprise, sweep_and_points

MLPROJECT_DIRS = [
    ROOT / "project",
    *sorted(p.parent for p in (ROOT / "components-repo").glob("*/MLproject")),
]
# "{m}" is the name of the file a successful injection would create, one per parameter
METACHARACTERS = [
    '"; touch {m}; echo "',
    "'; touch {m}; '",
    "$(touch {m})",
    "`touch {m}`",
    "| touch {m}",
    "&& touch {m}",
    "; touch {m}",
    "*",
    "a\ntouch {m}",
    ">{m}",
    "<{m} $HOME ${{IFS}}",
    "--",
    "-h",
    "",
    " spaced  out ",
]
DECOY = "decoy"  # a file for a glob to expand to
STUB = """#!{python} -IS
import json, sys
with open("argv.json", "w") as out:
    json.dump(sys.argv[1:], out)
"""
MLFLOW = str(ROOT / ".venv" / "bin" / "mlflow")
RUN_TIMEOUT_S = 300


def parameters_of(project_dir: Path) -> dict[str, dict]:
    """The main entry point's parameters, as the MLproject declares them."""
    spec = yaml.safe_load((project_dir / "MLproject").read_text())
    return spec["entry_points"]["main"]["parameters"]


def injected(pattern: str, project_dir: Path) -> dict[str, str]:
    """Each parameter's value: ``pattern`` naming a file of that parameter's own."""
    return {name: pattern.format(m=f"pwned_{name}") for name in parameters_of(project_dir)}


@pytest.fixture
def stub_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``python`` first on PATH that writes its argv to ./argv.json and runs nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "python"
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), os.environ["PATH"]]))


@pytest.mark.e2e
@pytest.mark.parametrize("project_dir", MLPROJECT_DIRS, ids=lambda p: p.name)
def test_every_parameter_arrives_as_one_unchanged_word(
    project_dir: Path, tmp_path: Path, stub_python: None
) -> None:
    entry_point = project_utils.load_project(str(project_dir)).get_entry_point("main")
    launched = []
    for number, pattern in enumerate(METACHARACTERS):
        values = injected(pattern, project_dir)
        work_dir = tmp_path / f"case-{number}"
        work_dir.mkdir()
        (work_dir / DECOY).touch()
        command = entry_point.compute_command(values, str(tmp_path))
        launched.append((values, work_dir, _run_entry_point(command, str(work_dir), "0", "stub")))
    for values, work_dir, submitted in launched:
        assert submitted.wait(), f"the command failed for {values}"
        assert sorted(os.listdir(work_dir)) == ["argv.json", DECOY], values
        program, *words = json.loads((work_dir / "argv.json").read_text())
        assert program in {"main.py", "run.py", "bootstrap.py"}
        assert sorted(words) == sorted(f"--{name}={value}" for name, value in values.items())
        if program == "run.py":
            strings = {
                name: values[name]
                for name, spec in parameters_of(project_dir).items()
                if spec.get("type", "string") == "string"
            }
            # numeric parameters are refused by the component's own flag types
            parsed = vars(
                parse_args(project_dir, [w for w in words if w[2:].split("=")[0] in strings])
            )
            assert {name: parsed[name] for name in strings} == strings
        else:  # main.py: the options split without a shell, the steps quoted for Hydra
            assert hydra_arguments(words) == [
                *split_options(values["hydra_options"]),
                steps_override(values["steps"]),
            ]


def mlflow_run_project(workspace: Workspace, **parameters: str) -> subprocess.CompletedProcess:
    """``mlflow run project --env-manager local -P NAME=VALUE ...`` as a user types it."""
    params = [arg for name, value in parameters.items() for arg in ("-P", f"{name}={value}")]
    return subprocess.run(
        [MLFLOW, "run", "project", "--env-manager", "local", *params],
        cwd=ROOT,
        env=workspace.env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


@pytest.mark.e2e
def test_mlflow_run_project_takes_hostile_values_as_text(workspace: Workspace) -> None:
    marker = workspace.path / "pwned"
    steps = f'"; touch {marker}_steps; echo "'
    values = {  # config keys of the project whose values are free text
        "etl.sample": f"$(touch {marker}_sample) *",
        "etl.missing_token": f"`touch {marker}_token` | touch {marker}_pipe",
        "main.registered_model_name": f"'; touch {marker}_name; ' && >{marker}_gt",
    }
    options = shlex.join(["--cfg", "job", *(f"{k}={quote_value(v)}" for k, v in values.items())])
    result = mlflow_run_project(workspace, steps=steps, hydra_options=options)
    assert result.returncode == 0, result.stderr[-3000:]
    cfg = yaml.safe_load(result.stdout)
    assert cfg["main"]["steps"] == steps
    for key, value in values.items():
        group, name = key.split(".")
        assert cfg[group][name] == value
    assert not list(workspace.path.glob("pwned*"))


@pytest.mark.e2e
def test_mlflow_run_project_refuses_hostile_steps_in_one_line(workspace: Workspace) -> None:
    marker = workspace.path / "pwned"
    steps = f'"; touch {marker}; echo "'
    result = mlflow_run_project(workspace, steps=steps)
    assert result.returncode != 0
    # Hydra's log (the project's) goes to stdout, MLflow's to stderr
    assert f"pipeline failed: Unknown step(s) {steps}. Fix: choose from: all," in result.stdout
    assert not marker.exists()


@pytest.mark.e2e
def test_unbalanced_hydra_options_are_refused_in_one_line(workspace: Workspace) -> None:
    result = mlflow_run_project(workspace, hydra_options="etl.sample='sample1.parquet")
    assert result.returncode != 0
    assert (
        "main.py: hydra_options could not be split into Hydra overrides (No closing quotation): "
        '"etl.sample=\'sample1.parquet". Fix: close the quote, or escape a literal quote with a '
        "backslash.\n" in result.stderr
    )


@pytest.mark.e2e
def test_a_sweep_with_a_failed_point_exits_1_after_its_summary(workspace: Workspace) -> None:
    result = run_reprise(
        workspace,
        "--steps",
        "get_data",
        "--",
        "-m",
        "etl.sample=sample1.parquet,no_such_sample.parquet",
        "etl.reference=null",
    )
    assert result.returncode == 1, (result.stdout + result.stderr)[-4000:]
    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    sweep, points = sweep_and_points(workspace)
    status = {p.data.tags["reprise.sweep.point"]: p.info.status for p in points}
    assert status == {
        "etl.sample=sample1.parquet etl.reference=null main.steps='get_data'": "FINISHED",
        "etl.sample=no_such_sample.parquet etl.reference=null main.steps='get_data'": "FAILED",
    }
    (failed,) = [p for p in points if p.info.status == "FAILED"]
    assert sweep.info.status == "FAILED"
    summary = client.download_artifacts(sweep.info.run_id, "sweep_summary.csv", str(workspace.path))
    assert len(Path(summary).read_text().splitlines()) == 3  # header and both points
    assert f"Pipeline run {sweep.info.run_id} (FAILED)" in result.stdout
    assert "sweep failed: 1 of 2 sweep points failed: point-1" in result.stdout  # main.py's log
    assert result.stderr.splitlines()[-1].endswith(
        f"pipeline failed: 1 of 2 sweep points failed: point-1 "
        f"(etl.sample=no_such_sample.parquet etl.reference=null main.steps='get_data', FAILED, "
        f"run {failed.info.run_id}). "
        "Fix: see each failed point's run (tag reprise.error) for its cause; the sweep summary "
        "ranks the points that finished."
    )


# make's own variables: each reaches its command as one quoted word (make expands $(x), so a
# value that should reach the shell as $(...) is written $$(...) on make's command line)
MAKE_VALUES = ['"; touch {m}; echo "', "'; touch {m}; '", "$$(touch {m}) `touch {m}` | touch {m}"]
MAKE_CALLS = {
    "STEPS": ("run", "Unknown step(s)"),
    "OVERRIDES": ("run", "bad configuration"),
    "VERSION": ("verify", ""),
    "INPUT": ("predict", ""),
}


@pytest.mark.e2e
@pytest.mark.parametrize("variable", MAKE_CALLS)
def test_make_variables_never_reach_a_shell_as_syntax(
    variable: str, workspace: Workspace, tmp_path: Path
) -> None:
    target, refusal = MAKE_CALLS[variable]
    for number, template in enumerate(MAKE_VALUES):
        marker = tmp_path / f"made-{number}"
        value = template.format(m=marker)
        if variable == "OVERRIDES":  # a key Hydra refuses, holding the hostile text as its value
            value = f"no_such_key={shlex.quote(value)}"
        result = subprocess.run(
            ["make", "--no-print-directory", "-C", str(ROOT), target, f"{variable}={value}"],
            env={**workspace.env, "OUTPUT": str(tmp_path / "out.parquet")},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-2000:]
        assert not marker.exists(), f"{variable}={value!r} ran a command: {output[-2000:]}"
        assert refusal in output, output[-2000:]
        assert "Traceback" not in output, output[-2000:]
