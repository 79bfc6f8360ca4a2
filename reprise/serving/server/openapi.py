"""The OpenAPI document of the app: its fixed schemas and examples, and the parts drawn from the
served model's signature (rows, MLflow's formats, CSV bodies)."""

from __future__ import annotations

import re
from typing import Any

from reprise.serving.model import ServedModel
from reprise.serving.rows import INT64
from reprise.serving.server.refusals import ROW_FIX

ROW_REF = {"$ref": "#/components/schemas/Row"}
REFUSAL_REF = {"$ref": "#/components/schemas/Refusal"}
PREDICT_EXAMPLE = {
    "predictions": [{"label": 1, "probability": 0.8312}],
    "model_version": "3",
    "threshold": 0.4127,
}
REFUSAL_EXAMPLE = {
    "detail": "row 0: age: missing column. Fix: " + ROW_FIX,
    "problem": "missing column",
    "field": "age",
    "row": 0,
    "fix": ROW_FIX,
}
SCHEMAS: dict[str, Any] = {
    "Refusal": {
        "type": "object",
        "description": "A refused request: detail is one line, cause and fix.",
        "properties": {
            "detail": {"type": "string"},
            "problem": {"type": "string"},
            "field": {"type": ["string", "null"]},
            "row": {"type": ["integer", "null"]},
            "fix": {"type": "string"},
        },
        "required": ["detail", "problem", "field", "row", "fix"],
    },
    "NotReady": {
        "type": "object",
        "description": "No model is loaded yet, or the server is busy: detail says which.",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    },
    "Identity": {
        "type": "object",
        "description": "What is served: model URI and version, release, commits, threshold.",
        "properties": {
            "model_uri": {"type": "string"},
            "registered_model": {"type": ["string", "null"]},
            "model_version": {"type": ["string", "null"]},
            "release": {"type": ["string", "null"]},
            "threshold": {"type": "number"},
            "fast_path": {"type": "boolean"},
        },
        "required": ["model_uri", "model_version", "threshold"],
    },
}


def content(
    schema: dict[str, Any], media: str = "application/json", **extra: Any
) -> dict[str, Any]:
    """An OpenAPI content object: ``schema`` (and e.g. an example) under one media type."""
    return {"content": {media: {"schema": schema, **extra}}}


def refused(description: str) -> dict[str, Any]:
    """A refusal's response: the Refusal schema, with an example."""
    return {"description": description, **content(REFUSAL_REF, example=REFUSAL_EXAMPLE)}


NOT_READY = {
    "description": "No model loaded yet",
    **content({"$ref": "#/components/schemas/NotReady"}),
}


def scoring_responses(ok: dict[str, Any], example: dict[str, Any]) -> dict[int | str, Any]:
    """The responses of a scoring endpoint: ``ok`` with its example, and each refusal."""
    return {
        200: {"description": "Scored", **content(ok, example=example)},
        400: refused("Empty body, malformed JSON or CSV, or a key named twice in an object"),
        401: refused("The server has an API key and the request did not carry it"),
        413: refused("Body over --max-body-bytes, or more rows than --max-rows"),
        415: refused("A Content-Type the endpoint does not read"),
        422: refused("A row that does not fit the model's input schema"),
        503: {
            **NOT_READY,
            "description": "No model loaded yet, or --max-concurrency requests in flight",
        },
    }


def _column_schema(kind: str, imputed: bool = False) -> dict[str, Any]:
    """A column's values; null too for text, and for a number the model imputes."""
    if kind == "string":
        return {"type": ["string", "null"]}
    if kind == "integer":  # held as int64
        return {
            "type": ["integer", "null"] if imputed else "integer",
            "minimum": -INT64,
            "maximum": INT64 - 1,
        }
    return {"type": ["number", "null"] if imputed else "number"}


def _columns_schemas(served: ServedModel) -> dict[str, dict[str, Any]]:
    """Each input column's schema, in signature order."""
    return {
        column: _column_schema(kind, column in served.imputed)
        for column, kind in served.columns.items()
    }


def row_schema(served: ServedModel | None) -> dict[str, Any]:
    """A row object of the served model's columns (any object before a model is loaded)."""
    if served is None:
        return {"type": "object", "description": "A row: column -> value (see GET /version)."}
    return {
        "type": "object",
        "properties": _columns_schemas(served),
        "required": list(served.columns),
        "additionalProperties": False,
    }


# One CSV field of each kind, as the OpenAPI document describes them (text: no comma, quote or
# line break, so a field needs no quoting; empty is a missing value).
CSV_FIELDS = {
    "integer": "-?[0-9]{1,18}",
    "number": r"-?[0-9]{1,15}(\.[0-9]{1,6})?",
    "string": "[A-Za-z ._-]{0,30}",
}


def csv_schema(served: ServedModel | None, max_rows: int) -> dict[str, Any]:
    """A CSV body as a string: a header line naming the model's columns, then 1 to max_rows
    lines of as many fields (the pattern shows the signature's order; any order is read)."""
    if served is None:
        return {"type": "string", "minLength": 1}
    header = ",".join(re.escape(column) for column in served.columns)
    line = ",".join(
        f"({CSV_FIELDS[kind]})?" if column in served.imputed else CSV_FIELDS[kind]
        for column, kind in served.columns.items()
    )
    return {"type": "string", "pattern": f"^{header}\n({line}\n){{1,{max_rows}}}$"}


def invocations_schema(served: ServedModel | None, rows: dict[str, Any]) -> dict[str, Any]:
    """One of MLflow's formats, each as its own object (params, MLflow's, is allowed and
    ignored). dataframe_split's columns may come in any order; the schema shows the model's."""
    if served is None:
        split: dict[str, Any] = {"type": "object", "required": ["columns", "data"]}
    else:
        names = list(served.columns)
        split = {
            "type": "object",
            "properties": {
                "columns": {"const": names},
                "index": {"type": "array"},
                "data": {
                    **rows,
                    "items": {
                        "type": "array",
                        "prefixItems": list(_columns_schemas(served).values()),
                        "items": False,
                        "minItems": len(names),
                    },
                },
            },
            "required": ["columns", "data"],
            "additionalProperties": False,
        }
    formats = {
        "dataframe_split": split,
        "dataframe_records": {**rows, "items": ROW_REF},
        "instances": {**rows, "items": ROW_REF},
        "inputs": {**rows, "items": ROW_REF},
    }
    return {
        "oneOf": [
            {
                "type": "object",
                "properties": {key: value, "params": {"type": "object"}},
                "required": [key],
                "additionalProperties": False,
            }
            for key, value in formats.items()
        ]
    }


def rows_schema(max_rows: int) -> dict[str, Any]:
    """A request's list of rows: 1 to ``max_rows`` of them."""
    return {"type": "array", "minItems": 1, "maxItems": max_rows}


def with_model(
    document: dict[str, Any], served: ServedModel | None, max_rows: int, api_key: str
) -> dict[str, Any]:
    """The app's OpenAPI ``document`` with the schemas of the model served now (a switch changes
    them) and, when the server has an API key, the ways to present it."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(SCHEMAS)
    schemas["Row"] = row_schema(served)
    body = document["paths"]["/invocations"]["post"]["requestBody"]
    body["content"] = {
        **content(invocations_schema(served, rows_schema(max_rows)))["content"],
        "text/csv": {"schema": csv_schema(served, max_rows)},
    }
    if api_key:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        for path in ("/predict", "/invocations", "/reload"):
            document["paths"][path]["post"]["security"] = [{"bearer": []}, {"apiKey": []}]
    return document
