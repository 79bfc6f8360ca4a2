"""Scores of a binary classifier, every figure from scikit-learn's own metric functions.

Labels are always the model's own (``predict``), never re-derived here from probabilities, so a
logged score describes exactly the classifier that is served.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn import metrics


def threshold_metrics(y_true: np.ndarray, y_pred: np.ndarray, beta: float) -> dict[str, float]:
    """Accuracy, balanced accuracy, precision, recall, F1, F-beta, MCC and the confusion matrix."""
    tn, fp, fn, tp = metrics.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, y_pred)),
        "precision": float(metrics.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(metrics.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(metrics.f1_score(y_true, y_pred, zero_division=0)),
        "fbeta": float(metrics.fbeta_score(y_true, y_pred, beta=beta, zero_division=0)),
        "mcc": float(metrics.matthews_corrcoef(y_true, y_pred)),
        "tn": float(tn),
        "fp": float(fp),
        "fn": float(fn),
        "tp": float(tp),
    }


def top_k_mask(proba: np.ndarray, k: int) -> np.ndarray:
    """1 for the k rows with the highest probability (ties broken by row order), else 0."""
    mask = np.zeros(len(proba), dtype=int)
    mask[np.argsort(-proba, kind="stable")[:k]] = 1
    return mask


def ranking_metrics(y_true: np.ndarray, proba: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """ROC AUC, average precision, log loss, Brier score, precision@k and recall@k, and the lift
    of the top decile (its precision over the precision of taking every row)."""
    scores = {
        "roc_auc": float(metrics.roc_auc_score(y_true, proba)),
        "average_precision": float(metrics.average_precision_score(y_true, proba)),
        "log_loss": float(metrics.log_loss(y_true, proba, labels=[0, 1])),
        "brier": float(metrics.brier_score_loss(y_true, proba)),
    }
    for k in ks:
        chosen = top_k_mask(proba, min(k, len(proba)))
        scores[f"precision_at_{k}"] = float(
            metrics.precision_score(y_true, chosen, zero_division=0)
        )
        scores[f"recall_at_{k}"] = float(metrics.recall_score(y_true, chosen, zero_division=0))
    decile = top_k_mask(proba, max(1, int(np.ceil(len(proba) / 10))))
    everyone = np.ones(len(proba), dtype=int)
    base = metrics.precision_score(y_true, everyone, zero_division=0)
    top = metrics.precision_score(y_true, decile, zero_division=0)
    scores["lift_top_decile"] = float(top / base) if base else 0.0
    return scores


def evaluate(
    y_true: np.ndarray,
    proba: np.ndarray,
    labels: np.ndarray,
    labels_at_half: np.ndarray,
    beta: float,
    ks: Sequence[int],
    prefix: str,
) -> dict[str, float]:
    """Every score of one split: ``<prefix>.<metric>`` at the model's decision threshold,
    ``<prefix>.at_half.<metric>`` for the labels at the usual 0.5, and the ranking scores."""
    y_true = np.asarray(y_true)
    scores = {f"{prefix}.{k}": v for k, v in threshold_metrics(y_true, labels, beta).items()}
    at_half = threshold_metrics(y_true, labels_at_half, beta)
    scores |= {f"{prefix}.at_half.{k}": v for k, v in at_half.items()}
    scores |= {f"{prefix}.{k}": v for k, v in ranking_metrics(y_true, proba, ks).items()}
    return scores
