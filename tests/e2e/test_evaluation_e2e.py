"""End to end: the model's evaluation as a user meets it - the gate, the candidate alias, the
comparison with prod, bad model settings, and a Hydra sweep - on one prepared tracking store."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from support import Workspace, run_reprise, sweep_and_points, workspace_env

# one xdist group per store: its fixtures are made once, in one worker
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("evaluation")]

SMALL = "etl.sample=sample1.parquet"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A store holding one whole pipeline run on the small sample: the default model registered
    as adult_income version 1, aliased candidate."""
    path = tmp_path_factory.mktemp("evaluation")
    prepared = Workspace(path, workspace_env(path))
    result = run_reprise(prepared, SMALL)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return prepared


def client_of(workspace: Workspace) -> MlflowClient:
    return MlflowClient(tracking_uri=workspace.tracking_uri)


def latest_run(workspace: Workspace, step: str):
    client = client_of(workspace)
    experiment = client.get_experiment_by_name("reprise-test")
    (run,) = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`reprise.step` = '{step}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return run


def test_a_passing_model_is_registered_as_candidate_with_its_threshold(prepared: Workspace) -> None:
    client = client_of(prepared)
    version = client.get_model_version_by_alias("adult_income", "candidate")
    train = latest_run(prepared, "train_model")
    assert version.run_id == train.info.run_id
    threshold = train.data.metrics["threshold"]
    assert 0.0 < threshold < 1.0
    test = latest_run(prepared, "test_model")
    metrics = test.data.metrics
    for key in (
        "test.roc_auc",
        "test.f1",
        "test.at_half.f1",
        "test.mcc",
        "test.log_loss",
        "test.brier",
        "test.precision_at_100",
        "test.lift_top_decile",
        "test.baseline.dummy_prior.roc_auc",
        "test.baseline.logistic_regression.roc_auc",
    ):
        assert key in metrics, key
    assert metrics["test.baseline.dummy_prior.roc_auc"] == pytest.approx(0.5)
    assert metrics["test.roc_auc"] > metrics["test.baseline.dummy_prior.roc_auc"]
    artifacts = {a.path for a in client.list_artifacts(train.info.run_id, "plots")}
    assert {
        "plots/val_roc_pr.png",
        "plots/val_confusion_matrix.png",
        "plots/val_calibration.png",
        "plots/val_threshold_curve.png",
        "plots/feature_importances.png",
        "plots/tree_top_levels.png",
    } <= artifacts


def test_a_failed_gate_stops_the_pipeline_and_registers_nothing(prepared: Workspace) -> None:
    before = len(client_of(prepared).search_model_versions("name = 'adult_income'"))
    result = run_reprise(
        prepared, "--steps", "train_model,test_model", SMALL, "evaluation.gate.min_roc_auc=0.99"
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "so it was not registered" in output
    assert "gate.min_roc_auc: test ROC AUC 0." in output and "minimum 0.99" in output
    assert len(client_of(prepared).search_model_versions("name = 'adult_income'")) == before
    assert latest_run(prepared, "test_model").info.status == "FAILED"


def test_a_threshold_strategy_that_cannot_be_met(prepared: Workspace) -> None:
    result = run_reprise(
        prepared,
        "--steps",
        "train_model",
        SMALL,
        "evaluation.threshold.strategy=recall_at_precision",
        "evaluation.threshold.min_precision=0.999",
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "No threshold reaches precision 0.999 on the validation table; the highest is" in output
    assert latest_run(prepared, "train_model").info.status == "FAILED"


def test_recall_at_precision_keeps_the_precision(prepared: Workspace) -> None:
    result = run_reprise(
        prepared,
        "--steps",
        "train_model",
        SMALL,
        "evaluation.threshold.strategy=recall_at_precision",
        "evaluation.threshold.min_precision=0.8",
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert latest_run(prepared, "train_model").data.metrics["val.precision"] >= 0.8


@pytest.mark.parametrize(
    ("override", "phrase"),
    [
        ("model=no_such_model", "Could not find 'model/no_such_model'"),
        ("model.no_such_hyperparameter=3", "Key 'no_such_hyperparameter' is not in struct"),
    ],
)
def test_unknown_model_or_hyperparameter(prepared: Workspace, override: str, phrase: str) -> None:
    result = run_reprise(prepared, "--steps", "train_model", override)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert phrase in output
    assert "model" in output


def test_the_gate_compares_with_the_prod_model(prepared: Workspace) -> None:
    client = client_of(prepared)
    version = client.get_model_version_by_alias("adult_income", "candidate")
    client.set_registered_model_alias("adult_income", "prod", version.version)
    # a drop of at most -0.5 means: better than prod by half a point of ROC AUC; impossible
    result = run_reprise(
        prepared,
        "--steps",
        "train_model,test_model",
        SMALL,
        "evaluation.gate.max_drop_vs_prod=-0.5",
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "gate.max_drop_vs_prod: test ROC AUC" in output and "of the prod model" in output
    client.delete_registered_model_alias("adult_income", "prod")


def test_a_sweep_names_the_best_point_by_validation(prepared: Workspace) -> None:
    result = run_reprise(
        prepared,
        "--steps",
        "train_model,test_model",
        "--",
        "-m",
        SMALL,
        "model.max_depth=3,8",
        "main.registered_model_name=adult_income_sweep",
    )
    # the depth-3 point fails the quality gate: the sweep says so and exits non-zero
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    assert "1 of 2 sweep points failed: point-0" in output, output[-4000:]
    client = client_of(prepared)
    sweep, points = sweep_and_points(prepared)
    assert len(points) == 2
    best = max(points, key=lambda p: p.data.metrics.get("val.roc_auc", 0))
    assert sweep.data.tags["reprise.sweep.best_run"] == best.info.run_id
    assert "model.max_depth=8" in sweep.data.tags["reprise.sweep.best_overrides"]
    summary = client.download_artifacts(sweep.info.run_id, "sweep_summary.csv")
    lines = Path(summary).read_text().splitlines()
    assert lines[0].startswith("run_id,overrides,status,val.roc_auc")
    assert lines[1].startswith(best.info.run_id)


def test_a_sweep_refuses_to_choose_by_test(prepared: Workspace) -> None:
    result = run_reprise(
        prepared,
        "--steps",
        "train_model",
        "--",
        "-m",
        "model.max_depth=3,8",
        "main.sweep.metric=test.roc_auc",
    )
    assert result.returncode != 0
    assert "a sweep must choose by a validation metric" in result.stdout + result.stderr
