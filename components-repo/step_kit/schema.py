"""The column roles of a tabular data set, passed to components as one JSON parameter."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from step_kit.cli import json_param
from step_kit.errors import StepError


@dataclass(frozen=True)
class Schema:
    """Which columns are numeric features, categorical features and the binary target."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    target: str
    positive_class: str
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        """Feature columns in model input order: numeric first, then categorical."""
        return [*self.numeric, *self.categorical]

    @property
    def columns(self) -> list[str]:
        """Every column the data set must have, target last."""
        return [*self.features, self.target]

    def xy(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
        """Features in model input order, and the target as 1 (positive class) or 0."""
        absent = [c for c in self.columns if c not in frame.columns]
        if absent:
            raise StepError(
                f"The table lacks the columns {absent}.",
                "pass a table produced by the earlier steps of this pipeline.",
            )
        return frame[self.features], frame[self.target].eq(self.positive_class).astype("int64")

    @classmethod
    def from_json(cls, text: str) -> Schema:
        """Parse the ``schema`` parameter that the orchestrator builds from ``data.schema``."""
        raw = json_param("schema", text)
        missing = {"numeric", "categorical", "target", "positive_class"} - set(raw)
        if missing:
            raise StepError(
                f"The schema parameter lacks the keys {sorted(missing)}.",
                "give numeric, categorical, target and positive_class.",
            )
        return cls(
            numeric=tuple(raw["numeric"]),
            categorical=tuple(raw["categorical"]),
            target=raw["target"],
            positive_class=raw["positive_class"],
            categories={k: tuple(v) for k, v in (raw.get("categories") or {}).items()},
        )
