"""The row checks of the server and of batch scoring, written once: which columns a row or a
file must have, which values a column of each kind takes (the one rule of requests, rows and
files), and how a CSV text's lines must match its header."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd

# MLflow signature types -> the kind of value a column holds
INT64 = 2**63  # integers are held as int64
# Below this a float holds every integer exactly; above it, 9007199254740993 arrives as ...992
# and 9.3e18 may stand for any of 1024 integers, so an integer column refuses such floats.
FLOAT_EXACT = 2**53


class InputError(ValueError):
    """A row or a request that does not fit the model's input schema; names field and problem."""

    def __init__(self, problem: str, field: str = "", row: int | None = None) -> None:
        self.problem = problem
        self.field = field
        self.row = row
        where = f"row {row}: " if row is not None else ""
        super().__init__(f"{where}{field + ': ' if field else ''}{problem}")


class MiscountedLine(ValueError):
    """A CSV line holding another number of fields than its header names columns."""

    def __init__(self, line: int, fields: int, header: int) -> None:
        self.line = line
        self.fields = fields
        self.header = header
        super().__init__(f"line {line} holds {fields} fields, the header {header}")


def csv_records(text: Iterable[str]) -> Iterator[list[str]]:
    """The records of CSV text after its header line, blank lines skipped (as pandas and Arrow
    skip them); MiscountedLine at the first record whose fields do not match the header: a
    reader would take an extra first field as the row's index and shift every column by one."""
    lines = csv.reader(text)
    header = next(lines, [])
    for record in lines:
        if not record:
            continue
        if len(record) != len(header):
            raise MiscountedLine(lines.line_num, len(record), len(header))
        yield record


def missing_columns(wanted: Iterable[str], present: Iterable[str]) -> list[str]:
    """The columns of ``wanted`` (the model's, in signature order) that ``present`` lacks."""
    there = set(present)
    return [column for column in wanted if column not in there]


def unfit_numbers(numbers: Any, kind: str) -> np.ndarray:
    """Per value of an array of numbers, whether a column of ``kind`` ("integer" or "number")
    refuses it: missing, not finite, or for an integer column not a whole number that an int64
    holds exactly (a float only below 2**53). The one rule of requests, rows and files."""
    values = np.asarray(numbers)
    if values.dtype.kind == "b":
        return np.ones(values.shape, dtype=bool)
    if values.dtype.kind == "i":
        return np.zeros(values.shape, dtype=bool)
    if values.dtype.kind == "u":
        return values >= np.uint64(INT64)
    if values.dtype.kind != "f":  # objects (Decimal, None, text): as numbers, or missing
        values = pd.to_numeric(pd.Series(values.ravel()), errors="coerce").to_numpy(np.float64)
    with np.errstate(invalid="ignore"):  # inf % 1 is NaN, as it should be here
        fit: np.ndarray = _fit_floats(values, kind)
        return ~fit


def refused_numbers(values: Any, numbers: Any, kind: str, imputes: bool) -> np.ndarray:
    """Per value of a number column, whether the row checks refuse it: ``unfit_numbers`` of
    ``numbers`` (its parse), except a missing value (None, NaN) where the model ``imputes``
    the column (text that parses to no number stays refused)."""
    refused = unfit_numbers(numbers, kind)
    if imputes:
        refused &= ~np.asarray(pd.isna(values), dtype=bool)
    return refused


def _fit_floats(values: Any, kind: str) -> Any:
    """Whether floats fit a column of ``kind``, written once for one float and for an array:
    finite, and for an integer column whole and below 2**53 in size."""
    fit = abs(values) < math.inf  # false for NaN too
    if kind == "integer":
        fit = fit & (values % 1 == 0) & (abs(values) < FLOAT_EXACT)
    return fit


def _number_problem(value: Any, kind: str) -> str:
    """What is wrong with one value for a number column, "" if nothing (no "got ...")."""
    name = "an integer" if kind == "integer" else "a number"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be {name}"
    if isinstance(value, int):  # exact, whatever its size: only the range counts
        return "" if -INT64 <= value < INT64 else "is out of range of a 64-bit integer"
    if _fit_floats(value, kind):
        return ""
    if not math.isfinite(value):
        return "must be a finite number"
    if not value.is_integer():
        return "must be an integer"
    # beyond 2**53 floats skip integers: the value sent may not be the one meant
    return "is not an integer a 64-bit integer holds exactly (as a float, within ±2**53)"


def file_value_problem(value: Any, number: Any, kind: str) -> str:
    """What is wrong with a value of a file's row (``number`` its parse), with the value as the
    file holds it."""
    if kind == "string":
        return f"must be text or null, got {value!r}"
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return f"must be {'an integer' if kind == 'integer' else 'a number'}, got a missing value"
    problem = _number_problem(value if pd.isna(number) else number, kind)
    return f"{problem or 'must be a number'}, got {_shown(value)}"


def _shown(value: Any) -> str:
    """A value as an error shows it: its repr, cut after 24 characters."""
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:24]}..."


def value_problem(value: Any, kind: str) -> str:
    """What is wrong with one value for a column of this kind, "" if nothing."""
    if kind == "string":
        return (
            ""
            if value is None or isinstance(value, str)
            else f"must be text or null, got {value!r}"
        )
    problem = _number_problem(value, kind)
    return f"{problem}, got {_shown(value)}" if problem else ""
