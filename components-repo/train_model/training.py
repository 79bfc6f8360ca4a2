"""Pure model logic: the one builder of the inference pipeline, its fit, the decision threshold
chosen on validation, and what the model learned."""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from step_kit import Schema, StepError
from step_kit.scoring import fixed_fit_threads, fixed_order

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    fbeta_score,
    make_scorer,
    precision_recall_curve,
    precision_score,
    recall_score,
)
from sklearn.model_selection import FixedThresholdClassifier, TunedThresholdClassifierCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

# The estimators a config group `model` can name; the baselines beside every run.
ESTIMATORS: dict[str, type] = {
    "decision_tree": DecisionTreeClassifier,
    "random_forest": RandomForestClassifier,
    "hist_gradient_boosting": HistGradientBoostingClassifier,
    "logistic_regression": LogisticRegression,
    "dummy_prior": DummyClassifier,
}
BASELINES: dict[str, dict[str, Any]] = {
    "dummy_prior": {"strategy": "prior"},
    "logistic_regression": {"max_iter": 2000},
}
# Linear models need numbers on one scale; trees split on raw values and need no scaling.
SCALED = {"logistic_regression"}
THRESHOLD_STRATEGIES = ("max_f1", "max_fbeta", "recall_at_precision")
IMPUTATIONS = ("median", "mean", "most_frequent", "constant")
# At most this many candidate thresholds are scored on validation (quantiles of the scores).
MAX_THRESHOLDS = 512
# What loading the model needs. Stated, not inferred: MLflow's inference loads the model in a
# subprocess (seconds) and picks up whatever else happens to be imported.
MODEL_REQUIREMENTS = ("mlflow", "numpy", "pandas", "scikit-learn", "scipy", "skops")


def pinned_requirements() -> list[str]:
    """MODEL_REQUIREMENTS pinned to the versions installed here."""
    return [f"{name}=={version(name)}" for name in MODEL_REQUIREMENTS]


@dataclass(frozen=True)
class Preprocess:
    """How the inference pipeline prepares numbers (config group 'preprocess'): what a missing
    number becomes, and whether a 0/1 column says it was missing."""

    numeric_imputation: str = "median"
    numeric_fill_value: float = 0.0
    missing_indicator: bool = False

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Preprocess:
        """The settings of a config group 'preprocess' mapping; a StepError names a bad one."""
        known = {"numeric_imputation", "numeric_fill_value", "missing_indicator"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise StepError(f"Unknown preprocess settings {unknown}.", f"use only {sorted(known)}.")
        settings = cls(**raw)
        if settings.numeric_imputation not in IMPUTATIONS:
            raise StepError(
                f"Unknown numeric imputation '{settings.numeric_imputation}'.",
                f"set preprocess.numeric_imputation to one of {', '.join(IMPUTATIONS)}.",
            )
        fill = settings.numeric_fill_value
        if isinstance(fill, bool) or not isinstance(fill, int | float) or not math.isfinite(fill):
            raise StepError(
                f"preprocess.numeric_fill_value is {fill!r}, not a finite number.",
                "give a number (used by numeric_imputation: constant).",
            )
        if not isinstance(settings.missing_indicator, bool):
            raise StepError(
                f"preprocess.missing_indicator is {settings.missing_indicator!r}.",
                "give true or false.",
            )
        return settings


def build_pipeline(
    schema: Schema,
    model_name: str,
    hyperparameters: dict[str, Any],
    preprocess: Preprocess | None = None,
) -> Pipeline:
    """Imputation + one-hot (unknown categories ignored) for categoricals, imputation of missing
    numbers (scaled after it for linear models), then the named estimator with its
    hyperparameters."""
    preprocess = preprocess or Preprocess()
    if model_name not in ESTIMATORS:
        raise StepError(f"Unknown model '{model_name}'.", f"use one of {sorted(ESTIMATORS)}.")
    estimator_class = ESTIMATORS[model_name]
    valid = estimator_class().get_params()
    unknown = sorted(set(hyperparameters) - set(valid))
    if unknown:
        raise StepError(
            f"Unknown {model_name} hyperparameters {unknown}.",
            f"use only {sorted(valid)}.",
        )
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    # A number missing in training or only later is filled the same way; a column that was
    # entirely missing in training keeps its place (data_check refuses such a column anyway).
    impute = SimpleImputer(
        strategy=preprocess.numeric_imputation,
        fill_value=float(preprocess.numeric_fill_value),
        add_indicator=preprocess.missing_indicator,
        keep_empty_features=True,
    )
    numeric_steps: list[tuple[str, Any]] = [("impute", impute)]
    if model_name in SCALED:
        numeric_steps.append(("scale", StandardScaler()))
    preprocess_step = ColumnTransformer(
        [
            ("categorical", categorical, list(schema.categorical)),
            ("numeric", Pipeline(numeric_steps), list(schema.numeric)),
        ],
        verbose_feature_names_out=False,
    )
    estimator = estimator_class(**hyperparameters)
    try:
        estimator._validate_params()  # the values, before any time is spent fitting
    except (ValueError, TypeError) as err:
        raise StepError(
            f"{model_name} rejects its hyperparameters {hyperparameters}: {err}",
            "correct the values in config group 'model'.",
        ) from None
    return Pipeline([("preprocess", preprocess_step), ("classifier", estimator)])


def fit(
    train: pd.DataFrame,
    schema: Schema,
    model_name: str,
    hyperparameters: dict[str, Any],
    preprocess: Preprocess | None = None,
) -> Pipeline:
    """Build the pipeline and fit it on the train table, the same model whatever the thread count
    (the configured n_jobs is kept: a forest seeds each tree, so its jobs' order does not matter)."""
    features, target = schema.xy(train)
    pipeline = build_pipeline(schema, model_name, hyperparameters, preprocess)
    if target.nunique() < 2:  # after the settings: they are checked first
        raise StepError(
            f"The train table holds one class only: {int(target.sum())} of {len(target)} rows "
            f"are the positive class '{schema.positive_class}'.",
            "check data.positive_class against the target's labels (data_check's target check "
            "names them), or use more data.",
        )
    with fixed_fit_threads():
        return pipeline.fit(features, target)


@dataclass(frozen=True)
class ThresholdChoice:
    """The decision threshold picked on validation, and the curve it was picked from."""

    threshold: float
    score: float
    metric: str
    thresholds: np.ndarray
    scores: np.ndarray


def _recall_if_precise(y_true: np.ndarray, y_pred: np.ndarray, min_precision: float) -> float:
    """Recall, or -1 where precision is below min_precision (so such a threshold never wins)."""
    if precision_score(y_true, y_pred, zero_division=0) < min_precision:
        return -1.0
    return float(recall_score(y_true, y_pred, zero_division=0))


def choose_threshold(
    model: Pipeline,
    features: pd.DataFrame,
    target: pd.Series,
    strategy: str,
    beta: float = 1.0,
    min_precision: float = 0.0,
) -> ThresholdChoice:
    """Pick the probability threshold that is best on the validation table for ``strategy``:
    max_f1, max_fbeta (with beta), or recall_at_precision (highest recall whose precision is at
    least min_precision)."""
    scorers = {
        "max_f1": ("f1", "f1"),
        "max_fbeta": (make_scorer(fbeta_score, beta=beta), f"f{beta:g}"),
        "recall_at_precision": (
            make_scorer(_recall_if_precise, min_precision=min_precision),
            f"recall at precision >= {min_precision:g}",
        ),
    }
    if strategy not in scorers:
        raise StepError(
            f"Unknown threshold strategy '{strategy}'.",
            f"set evaluation.threshold.strategy to one of {', '.join(THRESHOLD_STRATEGIES)}.",
        )
    scoring, metric = scorers[strategy]
    # scored in the fixed order: a last-bit change of one probability can move the threshold
    with fixed_order(model):
        proba = model.predict_proba(features)[:, 1]
        candidates = np.unique(proba)
        if len(candidates) > MAX_THRESHOLDS:
            candidates = np.unique(np.quantile(proba, np.linspace(0, 1, MAX_THRESHOLDS)))
        tuned = TunedThresholdClassifierCV(
            model,
            scoring=scoring,
            thresholds=candidates,
            cv="prefit",
            refit=False,
            store_cv_results=True,
        ).fit(features, target)
    if strategy == "recall_at_precision" and tuned.best_score_ < 0:
        precision, _, edges = precision_recall_curve(target, proba)
        best = int(np.argmax(precision[:-1]))
        raise StepError(
            f"No threshold reaches precision {min_precision:g} on the validation table; the "
            f"highest is {precision[best]:.4f} (at threshold {edges[best]:.4f}).",
            "lower evaluation.threshold.min_precision or choose another strategy.",
        )
    return ThresholdChoice(
        threshold=float(tuned.best_threshold_),
        score=float(tuned.best_score_),
        metric=metric,
        thresholds=np.asarray(tuned.cv_results_["thresholds"]),
        scores=np.asarray(tuned.cv_results_["scores"]),
    )


def with_threshold(model: Pipeline, threshold: float) -> FixedThresholdClassifier:
    """The fitted pipeline whose ``predict`` says positive at probability >= threshold."""
    return FixedThresholdClassifier(model, threshold=threshold, response_method="predict_proba")


def feature_importances(
    model: Pipeline, features: pd.DataFrame, target: pd.Series, seed: int = 0
) -> tuple[list[str], np.ndarray, str]:
    """(names, importances, kind): the estimator's impurity importances per one-hot feature
    where it has them, else permutation importances per input column on the given table."""
    estimator = model.named_steps["classifier"]
    if hasattr(estimator, "feature_importances_"):
        names = list(model.named_steps["preprocess"].get_feature_names_out())
        return names, np.asarray(estimator.feature_importances_), "impurity"
    with fixed_order(model):
        result = permutation_importance(
            model, features, target, scoring="roc_auc", n_repeats=3, random_state=seed, n_jobs=1
        )
    return list(features.columns), result.importances_mean, "permutation (ROC AUC drop)"
