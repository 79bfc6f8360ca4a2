"""Pure model logic: the inference pipeline's builder and its fit."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier

from step_kit import Schema, StepError

# Types outside skops' default trust list that the fitted pipeline contains; declared so the
# model loads without pickle and without trusting anything else.
SKOPS_TRUSTED_TYPES = ["sklearn.tree._tree.Tree", "numpy.dtype"]
# What loading the model needs. Stated, not inferred: MLflow's inference loads the model in a
# subprocess (seconds) and picks up whatever else happens to be imported.
MODEL_REQUIREMENTS = ("mlflow", "numpy", "pandas", "scikit-learn", "scipy", "skops")


def pinned_requirements() -> list[str]:
    """MODEL_REQUIREMENTS pinned to the versions installed here."""
    return [f"{name}=={version(name)}" for name in MODEL_REQUIREMENTS]


def build_pipeline(schema: Schema, hyperparameters: dict[str, Any]) -> Pipeline:
    """Imputation + one-hot (unknown categories ignored) for categoricals, numbers as they are,
    then a decision tree."""
    valid = DecisionTreeClassifier().get_params()
    unknown = sorted(set(hyperparameters) - set(valid))
    if unknown:
        raise StepError(
            f"Unknown decision-tree hyperparameters {unknown}.",
            f"use only {sorted(valid)}.",
        )
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("one_hot", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    preprocess = ColumnTransformer(
        [
            ("categorical", categorical, list(schema.categorical)),
            ("numeric", "passthrough", list(schema.numeric)),
        ]
    )
    return Pipeline(
        [("preprocess", preprocess), ("classifier", DecisionTreeClassifier(**hyperparameters))]
    )


def fit(train: pd.DataFrame, schema: Schema, hyperparameters: dict[str, Any]) -> Pipeline:
    """Build the pipeline and fit it on the train table."""
    features, target = schema.xy(train)
    pipeline = build_pipeline(schema, hyperparameters)
    try:
        # Checks the values of the hyperparameters (names were checked by build_pipeline).
        pipeline.named_steps["classifier"]._validate_params()
    except (ValueError, TypeError) as err:
        raise StepError(
            f"The decision tree rejects its hyperparameters {hyperparameters}: {err}",
            "correct the values in config group 'model'.",
        ) from None
    return pipeline.fit(features, target)
