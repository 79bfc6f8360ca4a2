"""Checking and scoring a chunk of rows: straight from Arrow when no row can be bad, else
through pandas and the model's row checks; the bad rows with their reasons."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from reprise.serving.batch.plan import arrow_kind
from reprise.serving.rows import refused_numbers

if TYPE_CHECKING:  # imported when used: it brings MLflow, seconds of import
    from reprise.serving.model import ServedModel

# Rows scored at once inside a worker: bounds the one-hot matrix (rows x ~100 float64).
SCORE_SLICE_ROWS = 20_000
ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


@dataclass
class Scores:
    """A chunk's result: scores of its good rows, positions and reasons of its bad rows."""

    probability: np.ndarray
    label: np.ndarray
    bad_positions: np.ndarray
    bad_reasons: list[str]


def limit_threads() -> None:
    """One thread of native code per process: the processes are the parallelism."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def lean_arrow_memory() -> None:
    """Arrow's jemalloc pool, which gives freed memory back (~250 MB less on 10M rows)."""
    # the variable reaches processes started from here (the CLI sets it before Arrow loads);
    # this one switches pools now, for what it allocates from here on
    os.environ.setdefault(ARROW_POOL_ENV, "jemalloc")
    with contextlib.suppress(NotImplementedError, pa.ArrowException):
        if pa.default_memory_pool().backend_name != "jemalloc":
            pa.set_memory_pool(pa.jemalloc_memory_pool())


def _decoded(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns as plain ones: the values the file holds, as it holds them."""
    fields = [
        f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def check_and_type(
    served: ServedModel, frame: pd.DataFrame, impute: bool = True
) -> tuple[pd.Series, pd.DataFrame]:
    """(reason per row, "" for a good one; the good rows typed as the model was trained); with
    ``impute`` off a missing number is a bad row even where the model imputes it."""
    # ServedModel.bad_rows decides; it runs only when a vectorised look finds a possibly bad
    # value (a chunk of clean rows skips its per-value checks, the slow part)
    numbers = {
        c: pd.to_numeric(frame[c], errors="coerce")
        for c, kind in served.columns.items()
        if kind != "string" and not pd.api.types.is_numeric_dtype(frame[c])
    }
    imputed = served.imputed if impute else frozenset()
    if _surely_good(served.columns, frame, numbers, imputed):
        reasons = pd.Series("", index=frame.index, dtype=object)
        good = frame
    else:
        reasons = served.bad_rows(frame, impute)
        keep = (reasons == "").to_numpy()
        good = frame.loc[keep]
        numbers = {c: values.loc[keep] for c, values in numbers.items()}
    return reasons, served.typed(good.assign(**numbers) if numbers else good)


def _surely_good(
    columns: dict[str, str],
    frame: pd.DataFrame,
    numbers: dict[str, pd.Series],
    imputed: frozenset[str] = frozenset(),
) -> bool:
    """True only when ServedModel.bad_rows would find no bad row in ``frame`` (``imputed``: the
    number columns where a missing value is good)."""
    # text columns of a string dtype hold text or missing, nothing else; numbers pass the rule
    # of the row checks (present unless imputed, finite, integers held exactly by an int64)
    for column, kind in columns.items():
        if kind == "string":
            if not isinstance(frame[column].dtype, pd.StringDtype):
                return False
            continue
        parsed = numbers.get(column, frame[column])
        if refused_numbers(frame[column], parsed, kind, column in imputed).any():
            return False
    return True


def arrow_clean(
    columns: dict[str, str], table: pa.Table, imputed: frozenset[str] = frozenset()
) -> bool:
    """True only when every row of ``table`` is good (ServedModel.bad_rows would find no bad
    row) and its numbers read as the model's dtypes would give them: text columns of text, number
    columns of integers an int64 holds (or floats for 'number'), all finite, none missing but
    nulls of the ``imputed`` columns (a NaN takes the checked path: in a CSV it was text)."""
    import pyarrow.compute as pc

    for column, kind in columns.items():
        kind_of = table.schema.field(column).type
        if kind == "string":
            if arrow_kind(kind_of) not in ("string", "null"):
                return False
            continue
        whole = pa.types.is_signed_integer(kind_of) or (
            pa.types.is_unsigned_integer(kind_of) and kind_of.bit_width < 64
        )
        floating = kind == "number" and pa.types.is_floating(kind_of)
        values = table.column(column)
        if not (whole or floating) or (values.null_count and column not in imputed):
            return False
        if floating and not pc.all(pc.is_finite(values)).as_py():
            return False
    return True


def _numbers_from_text(columns: dict[str, str], table: pa.Table) -> pa.Table:
    """``table`` with its text columns of numbers (a CSV file's) parsed by Arrow; a column with
    a value Arrow will not parse is left as text (the chunk then takes the checked path)."""
    import pyarrow.compute as pc

    for column, kind in columns.items():
        if kind == "string" or arrow_kind(table.schema.field(column).type) != "string":
            continue
        target = pa.int64() if kind == "integer" else pa.float64()
        try:
            parsed = pc.cast(table.column(column), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        table = table.set_column(table.schema.get_field_index(column), column, parsed)
    return table


def score_table(served: ServedModel, table: pa.Table, stop_on_bad: bool = False) -> Scores:
    """Check every row of a chunk and score the good ones: straight from Arrow when the fast
    path reads it and no row can be bad, else through pandas and the row checks."""
    scorer = served.scorer
    numbers = _numbers_from_text(served.columns, table) if scorer is not None else table
    if scorer is None or not arrow_clean(served.columns, numbers, served.imputed):
        return score_frame(served, _decoded(table).to_pandas(), stop_on_bad)
    table = numbers
    # compiled trees hold no matrix per row; scikit-learn's estimators get a bounded one
    step = max(table.num_rows, 1) if scorer.trees is not None else SCORE_SLICE_ROWS
    probability = np.concatenate(
        [np.empty(0)]
        + [
            scorer.predict_proba_arrow(table.slice(start, step))
            for start in range(0, table.num_rows, step)
        ]
    )
    no_rows = np.empty(0, dtype=np.int64)
    return Scores(probability, scorer.predict(probability), no_rows, [])


def score_frame(served: ServedModel, frame: pd.DataFrame, stop_on_bad: bool = False) -> Scores:
    """Check every row of ``frame``, score the good ones (in slices, to bound memory)."""
    reasons, typed = check_and_type(served, frame)
    bad = np.flatnonzero((reasons != "").to_numpy())
    bad_reasons = [str(r) for r in reasons.iloc[bad]]
    if stop_on_bad and len(bad):
        empty = np.empty(0)
        return Scores(empty, empty.astype(np.int64), bad, bad_reasons)
    probabilities, labels = [], []
    for start in range(0, len(typed), SCORE_SLICE_ROWS):
        proba, label = served.score(typed.iloc[start : start + SCORE_SLICE_ROWS])
        probabilities.append(np.asarray(proba, dtype=np.float64))
        labels.append(np.asarray(label, dtype=np.int64))
    probability = np.concatenate(probabilities) if probabilities else np.empty(0)
    label = np.concatenate(labels) if labels else np.empty(0, dtype=np.int64)
    return Scores(probability, label, bad, bad_reasons)
