"""End to end: a Hydra sweep whose points run in parallel - in joblib's worker processes and on a
Ray cluster of its own - against the session's tracking server: one sweep run, each point a
finished run nested under it with its steps, the summary and best point as a sequential sweep's."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from support import ROOT, Workspace, ray_head, run_reprise, workspace_env

# one tracking server serves every test of the group, in one xdist worker (the other team tests
# have theirs, in the other worker when the two run at once)
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("team-sweeps")]

SMALL = "etl.sample=sample1.parquet"
POINT_STEPS = ("--steps", "train_model,test_model")
JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
# These sweeps test the launchers: their points register nothing, so that the model names of
# the server's registry stay the other tests' (test_model's alias under concurrency is tested in
# test_concurrent_pipelines_e2e.py).
MODEL = "main.register=false"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, team_server: Any) -> Workspace:
    """An experiment of its own on the tracking server, holding the steps before training (on
    the small sample), which every point of the sweeps below reuses."""
    path = tmp_path_factory.mktemp("sweep-parallel")
    env = workspace_env(path)
    env.update(
        MLFLOW_TRACKING_URI=team_server.uri,
        MLFLOW_EXPERIMENT_NAME=f"sweep-parallel-{path.name}-{os.getpid()}",
    )
    prepared = Workspace(path, env)
    steps = "get_data,basic_cleaning,data_check,train_val_test_split"
    result = run_reprise(prepared, "--steps", steps, SMALL)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return prepared


def sweeps_since(workspace: Workspace, started_ms: int) -> tuple[MlflowClient, list[Any]]:
    """The sweep runs of the workspace's experiment started since ``started_ms``."""
    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    experiment = client.get_experiment_by_name(workspace.env["MLFLOW_EXPERIMENT_NAME"])
    sweeps = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`reprise.sweep` = 'true' and attributes.start_time >= {started_ms}",
    )
    return client, sweeps


def children(client: MlflowClient, run: Any) -> list[Any]:
    return client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'",
        order_by=["attributes.start_time ASC"],
    )


def sweep(workspace: Workspace, *overrides: str, options: tuple[str, ...] = ()):
    """Run ``reprise run OPTIONS --steps train_model,test_model -- -m OVERRIDES``: the result,
    the client, the one sweep run it made and its points."""
    started_ms = int(time.time() * 1000) - 1000
    result = run_reprise(workspace, *options, *POINT_STEPS, "--", "-m", *overrides, MODEL)
    client, sweeps = sweeps_since(workspace, started_ms)
    assert len(sweeps) == 1, (result.stdout + result.stderr)[-4000:]
    return result, client, sweeps[0], children(client, sweeps[0])


def check_points_tracked(client: MlflowClient, sweep_run: Any, points: list[Any]) -> None:
    """Every point a FINISHED run under the sweep run, in its experiment, with its two steps
    FINISHED under it, made by a process other than the one that made the sweep run."""
    assert points and {p.info.status for p in points} == {"FINISHED"}
    for point in points:
        assert point.info.experiment_id == sweep_run.info.experiment_id
        assert point.data.tags["reprise.owner.pid"] != sweep_run.data.tags["reprise.owner.pid"]
        steps = {s.data.tags.get("reprise.step"): s.info.status for s in children(client, point)}
        assert steps == {"train_model": "FINISHED", "test_model": "FINISHED"}


def check_summary(client: MlflowClient, sweep_run: Any, points: list[Any], tmp: Path) -> None:
    """The best point by val.roc_auc named on the sweep run, and every point in its table."""
    best = max(points, key=lambda p: p.data.metrics["val.roc_auc"])
    assert sweep_run.data.tags["reprise.sweep.best_run"] == best.info.run_id
    assert (
        sweep_run.data.tags["reprise.sweep.best_overrides"] == best.data.tags["reprise.sweep.point"]
    )
    assert sweep_run.data.metrics["best.val.roc_auc"] == best.data.metrics["val.roc_auc"]
    summary = client.download_artifacts(sweep_run.info.run_id, "sweep_summary.csv", str(tmp))
    lines = Path(summary).read_text().splitlines()
    assert lines[0].startswith("run_id,overrides,status,val.roc_auc")
    assert lines[1].startswith(best.info.run_id)
    assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(p.info.run_id for p in points)


def test_a_joblib_sweep_runs_its_points_at_once_and_a_failed_point_fails_it_named(
    prepared: Workspace, tmp_path: Path
) -> None:
    # the first point's gate cannot be met; the second's is met by any model
    result, client, sweep_run, points = sweep(
        prepared, "model.max_depth=8", "evaluation.gate.min_roc_auc=0.99,0.5", *JOBLIB
    )

    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    assert "1 of 2 sweep points failed: point-0 (model.max_depth=8 " in output, output[-4000:]
    assert "evaluation.gate.min_roc_auc=0.99" in sweep_run.data.tags["reprise.error"]
    assert sweep_run.info.status == "FAILED"
    assert len(points) == 2
    failed, passed = sorted(points, key=lambda p: p.info.run_name)
    assert (failed.info.run_name, failed.info.status) == ("point-0", "FAILED")
    # at once: each point started before the other ended
    assert max(p.info.start_time for p in points) < min(p.info.end_time for p in points)
    check_points_tracked(client, sweep_run, [passed])
    assert failed.data.tags["reprise.owner.pid"] != sweep_run.data.tags["reprise.owner.pid"]
    # the summary ranks every point, the one that finished first and named best
    assert sweep_run.data.tags["reprise.sweep.best_run"] == passed.info.run_id
    assert (
        sweep_run.data.tags["reprise.sweep.best_overrides"]
        == passed.data.tags["reprise.sweep.point"]
    )
    assert sweep_run.data.metrics["best.val.roc_auc"] == passed.data.metrics["val.roc_auc"]
    summary = client.download_artifacts(sweep_run.info.run_id, "sweep_summary.csv", str(tmp_path))
    lines = Path(summary).read_text().splitlines()
    assert lines[0].startswith("run_id,overrides,status,val.roc_auc")
    assert lines[1].startswith(f"{passed.info.run_id},") and ",FINISHED," in lines[1]
    assert lines[2].startswith(f"{failed.info.run_id},") and ",FAILED," in lines[2]


def test_a_ray_sweep_tracks_every_point_on_the_server(prepared: Workspace, tmp_path: Path) -> None:
    with ray_head(num_cpus=2) as address:
        result, client, sweep_run, points = sweep(
            prepared,
            "model.max_depth=6,8",
            "hydra/launcher=ray",
            f"hydra.launcher.ray.init.address={address}",
            options=("--no-cache",),  # the steps run in Ray's workers, not from the cache
        )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "(_run_job pid=" in output  # the points' logs came from Ray's workers
    assert len(points) == 2
    check_points_tracked(client, sweep_run, points)
    assert sweep_run.info.status == "FINISHED"
    check_summary(client, sweep_run, points, tmp_path)


REFUSED = "needs a tracking server, and the MLflow store sqlite:///"


@pytest.mark.parametrize("launcher", ["joblib", "ray"])
def test_a_parallel_sweep_on_sqlite_is_refused_before_any_run(
    workspace: Workspace, launcher: str
) -> None:
    result = run_reprise(workspace, *POINT_STEPS, "--", "-m", "model.max_depth=6,8",
                         f"hydra/launcher={launcher}")  # fmt: skip

    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    assert f"sweep refused: A parallel sweep (hydra/launcher={launcher}) {REFUSED}" in output
    assert "Fix: start one with make server" in output
    assert "Traceback" not in output
    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    experiment = client.get_experiment_by_name("reprise-test")
    assert client.search_runs([experiment.experiment_id]) == []


def test_mlflow_run_of_a_parallel_sweep_on_sqlite_fails_its_run_before_any_point(
    workspace: Workspace,
) -> None:
    # `mlflow run` makes its run before the project starts: the sweep's callback refuses it
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "mlflow"), "run", "project", "--env-manager", "local",
         "--experiment-name", "reprise-test", "-P", "steps=train_model,test_model",
         "-P", "hydra_options=-m model.max_depth=6,8 hydra/launcher=joblib"],
        cwd=ROOT, env=workspace.env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert f"sweep refused: A parallel sweep (hydra/launcher=joblib) {REFUSED}" in output
    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    experiment = client.get_experiment_by_name("reprise-test")
    (run,) = client.search_runs([experiment.experiment_id])  # no point, no step
    assert run.info.status == "FAILED"
    assert REFUSED in run.data.tags["reprise.error"]
