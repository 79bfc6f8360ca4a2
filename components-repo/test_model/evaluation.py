"""Pure evaluation logic: a fitted model and a labelled table in, test scores out."""

from __future__ import annotations

import pandas as pd

from step_kit import Schema
from step_kit.metrics import binary_scores


def score(model, test: pd.DataFrame, schema: Schema) -> dict[str, float]:
    """Test scores of the model's positive-class probabilities."""
    features, target = schema.xy(test)
    proba = model.predict_proba(features)[:, 1]
    return {f"test.{k}": v for k, v in binary_scores(target, proba).items()}
