"""Evaluation plots of a binary classifier, every curve and number drawn by scikit-learn.

Each function returns a matplotlib Figure and closes nothing: the caller logs it and closes it.
The backend is Agg, so the plots render without a screen.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.calibration import CalibrationDisplay  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
)
from sklearn.tree import DecisionTreeClassifier, plot_tree  # noqa: E402


def _check_models(curves: dict[str, np.ndarray]) -> None:
    if not curves:
        raise ValueError("at least one named model is needed to draw a curve")


def roc_pr_curves(y_true: np.ndarray, scores: dict[str, np.ndarray], title: str) -> Figure:
    """ROC and precision-recall curves of each named model's scores, with their chance levels."""
    _check_models(scores)
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(13, 5.5))
    last = len(scores) - 1
    for i, (name, score) in enumerate(scores.items()):
        # The chance level is the same for every model: drawn once, after the models' lines.
        RocCurveDisplay.from_predictions(
            y_true, score, name=name, ax=roc_ax, plot_chance_level=i == last
        )
        PrecisionRecallDisplay.from_predictions(
            y_true, score, name=name, ax=pr_ax, plot_chance_level=i == last
        )
    roc_ax.set_title("ROC")
    roc_ax.legend(loc="lower right")
    pr_ax.set_title("Precision-recall")
    pr_ax.legend(loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix_plot(
    y_true: np.ndarray, y_pred: np.ndarray, display_labels: list[str], title: str
) -> Figure:
    """Confusion matrix of predicted labels, as counts."""
    fig, ax = plt.subplots(figsize=(6, 5))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, display_labels=display_labels, values_format="d", ax=ax
    )
    ax.set_title(title)
    fig.tight_layout()
    return fig


def calibration_plot(y_true: np.ndarray, probas: dict[str, np.ndarray], n_bins: int = 10) -> Figure:
    """Reliability curve of each named model's positive-class probabilities, quantile bins."""
    _check_models(probas)
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, (name, proba) in enumerate(probas.items()):
        CalibrationDisplay.from_predictions(
            y_true, proba, n_bins=n_bins, strategy="quantile", name=name, ax=ax, ref_line=i == 0
        )
    ax.set_title(f"Calibration ({n_bins} quantile bins)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def threshold_curve(
    thresholds: np.ndarray, scores: np.ndarray, chosen: float, metric: str
) -> Figure:
    """A metric against the decision threshold, marking the chosen threshold and the default 0.5."""
    thresholds = np.asarray(thresholds, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if thresholds.shape != scores.shape or thresholds.size == 0:
        raise ValueError("thresholds and scores must be non-empty arrays of the same shape")
    at_chosen = scores[np.argmin(np.abs(thresholds - chosen))]
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot(thresholds, scores, label=metric)
    ax.axvline(
        chosen,
        color="tab:red",
        linestyle="--",
        label=f"chosen {chosen:.3f} ({metric} {at_chosen:.3f})",
    )
    ax.axvline(0.5, color="grey", linestyle=":", label="default 0.5")
    ax.set_xlabel("Decision threshold")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by decision threshold")
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def feature_importances_plot(
    names: list[str], importances: np.ndarray, title: str, top: int = 20
) -> Figure:
    """Horizontal bars of the ``top`` largest importances, the largest at the top."""
    importances = np.asarray(importances, dtype=float)
    if len(names) != importances.size:
        raise ValueError(f"{len(names)} names for {importances.size} importances")
    order = np.argsort(-importances, kind="stable")[:top]
    n = order.size
    positions = np.arange(n)[::-1]  # the largest importance gets the highest position
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * n + 1)))
    ax.barh(positions, importances[order])
    ax.set_yticks(positions, [names[i] for i in order])
    ax.set_xlabel("Importance")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def tree_top_levels(
    tree: DecisionTreeClassifier,
    feature_names: list[str],
    class_names: list[str],
    max_depth: int = 3,
) -> Figure:
    """A fitted decision tree down to depth ``max_depth`` (the root is depth 0), filled by class."""
    fig, ax = plt.subplots(figsize=(20, 10))
    plot_tree(
        tree,
        max_depth=max_depth,
        feature_names=feature_names,
        class_names=class_names,
        filled=True,
        rounded=True,
        ax=ax,
        fontsize=8,
    )
    ax.set_title(f"Decision tree down to depth {max_depth}")
    return fig
