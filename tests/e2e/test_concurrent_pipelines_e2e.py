"""Many pipelines at once: four clones of the work tree run the pipeline at the same moment
against one tracking server (one experiment, as a team shares one), against one shared sqlite
file, and each on its own default store; none is lost, none reuses a step that is not FINISHED."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from reprise import cache
from reprise.pipeline import STEP_TAG
from support import ROOT, Workspace, copy_work_tree, declared_steps, run_reprise, workspace_env

PIPELINES = 4
TIMEOUT_S = 900
# a real pipeline, on the small bundled sample; each clone trains its own model (leaf size), so
# the steps before train_model are identical in all four and race for the step cache
SMALL = "etl.sample=sample1.parquet"
# imports first, then waits for a file: the processes open the store at the same moment
OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
import mlflow.tracking
from reprise import tracking
Path(sys.argv[1] + ".ready").touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.01)
print(tracking.use_defaults())
"""


def _clones(root: Path, count: int = PIPELINES) -> list[Path]:
    clones = [root / f"clone{i}" for i in range(count)]
    for clone in clones:
        copy_work_tree(clone)
    return clones


def _env(clone: Path, tracking_uri: str | None, experiment: str) -> dict[str, str]:
    """A clone's environment: its own state and checkout cache; ``tracking_uri`` None: the plain
    default store (in its state folder)."""
    env = workspace_env(clone.parent / f"{clone.name}-state")
    env["MLFLOW_EXPERIMENT_NAME"] = experiment
    if tracking_uri is None:
        env.pop("MLFLOW_TRACKING_URI")
    else:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def _run_at_once(jobs: list[tuple[Path, dict[str, str], list[str]]]) -> list[tuple[int, str]]:
    """`python -m reprise run ARGS` in each clone (its own reprise/ and project/), all started
    together; (exit code, output) of each."""
    logs = [cwd.parent / f"{cwd.name}.log" for cwd, _, _ in jobs]
    processes = []
    for (cwd, env, args), log_file in zip(jobs, logs, strict=True):
        with open(log_file, "w") as out:
            processes.append(
                subprocess.Popen(
                    [str(ROOT / ".venv" / "bin" / "python"), "-m", "reprise", "run", *args],
                    cwd=cwd,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [(code, log.read_text()) for code, log in zip(codes, logs, strict=True)]


def _assert_pipelines(
    client: MlflowClient, experiment: str, count: int, steps: list[str]
) -> dict[str, dict[str, Any]]:
    """``count`` pipeline runs FINISHED, none lost; each of ``steps`` once per pipeline, FINISHED,
    no run left RUNNING; every reuse names a FINISHED run of the same key that ended before it.
    The step runs of each pipeline run."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], max_results=1000)
    pipelines = [r for r in runs if r.data.tags.get("reprise.pipeline") == "true"]
    assert len(pipelines) == count, [r.info.status for r in pipelines]
    assert {r.info.status for r in pipelines} == {"FINISHED"}
    assert [r for r in runs if r.info.status == "RUNNING"] == []
    found = {}
    for pipeline in pipelines:
        pipeline_id = pipeline.info.run_id
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == pipeline_id]
        assert sorted(r.data.tags[STEP_TAG] for r in children) == sorted(steps)
        assert {r.info.status for r in children} == {"FINISHED"}, pipeline_id
        for child in children:
            if source_id := child.data.tags.get(cache.CACHED_FROM_TAG):
                source = client.get_run(source_id)
                assert source.info.status == "FINISHED", (child.info.run_id, source_id)
                assert source.data.tags[cache.KEY_TAG] == child.data.tags[cache.KEY_TAG]
                assert source.info.end_time <= child.info.start_time
        found[pipeline_id] = {r.data.tags[STEP_TAG]: r for r in children}
    return found


def _assert_one_version_each(
    client: MlflowClient, pipelines: dict[str, dict[str, Any]], model: str
) -> None:
    """One model version per pipeline, made by that pipeline's own train_model run."""
    versions = []
    for steps in pipelines.values():
        assert cache.CACHED_FROM_TAG not in steps["train_model"].data.tags
        registered = steps["test_model"].data.tags["reprise.output.registered_model"]
        version = client.get_model_version(model, registered.rsplit("/", 1)[1])
        assert version.run_id == steps["train_model"].info.run_id
        versions.append(version.version)
    assert len(set(versions)) == len(pipelines), versions
    assert len(client.search_model_versions(f"name='{model}'")) == len(pipelines)


@pytest.mark.e2e
@pytest.mark.xdist_group("team")
def test_four_pipelines_at_once_on_the_tracking_server(tmp_path: Path, team_server) -> None:
    experiment = f"four-at-once-{os.getpid()}-{tmp_path.name}"
    model = f"four_at_once_{os.getpid()}"
    clones = _clones(tmp_path)
    results = _run_at_once(
        [
            (
                clone,
                _env(clone, team_server.uri, experiment),
                [SMALL, f"model.min_samples_leaf={40 + i}", f"main.registered_model_name={model}"],
            )
            for i, clone in enumerate(clones)
        ]
    )
    for code, output in results:
        assert code == 0, output[-3000:]
    client = MlflowClient(team_server.uri)
    pipelines = _assert_pipelines(client, experiment, PIPELINES, declared_steps())
    _assert_one_version_each(client, pipelines, model)


# the first two steps: a real pipeline (store, runs, artifacts, cache) in a quarter of the time
FIRST_STEPS = ["--steps", "get_data,basic_cleaning", SMALL]


@pytest.mark.e2e
def test_four_pipelines_at_once_on_one_new_sqlite_file(tmp_path: Path) -> None:
    """The first open of a new sqlite file makes its tables: four at once used to break each
    other's migration (a traceback); now they take turns and all finish."""
    database = tmp_path / "shared" / "s.db"
    uri = f"sqlite:///{database}"
    clones = _clones(tmp_path)
    results = _run_at_once([(clone, _env(clone, uri, "shared"), FIRST_STEPS) for clone in clones])
    for code, output in results:
        assert code == 0, output[-3000:]
        assert "Traceback" not in output
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    _assert_pipelines(MlflowClient(uri), "shared", PIPELINES, ["get_data", "basic_cleaning"])


def _open_at_once(tmp_path: Path, env: dict[str, str], count: int = PIPELINES) -> list[str]:
    """Four processes open the store of ``env`` (and its experiment) at the same moment; the
    experiment id each one got."""
    tmp_path.mkdir()
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT_ONCE, str(tmp_path / str(i)), str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"{i}.ready").exists() for i in range(count)):
        assert time.monotonic() < deadline, "the processes did not start"
        for process in processes:
            assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    go.touch()
    answers = [p.communicate(timeout=120) for p in processes]
    for process, (_, err) in zip(processes, answers, strict=True):
        assert process.returncode == 0, err[-3000:]
    return [out.strip().splitlines()[-1] for out, _ in answers]


@pytest.mark.e2e
def test_a_new_sqlite_store_opened_by_four_at_once(tmp_path: Path) -> None:
    """A new file (tables made at the first open) and a new experiment in an existing file."""
    env = workspace_env(tmp_path)
    assert len(set(_open_at_once(tmp_path / "new-file", env))) == 1
    env["MLFLOW_EXPERIMENT_NAME"] = "second"
    assert len(set(_open_at_once(tmp_path / "new-experiment", env))) == 1
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.mark.e2e
@pytest.mark.xdist_group("team")
def test_a_new_experiment_made_by_four_at_once_on_the_server(tmp_path: Path, team_server) -> None:
    env = workspace_env(tmp_path)
    env.update(MLFLOW_TRACKING_URI=team_server.uri, MLFLOW_EXPERIMENT_NAME=f"new-{os.getpid()}")
    assert len(set(_open_at_once(tmp_path / "at-once", env))) == 1


@pytest.mark.e2e
@pytest.mark.xdist_group("team")
def test_only_a_finished_run_is_reused(team_workspace: Workspace) -> None:
    """Runs carrying a step's exact cache key but RUNNING, FAILED or KILLED are never reused:
    the next pipeline runs the step."""
    client = MlflowClient(team_workspace.tracking_uri)
    first = run_reprise(team_workspace, "--steps", "get_data", SMALL)
    assert first.returncode == 0, first.stderr[-3000:]
    experiment_id = client.get_experiment_by_name(
        team_workspace.env["MLFLOW_EXPERIMENT_NAME"]
    ).experiment_id
    (done,) = client.search_runs([experiment_id], f"tags.`{STEP_TAG}` = 'get_data'")
    key = cache.StepKey(done.data.tags[cache.KEY_TAG], {})
    assert cache.find(client, experiment_id, key).info.run_id == done.info.run_id
    client.set_tag(done.info.run_id, cache.KEY_TAG, "retired")  # the one finished run goes
    planted = []
    for status in ("RUNNING", "FAILED", "KILLED"):
        tags = {k: v for k, v in done.data.tags.items() if k.startswith("reprise.")}
        run = client.create_run(experiment_id, tags={**tags, cache.KEY_TAG: key.key})
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
        planted.append(run.info.run_id)
        assert cache.find(client, experiment_id, key) is None, status
    again = run_reprise(team_workspace, "--steps", "get_data", SMALL)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "step get_data: runs (" in again.stderr
    (rerun,) = client.search_runs(
        [experiment_id],
        f"tags.`{STEP_TAG}` = 'get_data' and tags.`{cache.KEY_TAG}` = '{key.key}' "
        "and attributes.status = 'FINISHED'",
    )
    assert rerun.info.run_id not in planted
    assert cache.CACHED_FROM_TAG not in rerun.data.tags
    client.set_terminated(planted[0], "KILLED")


@pytest.mark.e2e
def test_a_sqlite_store_kept_locked_is_said_in_one_line(workspace: Workspace) -> None:
    """Past MLflow's wait for the lock, the pipeline stops with the cause and the fix."""
    MlflowClient(workspace.tracking_uri).search_experiments()  # the store's tables exist
    holder = sqlite3.connect(workspace.path / "mlflow.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        result = run_reprise(workspace, "--steps", "get_data", SMALL)
    finally:
        holder.close()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if " ERROR " in x]
    assert "is busy with other pipelines (database is locked" in line
    assert "Fix: to run many pipelines at once use a tracking server: make server" in line


@pytest.mark.e2e
@pytest.mark.xdist_group("team")
def test_pipelines_setting_the_candidate_alias_at_once_all_succeed(team_server) -> None:
    """test_model moves the candidate alias as the server lets it: by deleting and inserting its
    row. Twelve pipelines moving it at the same moment each succeed, and the alias ends on one
    of their versions."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from registration import set_alias

    client = MlflowClient(tracking_uri=team_server.uri)
    name = f"alias-race-{os.getpid()}-{time.time_ns()}"
    client.create_registered_model(name)
    versions = [
        client.create_model_version(name, f"s3://nowhere/{name}/{i}").version for i in range(12)
    ]
    start = Barrier(len(versions))

    def move(version: str) -> None:
        start.wait()
        set_alias(MlflowClient(tracking_uri=team_server.uri), name, "candidate", version)

    with ThreadPoolExecutor(len(versions)) as pool:
        list(pool.map(move, versions))  # raises what a pipeline would have failed with
    assert client.get_model_version_by_alias(name, "candidate").version in versions
