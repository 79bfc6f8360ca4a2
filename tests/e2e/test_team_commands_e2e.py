"""Every command against the team's tracking server (PostgreSQL, proxied artifacts): one release
of a clone of this work tree, a run whose steps all come from the cache, promote, serve following
prod through the server's API, and predict of a file. (verify compares a rerun with the
release's manifest the same way on any store: tests/e2e/test_release_e2e.py runs it.)"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from test_release_e2e import Project, output_of, pin
from test_serving_e2e import as_records, start_server, stop_server

from support import (
    ComponentsRemote,
    GitServer,
    TeamServer,
    Workspace,
    copy_work_tree,
    git,
    workspace_env,
    workspace_process,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("team")]

MODEL = "adult_income"
TARGET = "income"
EXPERIMENT = "team-commands"
FOLLOW_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def released(
    git_server: GitServer,
    components_remote: ComponentsRemote,
    team_server: TeamServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Project:
    """This work tree as a clone pushed to the git server, its components pinned to 0.2.0 of the
    served repository, and release 0.2.0 of it cut against the tracking server."""
    base = tmp_path_factory.mktemp("team-release")
    work = base / "work"
    copy_work_tree(work)
    env = workspace_env(base)
    env.update(MLFLOW_TRACKING_URI=team_server.uri, MLFLOW_EXPERIMENT_NAME=EXPERIMENT)
    project = Project(work, f"{git_server.url}/reprise-team.git", Workspace(base, env))
    project.set_config("config.yaml", pin("0.2.0", components_remote.url))
    project.set_config("etl/default.yaml", lambda etl: etl.update(sample="sample1.parquet"))
    changelog = work / "CHANGELOG.md"
    changelog.write_text(
        changelog.read_text().replace(
            "## [Unreleased]\n", "## [Unreleased]\n\n### Changed\n- Team mode.\n", 1
        )
    )
    git("config", "user.email", "release@reprise.invalid", cwd=work)
    git("config", "user.name", "Reprise team tests", cwd=work)
    project.commit("Pin the components to 0.2.0 of the served repository")
    git("init", "-q", "--bare", str(git_server.base / "reprise-team.git"))
    git("remote", "add", "origin", project.url, cwd=work)
    release = project.reprise("release", "--part", "minor")
    assert release.returncode == 0, output_of(release)[-4000:]
    git("push", "-q", "--follow-tags", "origin", "HEAD:refs/heads/main", cwd=work)
    return project


def _manifest(project: Project) -> dict:
    return yaml.safe_load((project.work / "releases" / "0.2.0.yaml").read_text())


def _client(project: Project) -> MlflowClient:
    return MlflowClient(tracking_uri=project.workspace.tracking_uri)


def test_a_release_then_a_run_whose_steps_all_come_from_the_cache(
    released: Project, team_server: TeamServer
) -> None:
    record = _manifest(released)
    assert git("cat-file", "-t", "0.2.0", cwd=released.work) == "tag"
    version = str(record["mlflow"]["model"]["version"])
    registered = _client(released).get_model_version(MODEL, version)
    release_run, _ = latest_steps_of(released, "tags.`reprise.pipeline` = 'true'")
    assert _client(released).get_run(registered.run_id).data.tags["mlflow.parentRunId"] == (
        release_run.info.run_id
    )

    again = released.reprise("run", "--overrides", "main.release=off")
    assert again.returncode == 0, output_of(again)[-4000:]
    parent, steps = latest_steps_of(released, "tags.`reprise.pipeline` = 'true'")
    assert parent.info.run_id != release_run.info.run_id
    assert set(steps) == set(record["components"]), steps.keys()
    not_cached = [name for name, run in steps.items() if "reprise.cached_from" not in run.data.tags]
    assert not not_cached, f"ran again: {not_cached}"
    # the hint names the server's URL, not an `mlflow ui` on it
    assert f"Look at it: open {team_server.uri} in a browser" in again.stdout
    assert "mlflow ui" not in again.stdout


def latest_steps_of(project: Project, parent_filter: str):
    """latest_steps in the project's experiment (support.latest_steps reads reprise-test's)."""
    client = _client(project)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id],
        filter_string=parent_filter,
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    return parent, {
        c.data.tags["reprise.step"]: c for c in children if "reprise.step" in c.data.tags
    }


def test_promote_serve_and_predict_follow_prod_through_the_server(
    released: Project, tmp_path: Path
) -> None:
    from reprise import tracking
    from reprise.serving import registry

    promoted = released.reprise("promote", "0.2.0")
    assert promoted.returncode == 0, output_of(promoted)[-4000:]
    client = _client(released)
    version = str(_manifest(released)["mlflow"]["model"]["version"])
    assert str(client.get_model_version_by_alias(MODEL, "prod").version) == version
    # the sqlite shortcut is never taken for a server: serving asks the server's API
    with workspace_process(released.workspace.env):
        assert tracking.store_uri() == released.workspace.tracking_uri
        assert registry.local_version(MODEL, alias="prod") is None
        assert registry.local_version(MODEL, version=version) is None

    # the test split, downloaded from the server (proxied artifacts) as any client would
    trained = client.get_run(client.get_model_version(MODEL, version).run_id)
    release_run = trained.data.tags["mlflow.parentRunId"]
    _, steps = latest_steps_of(released, f"attributes.run_id = '{release_run}'")
    split = steps["train_val_test_split"].info.run_id
    table = Path(client.download_artifacts(split, "test.parquet", str(tmp_path)))
    rows = pd.read_parquet(table).drop(columns=[TARGET]).head(200)
    rows.to_parquet(tmp_path / "rows.parquet")

    predicted = released.reprise(
        "predict", "--input", str(tmp_path / "rows.parquet"), "--output", str(tmp_path / "out.csv")
    )
    assert predicted.returncode == 0, output_of(predicted)[-4000:]
    batch = pd.read_csv(tmp_path / "out.csv")
    assert len(batch) == len(rows)

    server = start_server(released.workspace.env, tmp_path / "serve.log", "--poll-seconds", "0.5")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/version").json()["model_version"] == version
            answer = http.post("/invocations", json={"dataframe_records": as_records(rows)})
            assert answer.status_code == 200, answer.text
            # online and batch score with the same prod model
            assert answer.json()["predictions"] == batch["label"].tolist()

            moved = client.copy_model_version(f"models:/{MODEL}/{version}", MODEL).version
            client.set_registered_model_alias(MODEL, "prod", moved)
            deadline = time.monotonic() + FOLLOW_TIMEOUT_S
            while http.get("/version").json()["model_version"] != str(moved):
                assert time.monotonic() < deadline, "serve never followed prod to the new version"
                time.sleep(0.2)
            again = http.post("/invocations", json={"dataframe_records": as_records(rows)})
            assert again.json()["predictions"] == batch["label"].tolist()
    finally:
        client.set_registered_model_alias(MODEL, "prod", version)
        # one worker: uvicorn ends by raising the SIGTERM again once it has shut down
        assert stop_server(server) in (0, -signal.SIGTERM), server.log_text()[-3000:]
    assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
