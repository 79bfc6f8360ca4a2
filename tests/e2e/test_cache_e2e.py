"""End to end: the step cache, with the components fetched from the git server on 127.0.0.1.
Unchanged work is reused with its lineage; any change of a key part reruns what it touches."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import (
    ROOT,
    ComponentsRemote,
    Workspace,
    declared_steps,
    latest_steps,
    run_reprise,
    workspace_env,
)

# one xdist group per store: its fixtures are made once, in one worker
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("git")]

SMALL = "etl.sample=sample1.parquet"


def pins_of(remote: ComponentsRemote) -> tuple[str, ...]:
    """The overrides of every run of this module: the small sample, the remote components."""
    return (
        SMALL,
        f"components.repository={remote.url}",
        "components.version=0.1.0",
        "components.env_manager=local",
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, components_remote: ComponentsRemote):
    """A store with one whole pipeline run; ``run(...)`` reruns with the same pins."""
    path = tmp_path_factory.mktemp("cache")
    workspace = Workspace(path, workspace_env(path))
    pins = pins_of(components_remote)

    def run(*args: str):
        steps = [a for a in args if a.startswith("--steps=")]
        rest = [a for a in args if not a.startswith("--steps=")]
        flags = ["--steps", steps[0].split("=", 1)[1]] if steps else []
        result = run_reprise(workspace, *flags, *pins, *rest)
        return result, latest_steps(workspace)[1]

    first, runs = run()
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    assert not any("reprise.cached_from" in r.data.tags for r in runs.values())
    return workspace, run, runs


def log_of(result) -> str:
    """Everything a run printed (the pipeline's log goes to stdout, MLflow's to stderr)."""
    return result.stdout + result.stderr


def cached(runs: dict) -> set[str]:
    return {step for step, run in runs.items() if "reprise.cached_from" in run.data.tags}


def test_an_unchanged_rerun_is_all_cached_with_its_lineage(store) -> None:
    workspace, run, first = store
    result, runs = run()
    assert result.returncode == 0
    assert cached(runs) == set(declared_steps())
    for step, record in runs.items():
        assert record.info.status == "FINISHED"
        assert record.data.tags["reprise.cached_from"] == first[step].info.run_id
        for key, value in first[step].data.tags.items():
            if key.startswith("reprise.output."):
                assert record.data.tags[key] == value, (step, key)
    assert (
        runs["test_model"].data.metrics["test.roc_auc"]
        == (first["test_model"].data.metrics["test.roc_auc"])
    )
    assert f"step get_data: cached from run {first['get_data'].info.run_id}" in log_of(result)


def test_one_hyperparameter_reruns_train_and_test_only(store) -> None:
    _, run, _ = store
    result, runs = run("model.max_depth=7")
    assert result.returncode == 0, log_of(result)[-3000:]
    assert cached(runs) == {"get_data", "basic_cleaning", "data_check", "train_val_test_split"}
    assert "step train_model: runs (changed since run" in log_of(result)
    assert "parameters (hyperparameters)" in log_of(result)


def test_a_data_check_threshold_reruns_what_its_output_changes(store) -> None:
    """The report's text changes, so the split reruns; its tables do not, so training is reused."""
    _, run, _ = store
    result, runs = run("data_check.ks_alpha=0.01")
    assert result.returncode == 0, log_of(result)[-3000:]
    assert "data_check" not in cached(runs) and "train_val_test_split" not in cached(runs)
    assert {"get_data", "basic_cleaning", "train_model", "test_model"} <= cached(runs)


@pytest.mark.parametrize(
    ("args", "part"),
    [
        (("--steps=get_data", "components.version=0.2.0"), "code"),
        (("--steps=get_data", "etl.reference=null"), "parameters (reference)"),
        (("--steps=get_data", "components.overrides.get_data.env_manager=uv"), "environment"),
        (("--steps=get_data,basic_cleaning", "etl.sample=sample2.parquet"), "parameters"),
    ],
)
def test_each_part_of_the_key_misses(store, args: tuple[str, ...], part: str) -> None:
    _, run, _ = store
    result, runs = run(*args)
    assert result.returncode == 0, log_of(result)[-3000:]
    assert "get_data" not in cached(runs)
    assert "step get_data: runs (changed since run" in log_of(result)
    assert part in log_of(result).split("step get_data: runs")[1].splitlines()[0]
    if "basic_cleaning" in runs:  # new data: the next step's input changed
        assert "basic_cleaning" not in cached(runs)
        assert "inputs" in log_of(result).split("step basic_cleaning: runs")[1].splitlines()[0]


def test_a_failed_step_is_never_reused(store) -> None:
    _, run, _ = store
    for _ in range(2):
        result, runs = run("--steps=test_model", "evaluation.gate.min_roc_auc=0.99")
        assert result.returncode != 0
        assert runs["test_model"].info.status == "FAILED"
        assert "test_model" not in cached(runs)


def test_no_cache_runs_everything(store) -> None:
    workspace, _, _ = store
    result = run_reprise(workspace, "--steps", "get_data", "--no-cache", SMALL)
    assert result.returncode == 0
    assert "step get_data: runs (cache off)" in log_of(result)


def test_checkouts_are_kept_once_per_commit(store, components_remote: ComponentsRemote) -> None:
    workspace, _, _ = store
    checkouts = workspace.path / "cache" / "checkouts"
    names = sorted(p.name for p in checkouts.iterdir())
    assert names == sorted(components_remote.tags.values())  # 0.1.0 and 0.2.0, nothing else


SESSION = """
import json, sys
from mlflow.tracking import MlflowClient
from reprise import api

pins = json.loads(sys.argv[1])
client = MlflowClient()
out = []
for overrides in ([], ["model.max_depth=6"], ["model.max_depth=6"], ["model.no_such_key=1"]):
    try:
        run_id = api.run([*pins, *overrides])
    except api.ConfigError as err:
        out.append({"error": str(err)})
        continue
    children = client.search_runs(
        [client.get_run(run_id).info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'"
    )
    cached = sorted(c.data.tags["mlflow.runName"] for c in children
                    if "reprise.cached_from" in c.data.tags)
    out.append({"run": run_id, "status": client.get_run(run_id).info.status, "cached": cached})
print(json.dumps(out))
"""


def test_the_python_api_reruns_in_one_process(store, components_remote: ComponentsRemote):
    """reprise.api.run, called again and again in one process as a notebook would: each call a
    pipeline run of its own, the cache as the command line's, a bad override an exception."""
    workspace = store[0]
    result = subprocess.run(
        [sys.executable, "-c", SESSION, json.dumps(pins_of(components_remote))],
        cwd=ROOT,
        env=workspace.env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    unchanged, changed, again, bad = json.loads(result.stdout.strip().splitlines()[-1])
    assert len({unchanged["run"], changed["run"], again["run"]}) == 3
    assert unchanged["status"] == changed["status"] == again["status"] == "FINISHED"
    assert unchanged["cached"] == again["cached"] == sorted(declared_steps())
    upstream = {"get_data", "basic_cleaning", "data_check", "train_val_test_split"}
    assert set(changed["cached"]) == upstream
    assert "no_such_key" in bad["error"]
