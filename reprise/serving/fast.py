"""The fast path of the inference pipeline: the fitted ColumnTransformer (imputation + one-hot for
categoricals, numbers as they are or scaled) compiled to array lookups, then the fitted
estimator itself. Same float64 matrix as scikit-learn's transform, so the same probabilities;
it only skips the per-call overhead of pandas and ColumnTransformer (milliseconds per row)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

log = logging.getLogger(__name__)

# Below this many rows a dict lookup per value beats pandas' vectorised category coding.
SMALL_BATCH = 64


class NotCompilable(Exception):
    """The pipeline holds a step the fast path does not know; scikit-learn's own path is used."""


@dataclass(frozen=True)
class _Categorical:
    column: str
    offset: int  # first output column of this feature's one-hot block
    categories: pd.Index  # the encoder's categories, in output order
    lookup: dict[Any, int]  # category -> position in the block
    fill: Any  # what a missing value becomes (the imputer's fill value)


@dataclass(frozen=True)
class _Numeric:
    column: str
    position: int  # output column
    mean: float | None  # StandardScaler's mean_, None when passed through
    scale: float | None


def _passes_through(step: Any) -> bool:
    """'passthrough', which a fitted ColumnTransformer holds as an identity FunctionTransformer."""
    return step == "passthrough" or (
        isinstance(step, FunctionTransformer) and step.func is None and step.kw_args is None
    )


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


class FastScorer:
    """Scores rows given as a DataFrame or as a mapping of column -> values."""

    def __init__(self, model: Any) -> None:
        if isinstance(model, FixedThresholdClassifier):
            self.threshold = float(model.threshold)
            pipeline = model.estimator
        else:
            self.threshold = 0.5
            pipeline = model
        if not isinstance(pipeline, Pipeline) or "preprocess" not in pipeline.named_steps:
            raise NotCompilable("not a preprocess + classifier pipeline")
        self.classifier = pipeline.named_steps["classifier"]
        self.positive_index = list(self.classifier.classes_).index(1)
        self._compile(pipeline.named_steps["preprocess"])

    def _compile(self, transformer: Any) -> None:
        self.categorical: list[_Categorical] = []
        self.numeric: list[_Numeric] = []
        position = 0
        for name, step, columns in transformer.transformers_:
            if name == "remainder":
                if step != "drop":
                    raise NotCompilable("a remainder that is not dropped")
                continue
            if _passes_through(step) or isinstance(step, StandardScaler):
                scaler = step if isinstance(step, StandardScaler) else None
                for i, column in enumerate(columns):
                    mean = None if scaler is None or scaler.mean_ is None else scaler.mean_[i]
                    scale = None if scaler is None or scaler.scale_ is None else scaler.scale_[i]
                    self.numeric.append(_Numeric(column, position, mean, scale))
                    position += 1
                continue
            imputer, encoder = self._categorical_steps(step)
            for i, column in enumerate(columns):
                categories = pd.Index(encoder.categories_[i])
                lookup = {value: j for j, value in enumerate(categories)}
                fill = imputer.statistics_[i] if imputer is not None else None
                self.categorical.append(_Categorical(column, position, categories, lookup, fill))
                position += len(categories)
        self.width = position

    @staticmethod
    def _categorical_steps(step: Any) -> tuple[SimpleImputer | None, OneHotEncoder]:
        steps = list(step.named_steps.values()) if isinstance(step, Pipeline) else [step]
        imputer = steps[0] if isinstance(steps[0], SimpleImputer) else None
        encoder = steps[-1]
        known = len(steps) == (2 if imputer is not None else 1)
        if not (known and isinstance(encoder, OneHotEncoder)):
            raise NotCompilable(f"categorical step {step!r}")
        if imputer is not None and imputer.strategy != "constant":
            raise NotCompilable("an imputer that is not constant")
        if encoder.handle_unknown != "ignore" or encoder.drop is not None:
            raise NotCompilable("a one-hot encoder that does not ignore unknowns or drops one")
        return imputer, encoder

    @property
    def columns(self) -> list[str]:
        """The input columns the model reads."""
        return [c.column for c in self.numeric] + [c.column for c in self.categorical]

    def transform(self, rows: pd.DataFrame | Mapping[str, Sequence[Any]]) -> np.ndarray:
        """The float64 matrix scikit-learn's ColumnTransformer would give for these rows."""
        first = self.numeric[0].column if self.numeric else self.categorical[0].column
        n = len(rows[first])
        matrix = np.zeros((n, self.width), dtype=np.float64)
        for spec in self.numeric:
            values = np.asarray(rows[spec.column], dtype=np.float64)
            if spec.mean is not None:
                values = values - spec.mean
            if spec.scale is not None:
                values = values / spec.scale
            matrix[:, spec.position] = values
        for spec in self.categorical:
            values = rows[spec.column]
            if n <= SMALL_BATCH:
                for i, value in enumerate(values):
                    if _is_missing(value):
                        value = spec.fill
                    j = spec.lookup.get(value)
                    if j is not None:
                        matrix[i, spec.offset + j] = 1.0
                continue
            series = pd.Series(values, copy=False)
            if spec.fill is not None:
                series = series.where(series.notna(), spec.fill)
            codes = pd.Categorical(series, categories=spec.categories).codes
            hit = codes >= 0
            matrix[np.flatnonzero(hit), spec.offset + codes[hit]] = 1.0
        return matrix

    def predict_proba(self, rows: pd.DataFrame | Mapping[str, Sequence[Any]]) -> np.ndarray:
        """Probability of the positive class for each row."""
        return self.classifier.predict_proba(self.transform(rows))[:, self.positive_index]

    def predict(self, proba: np.ndarray) -> np.ndarray:
        """Labels at the model's threshold, by the rule of FixedThresholdClassifier (>=)."""
        return (proba >= self.threshold).astype(np.int64)
