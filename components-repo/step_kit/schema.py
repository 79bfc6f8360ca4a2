"""The column roles of a tabular data set, passed to components as one JSON parameter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from step_kit.cli import json_param
from step_kit.errors import StepError

import numpy as np
import pandas as pd


def as_text(value: Any) -> str:
    """A category or label as the clean data spells it, whatever its type in the source or in the
    config: text stripped, a whole number without ".0" (3, 3.0 and "3" are one category), a
    boolean as True/False."""
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def text_column(values: pd.Series) -> pd.Series:
    """A column as text (``as_text`` for each value; a missing value stays missing)."""
    if (
        pd.api.types.is_string_dtype(values)
        and values.map(lambda v: isinstance(v, str), na_action="ignore").all()
    ):
        return values.astype("str").str.strip()
    missing = values.isna()
    return values.map(as_text, na_action="ignore").astype("str").mask(missing)


@dataclass(frozen=True)
class Schema:
    """Which columns are numeric features, categorical features, the binary target, and an
    optional ID column that is kept beside the rows but never a feature."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    target: str
    positive_class: str
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    id: str | None = None

    @property
    def features(self) -> list[str]:
        """Feature columns in model input order: numeric first, then categorical."""
        return [*self.numeric, *self.categorical]

    @property
    def columns(self) -> list[str]:
        """Every column the data set must have: the ID (if any) first, target last."""
        return [*([self.id] if self.id else []), *self.features, self.target]

    @property
    def negative_class(self) -> str:
        """The other label of the target: from its allowed categories, else "not <positive>"."""
        others = [c for c in self.categories.get(self.target, ()) if c != self.positive_class]
        return others[0] if len(others) == 1 else f"not {self.positive_class}"

    def xy(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
        """Features in model input order, and the target as 1 (positive class) or 0."""
        absent = [c for c in [*self.features, self.target] if c not in frame.columns]
        if absent:
            raise StepError(
                f"The table lacks the columns {absent}.",
                "pass a table produced by the earlier steps of this pipeline.",
            )
        target = text_column(frame[self.target])
        return frame[self.features], target.eq(self.positive_class).astype("int64")

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
        for key in ("numeric", "categorical"):
            names = raw[key] or []
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                raise StepError(
                    f"data.{key} is {names!r}, not a list of column names.",
                    f"give data.{key} as a list, e.g. [{'age' if key == 'numeric' else 'sex'}].",
                )
        for key in ("target", "id"):
            if raw.get(key) is not None and not (isinstance(raw[key], str) and raw[key]):
                raise StepError(
                    f"data.{key} is {raw[key]!r}, not a column name.", "name one column."
                )
        if raw["positive_class"] is None or raw["target"] is None:
            raise StepError(
                "Config group 'data' gives no target or no positive_class.",
                "name the target column and the label that counts as positive (e.g. 1, true, yes).",
            )
        numeric, categorical = tuple(raw["numeric"] or ()), tuple(raw["categorical"] or ())
        target, id_column = raw["target"], raw.get("id") or None
        roles = [*numeric, *categorical, target, *([id_column] if id_column else [])]
        twice = sorted({c for c in roles if roles.count(c) > 1})
        if twice:
            raise StepError(
                f"The columns {twice} have more than one role in config group 'data'.",
                "give each column one role: numeric, categorical, target or id.",
            )
        if not numeric and not categorical:
            raise StepError(
                "Config group 'data' names no feature.",
                "list columns under numeric or categorical.",
            )
        return cls(
            numeric=numeric,
            categorical=categorical,
            target=target,
            positive_class=as_text(raw["positive_class"]),
            categories={
                k: tuple(as_text(v) for v in values)
                for k, values in (raw.get("categories") or {}).items()
            },
            id=id_column,
        )
