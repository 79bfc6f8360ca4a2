"""Pure cleaning logic: a raw table in, a clean table and counts of what was removed out."""

from __future__ import annotations

from step_kit import Schema, StepError
from step_kit.schema import text_column

import pandas as pd


def clean(
    raw: pd.DataFrame,
    schema: Schema,
    missing_token: str = "?",
    ranges: dict[str, tuple[float, float]] | None = None,
    drop_duplicates: bool = True,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Return the clean table (schema columns only, typed) and counts of what was removed."""
    absent = [c for c in schema.columns if c not in raw.columns]
    if absent:
        raise StepError(
            f"The raw data lacks the columns {absent} (it has {list(raw.columns)}).",
            "fetch a data set with the schema of config group 'data', or change that schema.",
        )
    counts: dict[str, int] = {"rows_in": len(raw)}
    frame = raw[schema.columns].copy()
    counts["extra_columns_dropped"] = raw.shape[1] - frame.shape[1]

    # categories and labels as text, whatever the source's type: 1, 1.0 and "1" are one category
    for column in [*schema.categorical, schema.target]:
        text = text_column(frame[column])
        missing = text.eq(missing_token) | text.eq("") | frame[column].isna()
        counts[f"missing.{column}"] = int(missing.sum())
        frame[column] = text.mask(missing)
    for column in schema.numeric:
        frame[column] = _to_number(frame[column], column, missing_token)

    no_target = frame[schema.target].isna()
    counts["target_missing_removed"] = int(no_target.sum())
    frame = frame[~no_target]

    # an ID makes every row distinct: a duplicate is the same values under another ID
    duplicated = frame.duplicated(subset=[c for c in frame.columns if c != schema.id])
    duplicated &= drop_duplicates
    counts["duplicates_removed"] = int(duplicated.sum())
    frame = frame[~duplicated]

    for column, (low, high) in (ranges or {}).items():
        if column not in schema.numeric:
            raise StepError(
                f"Range filter on '{column}', which is not a numeric column of the schema.",
                f"filter one of {list(schema.numeric)}.",
            )
        outside = ~frame[column].between(low, high) & frame[column].notna()
        counts[f"out_of_range_removed.{column}"] = int(outside.sum())
        frame = frame[~outside]

    counts["rows_out"] = len(frame)
    return frame.reset_index(drop=True), counts


# Booleans given as text count as the numbers 1 and 0.
BOOLEAN_TEXT = {"true": "1", "false": "0"}


def _to_number(values: pd.Series, column: str, missing_token: str) -> pd.Series:
    """Numbers as int64 (float64 where a value is missing or a fraction), booleans as 1/0;
    unparseable text is an error."""
    if pd.api.types.is_bool_dtype(values):
        numbers = values.astype("float64")  # a nullable boolean may hold missing values
    elif pd.api.types.is_numeric_dtype(values):
        numbers = values
    else:
        text = values.map(
            lambda v: str(int(v)) if isinstance(v, bool) else str(v), na_action="ignore"
        )
        text = text.astype("str").str.strip()
        text = text.mask(text.eq(missing_token) | text.eq("") | values.isna())
        text = text.where(~text.str.lower().isin(BOOLEAN_TEXT), text.str.lower().map(BOOLEAN_TEXT))
        numbers = pd.to_numeric(text, errors="coerce")
        bad = numbers.isna() & text.notna()
        if bad.any():
            examples = sorted(set(text[bad].head(5)))
            raise StepError(
                f"Column '{column}' has {int(bad.sum())} values that are not numbers, e.g. {examples}.",
                "correct the source data or move the column to 'categorical' in config group 'data'.",
            )
    if numbers.isna().any():
        return numbers.astype("float64")
    if (numbers % 1 == 0).all():
        return numbers.astype("int64")
    return numbers.astype("float64")
