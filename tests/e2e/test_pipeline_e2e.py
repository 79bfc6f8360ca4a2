"""End to end: the pipeline run as a user runs it, with the components fetched from a git server
on 127.0.0.1, tracked in a real sqlite MLflow store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from support import (
    CODE_VERSION_TAG,
    ROOT,
    ComponentsRemote,
    Workspace,
    declared_steps,
    free_port,
    mlflow_run,
    run_reprise,
)

# one xdist group per store: its fixtures are made once, in one worker
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("git")]

SMALL = "etl.sample=sample1.parquet"  # 10,000 rows: the same code paths, a faster run


def runs_of(workspace: Workspace) -> list:
    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    experiment = client.get_experiment_by_name("reprise-test")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def steps_run(workspace: Workspace) -> dict[str, object]:
    """The child runs of the store by step name."""
    return {
        r.data.tags["reprise.step"]: r for r in runs_of(workspace) if "reprise.step" in r.data.tags
    }


def assert_nothing_running(workspace: Workspace) -> None:
    running = [r.info.run_id for r in runs_of(workspace) if r.info.status == "RUNNING"]
    assert not running, f"runs left RUNNING: {running}"


def assert_failed_cleanly(result: subprocess.CompletedProcess, *phrases: str) -> None:
    """Non-zero exit, every phrase in the output, no Python traceback as the last word."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    for phrase in phrases:
        assert phrase in output, f"{phrase!r} not in output:\n{output[-3000:]}"


def test_older_tag_runs_older_code_and_records_its_sha(
    workspace: Workspace, components_remote: ComponentsRemote
) -> None:
    result = run_reprise(
        workspace,
        SMALL,
        f"components.repository={components_remote.url}",
        "components.version=0.1.0",
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    children = steps_run(workspace)
    assert sorted(children) == sorted(declared_steps())
    sha = components_remote.tags["0.1.0"]
    assert sha != components_remote.tags["0.2.0"]
    for step, run in children.items():
        tags = run.data.tags
        assert run.info.status == "FINISHED", step
        assert tags[CODE_VERSION_TAG] == "0.1.0", f"{step} ran the code of another tag"
        assert tags["mlflow.source.git.commit"] == sha, step
        assert tags["reprise.component.sha"] == sha, step
        assert tags["reprise.component.version"] == "0.1.0", step
        assert tags["reprise.component.repository"] == components_remote.url, step
    assert children["test_model"].data.metrics["test.roc_auc"] > 0.85
    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    versions = client.search_model_versions("name = 'adult_income'")
    assert len(versions) == 1
    assert "Pipeline run" in result.stdout and "mlflow ui --backend-store-uri" in result.stdout
    # one fetch per SHA, kept for the next run
    assert (workspace.path / "cache" / "checkouts" / sha / ".git").is_dir()
    assert_nothing_running(workspace)


def test_uv_environment_for_one_component(
    workspace: Workspace, components_remote: ComponentsRemote
) -> None:
    result = run_reprise(
        workspace,
        "--steps",
        "get_data",
        SMALL,
        f"components.repository={components_remote.url}",
        "components.version=0.2.0",
        "components.overrides.get_data.env_manager=uv",
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    run = steps_run(workspace)["get_data"]
    assert run.data.tags[CODE_VERSION_TAG] == "0.2.0"
    assert run.data.tags["reprise.component.env_manager"] == "uv"
    assert run.data.tags["mlflow.source.git.commit"] == components_remote.tags["0.2.0"]
    # the step ran in the uv environment made from the component's locked requirements
    assert run.data.tags["mlflow.project.env"] == "uv"
    assert "/envs/" in run.data.tags["reprise.python"], run.data.tags["reprise.python"]
    assert run.data.metrics["raw_data.rows"] == 10000


def test_one_component_from_the_remote_with_mlflow_run(
    workspace: Workspace, components_remote: ComponentsRemote
) -> None:
    """The README's `mlflow run <git URI>#get_data -v <tag>`: a component stands alone."""
    result = mlflow_run(
        workspace.env,
        workspace.path,
        f"{components_remote.url}#get_data",
        "0.1.0",
        "-P",
        "sample=sample1.parquet",
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    (run,) = client.search_runs(["0"])
    assert run.data.tags[CODE_VERSION_TAG] == "0.1.0"
    assert run.data.tags["reprise.output.raw_data.sha256"] == (
        "4af4184c7c508760ca7412c0f34ab7169a9294770ee68c4eec4ad3162ddf44df"
    )


def test_unknown_tag_names_uri_and_existing_tags(
    workspace: Workspace, components_remote: ComponentsRemote
) -> None:
    result = run_reprise(
        workspace, f"components.repository={components_remote.url}", "components.version=9.9.9"
    )
    assert_failed_cleanly(
        result,
        "Version '9.9.9' is neither a tag nor a branch of",
        components_remote.url,
        "0.1.0, 0.2.0",
    )
    assert not steps_run(workspace)
    assert_nothing_running(workspace)


def test_unreachable_repository(workspace: Workspace) -> None:
    url = f"git://127.0.0.1:{free_port()}/nothing.git"
    result = run_reprise(workspace, f"components.repository={url}", "components.version=1.0.0")
    assert_failed_cleanly(result, f"Repository {url} cannot be reached", "Fix:")
    assert_nothing_running(workspace)


def test_unknown_step_lists_valid_ones(workspace: Workspace) -> None:
    result = run_reprise(workspace, "--steps", "get_data,train")
    assert_failed_cleanly(result, "Unknown step(s) train", ", ".join(declared_steps()))
    assert_nothing_running(workspace)


def test_bad_hydra_override(workspace: Workspace) -> None:
    result = run_reprise(workspace, "etl.no_such_key=1")
    assert_failed_cleanly(result, "no_such_key")
    assert not steps_run(workspace)
    assert_nothing_running(workspace)


def test_missing_data_file(workspace: Workspace) -> None:
    missing = workspace.path / "nowhere.parquet"
    result = run_reprise(workspace, "--steps", "get_data", f"etl.sample={missing}")
    assert_failed_cleanly(result, "is neither a bundled sample nor an existing file", "Fix:")
    assert steps_run(workspace)["get_data"].info.status == "FAILED"
    assert_nothing_running(workspace)


def test_corrupt_data_file(workspace: Workspace) -> None:
    corrupt = workspace.path / "corrupt.parquet"
    good = (ROOT / "components-repo" / "get_data" / "data" / "sample1.parquet").read_bytes()
    corrupt.write_bytes(good[: len(good) // 2])
    result = run_reprise(workspace, "--steps", "get_data", f"etl.sample={corrupt}")
    assert_failed_cleanly(result, f"Data file {corrupt}", "cannot be read as parquet")
    assert_nothing_running(workspace)


def test_failed_data_check_stops_the_pipeline(workspace: Workspace) -> None:
    result = run_reprise(
        workspace, SMALL, "data_check.min_rows=20000", "data_check.positive_share=[0.5,0.9]"
    )
    assert_failed_cleanly(
        result, "2 of ", "data checks failed", "row_count:", "target:", "no later step ran"
    )
    ran = steps_run(workspace)
    assert ran["data_check"].info.status == "FAILED"
    assert "train_val_test_split" not in ran and "train_model" not in ran
    assert_nothing_running(workspace)


def test_bare_repository_file_uri_is_fetched_not_corrupted(
    workspace: Workspace, components_remote: ComponentsRemote
) -> None:
    """MLflow plants an empty .git in a bare repository given as file:// with a version;
    the orchestrator fetches it with git instead and leaves it intact."""
    uri = components_remote.bare.as_uri()
    result = run_reprise(
        workspace,
        "--steps",
        "get_data",
        SMALL,
        f"components.repository={uri}",
        "components.version=0.2.0",
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert not (components_remote.bare / ".git").exists()
    run = steps_run(workspace)["get_data"]
    assert run.data.tags["reprise.component.sha"] == components_remote.tags["0.2.0"]


def test_relative_sqlite_uri_is_refused(workspace: Workspace) -> None:
    env = {**workspace.env, "MLFLOW_TRACKING_URI": "sqlite:///relative.db"}
    result = subprocess.run(
        [sys.executable, "main.py"],
        cwd=ROOT / "project",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_failed_cleanly(
        result, "is a relative path", "MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db"
    )


def test_the_declared_pipeline_makes_what_the_fixed_one_made(workspace: Workspace) -> None:
    """The default project's declaration (project/config/pipeline/default.yaml) gives the same
    outputs, bit for bit, and the same metrics as the pipeline written in the platform did
    (tests/data/pipeline_before_declaration.json, recorded from a run before the change)."""
    import mlflow

    from reprise.release import observe

    before = json.loads((ROOT / "tests" / "data" / "pipeline_before_declaration.json").read_text())
    result = run_reprise(workspace, SMALL)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (parent,) = [r for r in runs_of(workspace) if r.data.tags.get("reprise.pipeline") == "true"]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(workspace.tracking_uri)
    try:
        now = observe(parent.info.run_id)
    finally:
        mlflow.set_tracking_uri(previous)
    assert sorted(now["components"]) == before["steps"]
    # The reports say more since then (data_check: the columns and the share missing per feature;
    # test_model: a case names the negative class); every table, the predictions and every
    # metric are the same, bit for bit.
    reports = {"data_check.data_check_report", "test_model.test_report"}
    assert now["outputs"].keys() == before["outputs"].keys()
    assert {k: v for k, v in now["outputs"].items() if k not in reports} == {
        k: v for k, v in before["outputs"].items() if k not in reports
    }
    assert now["metrics"] == before["metrics"]
    assert now["mlflow"]["model"]["name"] == before["model"]


def test_independent_branches_run_at_the_same_time_each_with_its_run_and_cache(
    workspace: Workspace,
) -> None:
    """pipeline=two_models adds a forest branch (train_forest, test_forest: the train_model and
    test_model components again); with main.jobs=2 the two branches overlap in time."""
    result = run_reprise(workspace, SMALL, "pipeline=two_models", "main.jobs=2")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    children = steps_run(workspace)
    assert sorted(children) == sorted([*declared_steps(), "train_forest", "test_forest"])
    assert all(run.info.status == "FINISHED" for run in children.values())

    def overlap(a: str, b: str) -> bool:
        first, second = children[a].info, children[b].info
        return first.start_time < second.end_time and second.start_time < first.end_time

    assert overlap("train_model", "train_forest") and overlap("test_model", "test_forest")
    split = children["train_val_test_split"].data.tags
    for trainer in ("train_model", "train_forest"):
        params = children[trainer].data.params
        assert params["train_artifact"] == split["reprise.output.train_data"], trainer
        assert children[trainer].data.tags["reprise.cache.key"], trainer
    assert children["train_forest"].data.params["model_name"] == "random_forest"
    forest_model = children["train_forest"].data.tags["reprise.output.model"]
    assert children["test_forest"].data.params["model"] == forest_model
    # only the declared model is registered
    assert "reprise.output.registered_model" in children["test_model"].data.tags
    assert "reprise.output.registered_model" not in children["test_forest"].data.tags

    again = run_reprise(workspace, SMALL, "pipeline=two_models", "main.jobs=2")
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    newest = {
        r.data.tags["reprise.step"]: r
        for r in runs_of(workspace)[len(children) + 1 :]
        if "reprise.step" in r.data.tags
    }
    assert sorted(newest) == sorted(children)
    assert all("reprise.cached_from" in r.data.tags for r in newest.values())
