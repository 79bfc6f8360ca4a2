"""Request bodies to checked columns: /predict's rows and MLflow's scoring protocol (its four
JSON formats and CSV), refused before parsing when they would take too long to parse."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from typing import Any

from reprise.serving.model import ServedModel
from reprise.serving.rows import InputError, MiscountedLine, csv_records
from reprise.serving.server.refusals import RequestProblem

MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
SPLIT_KEYS = {"columns", "data", "index"}  # pandas' split orient; the index is not used
# Arrays and objects of a body besides its rows: the outer list or object, a format's own,
# dataframe_split's columns and index, the columnar form's one list per column, params.
SPARE_CONTAINERS = 64
JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_CSV_FIX = "send a header line of column names, then one line per row."


def _records_from_columns(columns: Any, data: Any, max_rows: int) -> list[dict[str, Any]]:
    """Rows of MLflow's dataframe_split: {"columns": [...], "data": [[...], ...]}."""
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InputError("must be a list of column names", "dataframe_split.columns")
    if len(set(columns)) != len(columns):
        raise InputError("names a column twice", "dataframe_split.columns")
    if not isinstance(data, list):
        raise InputError("must be a list of rows (lists of values)", "dataframe_split.data")
    _check_rows(len(data), max_rows)
    records = []
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            raise InputError(
                f"a row must be a list of {len(columns)} values, one per column",
                "dataframe_split.data",
                i,
            )
        records.append(dict(zip(columns, row, strict=True)))
    return records


def _records_from_tensor_input(value: Any, key: str) -> list[Any]:
    """Rows of MLflow's instances / inputs: a list of row objects, or {column: [values]}."""
    if isinstance(value, list):
        return value
    if not isinstance(value, dict):
        raise InputError("must be a list of row objects or an object of column: values", key)
    lists = [v for v in value.values() if isinstance(v, list)]
    if not lists:
        return [value]  # one row
    if len(lists) != len(value) or len({len(v) for v in lists}) != 1:
        raise InputError("every column must hold a list of values of the same length", key)
    names = list(value)
    return [dict(zip(names, row, strict=True)) for row in zip(*value.values(), strict=True)]


def records_from_mlflow_json(payload: Any, max_rows: int) -> list[Any]:
    """The rows of a body in MLflow's scoring protocol (exactly one of its four formats)."""
    if not isinstance(payload, dict):
        raise RequestProblem(
            400,
            "the body must be a JSON object with one of the keys " + ", ".join(MLFLOW_FORMATS),
            'send e.g. {"dataframe_records": [{...row...}]}.',
        )
    given = [key for key in MLFLOW_FORMATS if key in payload]
    unknown = [key for key in payload if key not in MLFLOW_FORMATS and key != "params"]
    if len(given) != 1 or unknown:
        names = given + unknown
        raise RequestProblem(
            400,
            f"the body must hold exactly one of {', '.join(MLFLOW_FORMATS)}; "
            f"it holds {', '.join(names) or 'none of them'}",
            "send the rows under one of these keys only.",
            field=",".join(names),
        )
    if not isinstance(payload.get("params", {}), dict):
        raise RequestProblem(
            400, "params must be an object", "send params as {name: value}, or leave it out."
        )
    key = given[0]
    value = payload[key]
    if key == "dataframe_split":
        if not isinstance(value, dict) or not {"columns", "data"} <= value.keys() <= SPLIT_KEYS:
            raise InputError('must be {"columns": [...], "data": [[...], ...]} (and "index")', key)
        if not isinstance(value.get("index", []), list):
            raise InputError("must be a list (of row labels, not used)", f"{key}.index")
        return _records_from_columns(value["columns"], value["data"], max_rows)
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise InputError("must be a list of row objects", key)
        records = value
    else:
        records = _records_from_tensor_input(value, key)
    _check_rows(len(records), max_rows)
    return records


def _check_rows(count: int, max_rows: int) -> None:
    """Refuse a request of more than ``max_rows`` rows (413), before any row is checked."""
    if count > max_rows:
        raise RequestProblem(
            413,
            f"the request holds {count} rows, more than the {max_rows} a request may hold",
            "send fewer rows per request (or start the server with a larger --max-rows).",
            reason="too_many_rows",
        )


def check_csv_fields(body: bytes, max_rows: int) -> None:
    """Refuse a CSV body whose lines do not all hold as many fields as its header (rows.csv_records
    says why), or that holds more than ``max_rows`` rows."""
    try:
        rows = sum(1 for _ in csv_records(io.StringIO(body.decode("utf-8-sig"))))
    except MiscountedLine as err:
        raise RequestProblem(
            422,
            str(err),
            "send as many fields on every line as the header names columns.",
            field=f"line {err.line}",
            reason="csv_fields",
        ) from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise RequestProblem(
            400, f"the CSV body cannot be read: {err}", _CSV_FIX, reason="bad_csv"
        ) from None
    _check_rows(rows, max_rows)


def _records_from_csv(served: ServedModel, body: bytes, max_rows: int) -> list[dict[str, Any]]:
    """Rows of a CSV body with a header line, as MLflow's scoring server reads text/csv."""
    import pandas as pd

    if not body.strip():
        raise RequestProblem(400, "the body is empty", _CSV_FIX, reason="empty_body")
    check_csv_fields(body, max_rows)
    text = {column: str for column, kind in served.columns.items() if kind == "string"}
    try:
        frame = pd.read_csv(io.BytesIO(body), dtype=text, index_col=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise RequestProblem(
            400,
            f"the CSV body cannot be read: {str(err).splitlines()[0]}",
            _CSV_FIX,
            reason="bad_csv",
        ) from None
    frame = frame.astype(object).where(frame.notna(), None)
    records: list[dict[str, Any]] = frame.to_dict("records")
    return records


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object of the body, refused when it names a key twice (JSON would keep the last)."""
    found = dict(pairs)
    if len(found) != len(pairs):
        twice = next(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise RequestProblem(
            400,
            "an object of the body names this key twice",
            "send each key once per object.",
            field=twice,
            reason="duplicate_key",
        )
    return found


def check_containers(body: bytes, max_rows: int) -> None:
    """Refuse (413) a body with more JSON arrays and objects than a request of ``max_rows``
    rows can hold, before parsing it: the parser holds the interpreter for the whole body, and a
    megabyte of [] is 350,000 lists. Brackets inside strings do not count."""
    limit = max_rows + SPARE_CONTAINERS
    if body.count(b"[") + body.count(b"{") <= limit:
        return
    outside_strings = JSON_STRING.sub(b'""', body)
    found = outside_strings.count(b"[") + outside_strings.count(b"{")
    if found > limit:
        raise RequestProblem(
            413,
            f"the body holds {found} JSON arrays and objects; a request of at most {max_rows} "
            f"rows holds at most {limit}",
            "send fewer rows per request (or start the server with a larger --max-rows).",
            reason="too_many_rows",
        )


def parse_json(body: bytes) -> Any:
    """The JSON of a body; an empty, malformed or key-repeating body is refused (400)."""
    if not body.strip():
        raise RequestProblem(
            400, "the body is empty", "send a JSON row or a list of rows.", reason="empty_body"
        )
    try:
        return json.loads(body, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as err:
        raise RequestProblem(
            400,
            f"the body is not valid JSON: {err}",
            "send a JSON row or a list of rows.",
            reason="bad_json",
        ) from None


def predict_columns(served: ServedModel, body: bytes, max_rows: int) -> dict[str, list[Any]]:
    """The checked columns of a /predict body: a row object or a list of them."""
    check_containers(body, max_rows)
    payload = parse_json(body)
    records = [payload] if isinstance(payload, dict) else payload
    if isinstance(records, list):
        _check_rows(len(records), max_rows)
    try:
        return served.columns_from_records(records)
    except InputError:
        formats = sorted(payload.keys() & set(MLFLOW_FORMATS)) if isinstance(payload, dict) else []
        if formats:
            raise RequestProblem(
                422,
                "the body is in MLflow's scoring protocol, not a row",
                "POST it to /invocations, or send the rows themselves here.",
                field=",".join(formats),
                reason="invalid_row",
            ) from None
        raise


def invocation_columns(
    served: ServedModel, media: str, body: bytes, max_rows: int
) -> dict[str, list[Any]]:
    """The checked columns of an /invocations body: MLflow's JSON formats or CSV."""
    if media == "text/csv":
        records = _records_from_csv(served, body, max_rows)
    else:
        check_containers(body, max_rows)
        records = records_from_mlflow_json(parse_json(body), max_rows)
    return served.columns_from_records(records)
