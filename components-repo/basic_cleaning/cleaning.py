"""Pure cleaning logic: a raw table in, a clean table and counts of what was removed out."""

from __future__ import annotations

import pandas as pd

from step_kit import Schema, StepError


def clean(
    raw: pd.DataFrame,
    schema: Schema,
    missing_token: str = "?",
    ranges: dict[str, tuple[float, float]] | None = None,
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

    for column in [*schema.categorical, schema.target]:
        text = frame[column].astype("str").str.strip()
        missing = text.eq(missing_token) | text.eq("") | frame[column].isna()
        counts[f"missing.{column}"] = int(missing.sum())
        frame[column] = text.mask(missing)
    for column in schema.numeric:
        frame[column] = _to_number(frame[column], column, missing_token)

    no_target = frame[schema.target].isna()
    counts["target_missing_removed"] = int(no_target.sum())
    frame = frame[~no_target]

    duplicated = frame.duplicated()
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


def _to_number(values: pd.Series, column: str, missing_token: str) -> pd.Series:
    """Numbers as int64 (float64 where a value is missing); unparseable text is an error."""
    if pd.api.types.is_numeric_dtype(values):
        numbers = values
    else:
        text = values.astype("str").str.strip()
        text = text.mask(text.eq(missing_token) | text.eq(""))
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
