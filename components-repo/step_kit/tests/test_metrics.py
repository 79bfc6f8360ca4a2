"""step_kit.metrics: every score is scikit-learn's own function of the labels or probabilities,
under the names train_model and test_model log."""

from __future__ import annotations

from step_kit.metrics import evaluate, ranking_metrics, threshold_metrics, top_k_mask

import numpy as np
import pytest
from sklearn import metrics

BETA = 0.5


@pytest.fixture(scope="module")
def val_scored(model, tuned_model, val_xy):
    """Validation truth, P(positive), labels at the chosen threshold and at the usual 0.5."""
    features, target = val_xy
    return (
        target.to_numpy(),
        tuned_model.predict_proba(features)[:, 1],
        tuned_model.predict(features),
        model.predict(features),
    )


def test_threshold_metrics_are_sklearns(val_scored):
    y_true, _, labels, _ = val_scored
    scores = threshold_metrics(y_true, labels, BETA)
    tn, fp, fn, tp = metrics.confusion_matrix(y_true, labels).ravel()
    expected = {
        "accuracy": metrics.accuracy_score(y_true, labels),
        "balanced_accuracy": metrics.balanced_accuracy_score(y_true, labels),
        "precision": metrics.precision_score(y_true, labels),
        "recall": metrics.recall_score(y_true, labels),
        "f1": metrics.f1_score(y_true, labels),
        "fbeta": metrics.fbeta_score(y_true, labels, beta=BETA),
        "mcc": metrics.matthews_corrcoef(y_true, labels),
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
    }
    assert sorted(scores) == sorted(expected)
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value), name
        assert isinstance(scores[name], float), name
    assert scores["tn"] + scores["fp"] + scores["fn"] + scores["tp"] == len(y_true)
    assert scores["tp"] + scores["fn"] == y_true.sum()


def test_fbeta_follows_beta(val_scored):
    y_true, _, labels, _ = val_scored
    assert threshold_metrics(y_true, labels, 1.0)["fbeta"] == pytest.approx(
        metrics.f1_score(y_true, labels)
    )
    assert threshold_metrics(y_true, labels, 2.0)["fbeta"] == pytest.approx(
        metrics.fbeta_score(y_true, labels, beta=2.0)
    )


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_threshold_metrics_without_positive_predictions():
    y_true = np.array([0, 1, 0, 1, 0])
    scores = threshold_metrics(y_true, np.zeros(5, dtype=int), BETA)
    assert scores["precision"] == scores["recall"] == scores["f1"] == scores["fbeta"] == 0.0
    assert (scores["tn"], scores["fp"], scores["fn"], scores["tp"]) == (3, 0, 2, 0)
    assert scores["accuracy"] == pytest.approx(0.6)
    # one class only in the truth: the confusion matrix still has all four cells
    one_class = threshold_metrics(np.zeros(4, dtype=int), np.array([0, 1, 0, 0]), BETA)
    assert (one_class["tn"], one_class["fp"], one_class["fn"], one_class["tp"]) == (3, 1, 0, 0)


def test_ranking_metrics_are_sklearns(val_scored):
    y_true, proba, _, _ = val_scored
    ks = [100, 500, 1000]
    scores = ranking_metrics(y_true, proba, ks)
    assert scores["roc_auc"] == pytest.approx(metrics.roc_auc_score(y_true, proba))
    assert scores["average_precision"] == pytest.approx(
        metrics.average_precision_score(y_true, proba)
    )
    assert scores["log_loss"] == pytest.approx(metrics.log_loss(y_true, proba))
    assert scores["brier"] == pytest.approx(metrics.brier_score_loss(y_true, proba))
    order = np.argsort(-proba, kind="stable")
    for k in ks:
        top = y_true[order[:k]]
        assert scores[f"precision_at_{k}"] == pytest.approx(top.mean()), k
        assert scores[f"recall_at_{k}"] == pytest.approx(top.sum() / y_true.sum()), k
    decile = int(np.ceil(len(y_true) / 10))
    assert scores["lift_top_decile"] == pytest.approx(y_true[order[:decile]].mean() / y_true.mean())
    expected = {"roc_auc", "average_precision", "log_loss", "brier", "lift_top_decile"}
    expected |= {f"{kind}_at_{k}" for kind in ("precision", "recall") for k in ks}
    assert set(scores) == expected


def test_top_k_mask_breaks_ties_by_row_order():
    proba = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.5])
    np.testing.assert_array_equal(top_k_mask(proba, 1), [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(top_k_mask(proba, 3), [0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(top_k_mask(proba, 0), [0] * 6)
    np.testing.assert_array_equal(top_k_mask(proba, 6), [1] * 6)


def test_precision_and_recall_at_k_by_hand():
    # ten rows, four positive; ranked by proba: rows 0, 1, 2, 3, 4, ... (descending)
    proba = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    y_true = np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    scores = ranking_metrics(y_true, proba, [1, 2, 4, 8, 50])
    assert scores["precision_at_1"] == 1.0 and scores["recall_at_1"] == 0.25
    assert scores["precision_at_2"] == 0.5 and scores["recall_at_2"] == 0.25
    assert scores["precision_at_4"] == 0.75 and scores["recall_at_4"] == 0.75
    assert scores["precision_at_8"] == 0.5 and scores["recall_at_8"] == 1.0
    # k beyond the table: every row taken
    assert scores["precision_at_50"] == 0.4 and scores["recall_at_50"] == 1.0
    # top decile = the one top row, a positive: precision 1 over a base rate of 0.4
    assert scores["lift_top_decile"] == pytest.approx(2.5)


def test_lift_is_one_for_random_scores_and_high_for_the_model(val_scored):
    y_true, proba, _, _ = val_scored
    rng = np.random.default_rng(0)
    random_lifts = [
        ranking_metrics(y_true, rng.uniform(size=len(y_true)), [])["lift_top_decile"]
        for _ in range(5)
    ]
    assert np.mean(random_lifts) == pytest.approx(1.0, abs=0.15)
    assert ranking_metrics(y_true, proba, [])["lift_top_decile"] > 3


def test_evaluate_names_every_score(val_scored):
    y_true, proba, labels, at_half = val_scored
    scores = evaluate(y_true, proba, labels, at_half, BETA, [100, 500], "val")
    assert scores["val.f1"] == pytest.approx(metrics.f1_score(y_true, labels))
    assert scores["val.at_half.f1"] == pytest.approx(metrics.f1_score(y_true, at_half))
    assert scores["val.f1"] != scores["val.at_half.f1"]  # the tuned threshold is not 0.5
    assert scores["val.roc_auc"] == pytest.approx(metrics.roc_auc_score(y_true, proba))
    top = y_true[np.argsort(-proba, kind="stable")[:100]]
    assert scores["val.precision_at_100"] == pytest.approx(top.mean())
    assert "val.recall_at_500" in scores and "val.lift_top_decile" in scores
    # ranking scores do not depend on the threshold: there is no at_half copy of them
    assert "val.at_half.roc_auc" not in scores
    threshold_names = set(threshold_metrics(y_true, labels, BETA))
    ranking_names = set(ranking_metrics(y_true, proba, [100, 500]))
    assert set(scores) == (
        {f"val.{name}" for name in threshold_names | ranking_names}
        | {f"val.at_half.{name}" for name in threshold_names}
    )
    prefixed = evaluate(y_true, proba, labels, labels, BETA, [100], "val.baseline.dummy_prior")
    assert all(name.startswith("val.baseline.dummy_prior.") for name in prefixed)
