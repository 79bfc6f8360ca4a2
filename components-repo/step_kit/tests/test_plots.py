"""The evaluation plots on models fitted to the bundled Adult sample, checked against sklearn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from step_kit.plots import (
    calibration_plot,
    confusion_matrix_plot,
    feature_importances_plot,
    roc_pr_curves,
    threshold_curve,
    tree_top_levels,
)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, confusion_matrix, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

SAMPLE = Path(__file__).resolve().parents[2] / "get_data" / "data" / "sample1.parquet"
FEATURES = ["age", "educational-num", "capital-gain", "capital-loss", "hours-per-week"]
LABELS = ["<=50K", ">50K"]


@dataclass(frozen=True)
class Fitted:
    tree: DecisionTreeClassifier
    y_test: np.ndarray
    probas: dict[str, np.ndarray]  # positive-class probabilities on the test half, per model


@pytest.fixture(scope="module")
def fitted() -> Fitted:
    """A tree, a logistic regression and a prior baseline fitted on one half of sample1."""
    frame = pd.read_parquet(SAMPLE, columns=[*FEATURES, "income"])
    x = frame[FEATURES].to_numpy(dtype=float)
    y = (frame["income"] == ">50K").to_numpy()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.5, random_state=0, stratify=y
    )
    models = {
        "decision_tree": DecisionTreeClassifier(max_depth=4, random_state=0),
        "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression()),
        "dummy_prior": DummyClassifier(strategy="prior"),
    }
    probas = {
        name: model.fit(x_train, y_train).predict_proba(x_test)[:, 1]
        for name, model in models.items()
    }
    return Fitted(models["decision_tree"], y_test, probas)


@pytest.fixture
def saved(tmp_path: Path):
    """Checks a figure and saves it to a non-empty PNG; closes it when the test ends."""
    figures: list[Figure] = []

    def save(fig: Figure) -> Figure:
        figures.append(fig)
        assert isinstance(fig, Figure)
        path = tmp_path / f"figure_{len(figures)}.png"
        fig.savefig(path)
        assert path.stat().st_size > 0
        return fig

    yield save
    for fig in figures:
        plt.close(fig)


def legend_texts(ax: plt.Axes) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def test_roc_pr_curves_legends_show_sklearn_auc_and_ap(fitted: Fitted, saved) -> None:
    fig = saved(roc_pr_curves(fitted.y_test, fitted.probas, "Adult, test half"))
    assert len(fig.axes) == 2
    roc_ax, pr_ax = fig.axes
    roc_legend, pr_legend = legend_texts(roc_ax), legend_texts(pr_ax)
    for name, proba in fitted.probas.items():
        assert f"{name} (AUC = {roc_auc_score(fitted.y_test, proba):.2f})" in roc_legend
        assert f"{name} (AP = {average_precision_score(fitted.y_test, proba):.2f})" in pr_legend
    # One line per model plus one chance level, on each axes.
    assert len(roc_ax.get_lines()) == len(pr_ax.get_lines()) == len(fitted.probas) + 1
    assert sum(text.startswith("Chance level") for text in roc_legend) == 1
    assert sum(text.startswith("Chance level") for text in pr_legend) == 1
    chance_roc = roc_ax.get_lines()[-1]
    np.testing.assert_allclose(chance_roc.get_xdata(), chance_roc.get_ydata())
    chance_pr = pr_ax.get_lines()[-1]
    np.testing.assert_allclose(chance_pr.get_ydata(), fitted.y_test.mean())


def test_confusion_matrix_shows_sklearn_counts(fitted: Fitted, saved) -> None:
    y_pred = fitted.probas["decision_tree"] > 0.5
    fig = saved(confusion_matrix_plot(fitted.y_test, y_pred, LABELS, "Decision tree, test half"))
    assert len(fig.axes) == 2  # the matrix and its colorbar
    ax = fig.axes[0]
    expected = confusion_matrix(fitted.y_test, y_pred)
    shown = np.full(expected.shape, -1)
    for text in ax.texts:
        column, row = text.get_position()
        shown[int(row), int(column)] = int(text.get_text())  # values_format="d": plain integers
    np.testing.assert_array_equal(shown, expected)
    assert [label.get_text() for label in ax.get_xticklabels()] == LABELS
    assert ax.get_title() == "Decision tree, test half"


def test_calibration_plot_draws_sklearn_quantile_bins(fitted: Fitted, saved) -> None:
    probas = {name: fitted.probas[name] for name in ("decision_tree", "logistic_regression")}
    fig = saved(calibration_plot(fitted.y_test, probas, n_bins=8))
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"Perfectly calibrated", *probas}
    for name, proba in probas.items():
        prob_true, prob_pred = calibration_curve(
            fitted.y_test, proba, n_bins=8, strategy="quantile"
        )
        np.testing.assert_allclose(lines[name].get_xdata(), prob_pred)
        np.testing.assert_allclose(lines[name].get_ydata(), prob_true)


def test_threshold_curve_marks_chosen_threshold_with_given_score(fitted: Fitted, saved) -> None:
    proba = fitted.probas["logistic_regression"]
    thresholds = np.linspace(0.05, 0.95, 19)
    scores = np.array([f1_score(fitted.y_test, proba > t) for t in thresholds])
    best = int(np.argmax(scores))
    chosen = float(thresholds[best]) + 0.01  # off the grid: the label takes the nearest score
    fig = saved(threshold_curve(thresholds, scores, chosen, "f1"))
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    curve, chosen_line, default_line = ax.get_lines()
    np.testing.assert_allclose(curve.get_xdata(), thresholds)
    np.testing.assert_allclose(curve.get_ydata(), scores)
    assert list(chosen_line.get_xdata()) == [chosen, chosen]
    assert f"{scores[best]:.3f}" in chosen_line.get_label()
    assert f"{chosen:.3f}" in chosen_line.get_label()
    assert list(default_line.get_xdata()) == [0.5, 0.5]
    assert default_line.get_linestyle() == ":"


@pytest.mark.parametrize("top", [3, 20])
def test_feature_importances_top_bars_largest_first(fitted: Fitted, saved, top: int) -> None:
    importances = fitted.tree.feature_importances_
    fig = saved(feature_importances_plot(FEATURES, importances, "Decision tree", top=top))
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    bars = sorted(ax.patches, key=lambda bar: bar.get_y(), reverse=True)  # top of the plot first
    n = min(top, len(FEATURES))
    assert len(bars) == n
    widths = [bar.get_width() for bar in bars]
    assert widths == sorted(widths, reverse=True)
    np.testing.assert_allclose(widths, np.sort(importances)[::-1][:n])
    labels = {round(tick.get_position()[1]): tick.get_text() for tick in ax.get_yticklabels()}
    shown = [labels[round(bar.get_y() + bar.get_height() / 2)] for bar in bars]
    assert shown == [FEATURES[i] for i in np.argsort(-importances, kind="stable")[:n]]


def node_depths(tree: DecisionTreeClassifier) -> np.ndarray:
    """Depth of every node of a fitted tree, the root at 0."""
    left, right = tree.tree_.children_left, tree.tree_.children_right
    depths = np.zeros(tree.tree_.node_count, dtype=int)
    for node in range(tree.tree_.node_count):  # children come after their parent
        for child in (left[node], right[node]):
            if child != -1:
                depths[child] = depths[node] + 1
    return depths


@pytest.mark.parametrize("max_depth", [1, 3])
def test_tree_top_levels_draws_no_deeper_node(fitted: Fitted, saved, max_depth: int) -> None:
    tree = fitted.tree
    fig = saved(tree_top_levels(tree, FEATURES, LABELS, max_depth=max_depth))
    assert len(fig.axes) == 1
    texts = [text.get_text().strip() for text in fig.axes[0].texts]
    nodes = [text for text in texts if "samples = " in text]  # not the root's True / False
    depths = node_depths(tree)
    shallow = depths <= max_depth
    assert len(nodes) == shallow.sum()
    samples = sorted(int(text.split("samples = ")[1].split("\n")[0]) for text in nodes)
    assert samples == sorted(tree.tree_.n_node_samples[shallow])
    # Each split node at the last drawn depth gets one "(...)" per child, and nothing below.
    cut = (depths == max_depth) & (tree.tree_.children_left != -1)
    assert texts.count("(...)") == 2 * cut.sum()
