"""Pure data checks: each returns a Finding; the caller decides what a failure means."""

from __future__ import annotations

from typing import Any

from step_kit import Schema, StepError
from step_kit.findings import Finding

import numpy as np
import pandas as pd
from scipy import stats


def check_schema(frame: pd.DataFrame, schema: Schema) -> Finding:
    """Exactly the schema's columns (the ID's too); numeric features numeric; categorical ones
    and the target text."""
    problems = []
    absent = [c for c in schema.columns if c not in frame.columns]
    extra = [c for c in frame.columns if c not in schema.columns]
    if absent:
        problems.append(f"missing columns {absent}")
    if extra:
        problems.append(f"unexpected columns {extra}")
    for column in schema.numeric:
        if column in frame and not pd.api.types.is_numeric_dtype(frame[column]):
            problems.append(f"'{column}' is {frame[column].dtype}, expected a number")
    for column in [*schema.categorical, schema.target]:
        if column in frame and not pd.api.types.is_string_dtype(frame[column]):
            problems.append(f"'{column}' is {frame[column].dtype}, expected text")
    return Finding("schema", not problems, "; ".join(problems) or "columns and dtypes as expected")


# A column this long whose every value differs is an identifier, not a feature (fewer rows prove
# nothing). Numbers with fractions are exempt: a measurement may well never repeat.
MIN_ROWS_ALL_DISTINCT = 50


def check_missing(
    frame: pd.DataFrame,
    schema: Schema,
    max_share: float,
    by_column: dict[str, float] | None = None,
) -> Finding:
    """The share of missing values of each feature, at most max_share (or its column's own
    maximum in by_column); the detail lists every feature that has missing values."""
    by_column = by_column or {}
    unknown = sorted(set(by_column) - set(schema.features))
    if unknown:
        return Finding(
            "missing", False, f"max_missing_share_by_column names non-features {unknown}"
        )
    shares = {
        c: float(frame[c].isna().mean()) for c in schema.features if c in frame and len(frame)
    }
    over = [
        f"'{c}' {share:.3f} > {by_column.get(c, max_share):g}"
        for c, share in shares.items()
        if share > by_column.get(c, max_share)
    ]
    seen = ", ".join(f"{c} {share:.3f}" for c, share in shares.items() if share > 0) or "none"
    if over:
        return Finding(
            "missing", False, f"too many missing values: {'; '.join(over)} (all: {seen})"
        )
    return Finding("missing", True, f"share missing per feature: {seen}; at most {max_share:g}")


def check_columns(frame: pd.DataFrame, schema: Schema) -> Finding:
    """No feature entirely missing, constant, or (an ID by mistake) distinct in every row."""
    problems = []
    for column in schema.features:
        if column not in frame:
            continue
        values = frame[column].dropna()
        distinct = values.nunique()
        if values.empty:
            problems.append(f"'{column}' is entirely missing")
        elif distinct == 1:
            problems.append(f"'{column}' is constant ({_plain(values.iloc[0])!r})")
        elif distinct == len(values) >= MIN_ROWS_ALL_DISTINCT and _identifier_like(values):
            problems.append(
                f"'{column}' has a different value in every row: an identifier, not a feature "
                "(set data.id to it, or leave it out of the features)"
            )
    return Finding(
        "columns", not problems, "; ".join(problems) or "no empty, constant or ID column"
    )


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds (shown as 40, not np.int64(40))."""
    return value.item() if isinstance(value, np.generic) else value


def _identifier_like(values: pd.Series) -> bool:
    """Text, or whole numbers: values that name rows rather than measure them."""
    if not pd.api.types.is_numeric_dtype(values):
        return True
    return bool((values % 1 == 0).all())


def check_id(frame: pd.DataFrame, schema: Schema) -> Finding:
    """The ID column (data.id), when there is one, names every row once."""
    if not schema.id or schema.id not in frame:
        return Finding("id", True, "no ID column")
    ids = frame[schema.id]
    missing, repeated = int(ids.isna().sum()), int(ids.dropna().duplicated().sum())
    problems = [f"{missing} rows without an ID"] * bool(missing)
    if repeated:
        examples = sorted(map(str, ids[ids.duplicated(keep=False)].dropna().unique()[:5]))
        problems.append(f"{repeated} repeated IDs, e.g. {examples}")
    detail = "; ".join(problems) or f"'{schema.id}' names each of {len(ids)} rows once"
    return Finding("id", not problems, detail)


def check_categories(frame: pd.DataFrame, schema: Schema) -> Finding:
    """No value outside the allowed categories of config group 'data' (missing values allowed)."""
    problems = []
    for column, allowed in schema.categories.items():
        if column not in frame:
            continue
        unknown = sorted(set(frame[column].dropna().unique()) - set(allowed))
        if unknown:
            problems.append(f"'{column}' has unknown values {unknown[:10]}")
    return Finding("categories", not problems, "; ".join(problems) or "all values known")


def check_ranges(frame: pd.DataFrame, ranges: dict[str, list[float]]) -> Finding:
    """Every non-missing value of each named column within its inclusive [min, max]."""
    problems = []
    for column, (low, high) in ranges.items():
        if column not in frame:
            problems.append(f"'{column}' is not a column")
            continue
        values = frame[column].dropna()
        if not pd.api.types.is_numeric_dtype(values):
            problems.append(f"'{column}' is {values.dtype}, not a number")
            continue
        outside = values[(values < low) | (values > high)]
        if len(outside):
            problems.append(
                f"'{column}' has {len(outside)} values outside [{low}, {high}] "
                f"(seen {values.min()}..{values.max()})"
            )
    return Finding("ranges", not problems, "; ".join(problems) or "all values within bounds")


def check_row_count(frame: pd.DataFrame, min_rows: int, max_rows: int) -> Finding:
    """The number of rows within [min_rows, max_rows]."""
    rows = len(frame)
    ok = min_rows <= rows <= max_rows
    return Finding("row_count", ok, f"{rows} rows, expected {min_rows}..{max_rows}")


def check_target(frame: pd.DataFrame, schema: Schema, low: float, high: float) -> Finding:
    """The positive-class share of the target within [low, high], and no unknown label."""
    target = frame[schema.target]
    labels = sorted(set(target.dropna().unique()))
    allowed = schema.categories.get(schema.target)
    if allowed and set(labels) - set(allowed):
        return Finding("target", False, f"unknown labels {sorted(set(labels) - set(allowed))}")
    if len(labels) > 2:
        return Finding(
            "target", False, f"{len(labels)} labels {labels[:10]}; a binary target has two"
        )
    if schema.positive_class not in labels:
        return Finding(
            "target", False, f"the positive class '{schema.positive_class}' is not among {labels}"
        )
    share = float(target.eq(schema.positive_class).mean()) if len(target) else 0.0
    ok = low <= share <= high
    return Finding(
        "target", ok, f"share of '{schema.positive_class}' {share:.4f}, expected {low}..{high}"
    )


def check_drift(
    frame: pd.DataFrame, reference: pd.DataFrame, schema: Schema, ks_alpha: float, chi2_alpha: float
) -> list[Finding]:
    """Two-sample KS per numeric column, chi-square per categorical column, Bonferroni-corrected.

    A check fails when its p-value is below its alpha divided by the number of columns tested,
    so the whole family keeps the configured false-alarm rate.
    """
    results = []
    numeric = [c for c in schema.numeric if c in frame and c in reference]
    categorical = [c for c in schema.categorical if c in frame and c in reference]
    tests = max(len(numeric) + len(categorical), 1)
    for column in numeric:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            detail = f"not tested: '{column}' is {frame[column].dtype}, not a number"
            results.append(Finding(f"drift.{column}", False, detail))
            continue
        current, ref = (
            frame[column].dropna(),
            pd.to_numeric(reference[column], errors="coerce").dropna(),
        )
        p_value = float(stats.ks_2samp(current, ref).pvalue)
        ok = p_value >= ks_alpha / tests
        results.append(
            Finding(f"drift.{column}", ok, f"KS p={p_value:.3g}, alpha={ks_alpha}/{tests}")
        )
    for column in categorical:
        counts = pd.concat(
            {
                "current": frame[column].value_counts(),
                "reference": reference[column].value_counts(),
            },
            axis=1,
        ).fillna(0)
        if len(counts) < 2:
            results.append(Finding(f"drift.{column}", True, "a single category in both"))
            continue
        p_value = float(stats.chi2_contingency(counts.to_numpy()).pvalue)
        ok = p_value >= chi2_alpha / tests
        results.append(
            Finding(
                f"drift.{column}", ok, f"chi-square p={p_value:.3g}, alpha={chi2_alpha}/{tests}"
            )
        )
    return results


def _missing_limits(config: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """max_missing_share and max_missing_share_by_column of config, each a share in [0, 1]."""
    given = {"max_missing_share": config.get("max_missing_share", 1.0)}
    by_column = config.get("max_missing_share_by_column") or {}
    if not isinstance(by_column, dict):
        raise StepError(
            f"data_check.max_missing_share_by_column is {by_column!r}.",
            "give a mapping of column: share, e.g. {cabin: 0.8}.",
        )
    given |= {f"max_missing_share_by_column.{c}": v for c, v in by_column.items()}
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise StepError(
                f"data_check.{key} is {value!r}, not a share from 0 to 1.",
                f"set data_check.{key} to a number from 0 to 1.",
            )
    return float(given["max_missing_share"]), {c: float(v) for c, v in by_column.items()}


def run_checks(
    frame: pd.DataFrame,
    schema: Schema,
    config: dict[str, Any],
    reference: pd.DataFrame | None = None,
) -> list[Finding]:
    """Every check that config asks for, in a fixed order."""
    max_share, by_column = _missing_limits(config)
    results = [
        check_schema(frame, schema),
        check_columns(frame, schema),
        check_missing(frame, schema, max_share, by_column),
        *([check_id(frame, schema)] if schema.id else []),
        check_categories(frame, schema),
        check_ranges(frame, config.get("ranges", {})),
        check_row_count(frame, int(config["min_rows"]), int(config["max_rows"])),
        check_target(frame, schema, *config["positive_share"]),
    ]
    if reference is not None:
        results += check_drift(
            frame, reference, schema, float(config["ks_alpha"]), float(config["chi2_alpha"])
        )
    return results
