"""Scores of a binary classifier, all from scikit-learn's own metric functions."""

from __future__ import annotations

import numpy as np
from sklearn import metrics


def binary_scores(
    y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """ROC AUC, average precision, F1 and accuracy of positive-class probabilities.

    A row is predicted positive when its probability exceeds the threshold: at 0.5 these are the
    labels of the model's own predict(), which gives a tie (a leaf at exactly 0.5) the negative
    class.
    """
    predicted = (proba > threshold).astype(int)
    return {
        "roc_auc": float(metrics.roc_auc_score(y_true, proba)),
        "average_precision": float(metrics.average_precision_score(y_true, proba)),
        "f1": float(metrics.f1_score(y_true, predicted)),
        "accuracy": float(metrics.accuracy_score(y_true, predicted)),
    }
