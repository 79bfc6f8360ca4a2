"""The online inference server: a FastAPI app scoring JSON rows with the served model, MLflow's
scoring protocol at /invocations, health and readiness probes, and a hot switch of the model when
the registry alias it follows moves (`python -m reprise serve`, `make serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import gc
import hmac
import io
import ipaddress
import json
import logging
import os
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from reprise.errors import RepriseError
from reprise.serving import connections, metrics
from reprise.serving import model as served_model
from reprise.serving.connections import Limits
from reprise.serving.model import InputError, ServedModel

log = logging.getLogger(__name__)
access_log = logging.getLogger("reprise.access")

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_CONCURRENCY = 64
# Connections accepted per turn of the event loop too: small, so that a flood of connections
# cannot take the file descriptors before the connection limit closes the extra ones.
DEFAULT_BACKLOG = 128
DEFAULT_POLL_SECONDS = 5.0
# Retry a failed first load this often (the registry or its artifacts may be back soon).
RETRY_SECONDS = 5.0
# Batches up to this many rows are scored on the event loop: a thread hop costs more than they do.
INLINE_ROWS = 64
# Bodies over this size are parsed and checked off the event loop: a megabyte of JSON holding
# many small containers takes the parser (and the garbage collector it wakes) a long time.
INLINE_BYTES = 16 * 1024
GRACEFUL_SHUTDOWN_SECONDS = 10
ENV_PREFIX = connections.ENV_PREFIX
API_KEY_ENV = ENV_PREFIX + "API_KEY"
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}
MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
SPLIT_KEYS = {"columns", "data", "index"}  # pandas' split orient; the index is not used
# Arrays and objects of a body besides its rows: the outer list or object, a format's own,
# dataframe_split's columns and index, the columnar form's one list per column, params.
SPARE_CONTAINERS = 64
JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
MAX_PROBLEM_CHARS = 300
JSON_TYPES = {"integer": "integer", "number": "number", "string": "string"}


@dataclass(frozen=True)
class ModelReference:
    """What to serve: release X.Y.Z, a model URI, or (neither) the registry's prod alias."""

    release: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        if self.release and self.model:
            raise RepriseError(
                f"Both a release ({self.release}) and a model URI ({self.model}) were given.",
                "pass one of --release X.Y.Z and --model URI.",
            )

    @property
    def uri(self) -> str:
        """The model URI asked for (a release's is only known once its manifest is read)."""
        return self.model or served_model.default_uri()

    @property
    def alias(self) -> tuple[str, str] | None:
        """(registered model, alias) when the reference follows an alias, else None."""
        if self.release or not self.uri.startswith("models:/") or "@" not in self.uri:
            return None
        name, alias = self.uri.removeprefix("models:/").split("@", 1)
        return name, alias

    def resolve(self) -> tuple[str, dict[str, Any]]:
        """The model URI and its identity now (RepriseError when the alias points nowhere)."""
        return served_model.resolve(self.release, self.model)

    def __str__(self) -> str:
        return f"release {self.release}" if self.release else self.uri


@dataclass(frozen=True)
class Settings:
    """How the app answers: body and row caps, scoring concurrency, the API key, access logs."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    poll_seconds: float = DEFAULT_POLL_SECONDS
    max_rows: int = DEFAULT_MAX_ROWS
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    api_key: str = ""  # "" for none
    access_log: bool = False
    log_json: bool = False

    def __repr__(self) -> str:  # the key never reaches a log line
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "api_key"}
        return f"Settings({shown}, api_key={'set' if self.api_key else 'none'})"

    @classmethod
    def from_env(cls) -> Settings:
        """The settings `serve` put in REPRISE_SERVE_* (the defaults where unset)."""
        found: dict[str, Any] = {}
        for f in fields(cls):
            value = os.environ.get(ENV_PREFIX + f.name.upper())
            if value is not None:
                default = f.default
                found[f.name] = value == "1" if isinstance(default, bool) else type(default)(value)
        return cls(**found)

    def env(self) -> dict[str, str]:
        """These settings as the REPRISE_SERVE_* variables ``from_env`` reads."""
        return {
            ENV_PREFIX + f.name.upper(): (
                ("1" if value else "0") if isinstance(value, bool) else str(value)
            )
            for f in fields(self)
            for value in [getattr(self, f.name)]
        }


class RequestProblem(Exception):
    """A request the server refuses: HTTP status, what is wrong, how to fix it, and the reason
    it is counted under in /metrics."""

    def __init__(
        self,
        status: int,
        problem: str,
        fix: str,
        field: str = "",
        close: bool = False,
        reason: str = "bad_request",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.problem = problem
        self.fix = fix
        self.field = field
        self.close = close  # the body was not read to its end: the connection cannot be reused
        self.reason = reason
        self.headers = headers or {}
        super().__init__(problem)


class ServingState:
    """The model served now, swapped as one reference when the followed alias moves."""

    def __init__(self, reference: ModelReference, poll_seconds: float) -> None:
        self.reference = reference
        self.poll_seconds = poll_seconds
        self.served: ServedModel | None = None
        self.problem = f"loading {reference}"  # why the server is not ready, or the last failure
        self.lock = asyncio.Lock()

    @property
    def polling(self) -> bool:
        return self.reference.alias is not None and self.poll_seconds > 0

    def _load_if_changed(self) -> ServedModel | None:
        """The model the reference points to now, loaded in full; None when it is served."""
        current = self.served
        if current is None:
            return _frozen(served_model.load(*self.reference.resolve()))
        if self.reference.alias is None:
            return None
        name, alias = self.reference.alias
        try:
            uri, meta = self.reference.resolve()
        except RepriseError as err:
            raise RepriseError(
                f"The registry has no version of '{name}' aliased '{alias}' now "
                f"({err.cause}); version {current.version} is still served.",
                "alias a version again: make promote VERSION=X.Y.Z.",
            ) from None
        if meta.get("version") == current.version:
            return None
        return _frozen(served_model.load(uri, meta))

    async def refresh(self) -> bool:
        """Load what the reference points to if it is not the served model; True on a switch."""
        async with self.lock:
            try:
                new = await asyncio.to_thread(self._load_if_changed)
            except Exception as err:  # the registry or store may be down: keep serving
                line = str(err).splitlines()[0] if str(err) else type(err).__name__
                if line != self.problem:
                    log.warning("%s", line)
                self.problem = line
                metrics.RELOADS.labels("failed").inc()
                raise
            if self.problem and self.served is not None:
                log.info("the registry answers again; version %s is served", self.served.version)
            self.problem = ""
            if new is None:
                metrics.RELOADS.labels("unchanged").inc()
                return False
            old, self.served = self.served, new  # one reference: requests in flight keep `old`
            metrics.RELOADS.labels("switched").inc()
            metrics.serving(new.name, new.version, new.uri)
            if old is None:
                log.info(
                    "serving %s: %s (version %s, threshold %.4f, fast path %s)",
                    self.reference,
                    new.uri,
                    new.version,
                    new.threshold,
                    "on" if new.scorer is not None else "off",
                )
            else:
                log.info(
                    "%s moved: now serving %s (was version %s)",
                    self.reference,
                    new.uri,
                    old.version,
                )
            return True

    async def keep_current(self) -> None:
        """Load the model, then follow the alias every poll_seconds while there is one."""
        while True:
            with contextlib.suppress(Exception):  # refresh logged it; try again later
                await self.refresh()
            if self.served is not None and not self.polling:
                return
            await asyncio.sleep(self.poll_seconds if self.served is not None else RETRY_SECONDS)


def _frozen(served: ServedModel) -> ServedModel:
    """``served``, with every object alive now (the model, MLflow and its imports) kept out of
    the garbage collector's later passes: a request that builds many containers wakes the
    collector, and a pass over this heap stalls the event loop (0.8 s for a 1 MiB body of []s).
    """
    gc.collect()
    gc.freeze()
    return served


# --- input -------------------------------------------------------------------------------------
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


def _records_from_mlflow_json(payload: Any, max_rows: int) -> list[Any]:
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


def _check_csv_fields(body: bytes, max_rows: int) -> None:
    """Refuse a CSV body whose lines do not all hold as many fields as its header: pandas would
    take an extra first field as the row's index and shift every column by one."""
    try:
        lines = csv.reader(io.StringIO(body.decode("utf-8-sig")))
        header = next(lines, [])
        rows = 0
        for fields_ in lines:
            if not fields_:
                continue  # a blank line, skipped as pandas skips it
            rows += 1
            if len(fields_) != len(header):
                raise RequestProblem(
                    422,
                    f"line {lines.line_num} holds {len(fields_)} fields, the header {len(header)}",
                    "send as many fields on every line as the header names columns.",
                    field=f"line {lines.line_num}",
                    reason="csv_fields",
                )
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
    _check_csv_fields(body, max_rows)
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
    return frame.to_dict("records")


_CSV_FIX = "send a header line of column names, then one line per row."
_ROW_FIX = "send each row as an object of column: value with the columns and types of GET /version."


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


def _check_containers(body: bytes, max_rows: int) -> None:
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


def _parse_json(body: bytes) -> Any:
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


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as Content-Length or the bytes read pass ``limit``."""
    too_large = RequestProblem(
        413,
        f"the body is larger than {limit} bytes",
        "send fewer rows per request (or start the server with a larger --max-body-bytes).",
        close=True,
        reason="body_too_large",
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_large
        except ValueError:
            raise RequestProblem(
                400, f"Content-Length {declared!r} is not a number", "send a valid header."
            ) from None
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


# --- responses ---------------------------------------------------------------------------------
def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def _refusal(problem: str, fix: str, field: str = "", row: int | None = None) -> dict[str, Any]:
    """The JSON of a refusal: one line in detail, and its parts for programs."""
    if len(problem) > MAX_PROBLEM_CHARS:  # a huge value quoted back is no help
        problem = problem[:MAX_PROBLEM_CHARS] + "..."
    where = f"row {row}: " if row is not None else ""
    detail = f"{where}{field + ': ' if field else ''}{problem.rstrip('.')}. Fix: {fix}"
    return {"detail": detail, "problem": problem, "field": field or None, "row": row, "fix": fix}


async def _answer(request: Request, handler: Callable[[], Awaitable[Response]]) -> Response:
    """Run an endpoint: refusals become 4xx answers naming the field, bugs a logged 500."""
    try:
        return await handler()
    except RequestProblem as err:
        metrics.REFUSED.labels(err.reason).inc()
        headers = {**err.headers, **({"Connection": "close"} if err.close else {})}
        return _json(_refusal(err.problem, err.fix, err.field), err.status, headers or None)
    except InputError as err:
        metrics.REFUSED.labels("invalid_row").inc()
        return _json(_refusal(err.problem, _ROW_FIX, err.field, err.row), 422)
    except ClientDisconnect:
        log.debug("client went away during %s %s", request.method, request.url.path)
        return Response(status_code=400)
    except Exception:
        log.exception("bug while answering %s %s", request.method, request.url.path)
        return _json(
            _refusal("internal error (logged by the server)", "report it with the log."), 500
        )


def _media_type(request: Request, also: tuple[str, ...] = ()) -> str:
    """The body's media type: JSON (application/json or any +json), or one of ``also``; any
    other, or none, is refused with 415."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return "application/json"
    if media in also:
        return media
    raise RequestProblem(
        415,
        f"content type {media!r} is not served" if media else "the request has no Content-Type",
        f"send Content-Type: {' or '.join(('application/json', *also))}.",
        field="Content-Type",
        reason="content_type",
    )


def _presented_key(request: Request) -> str | None:
    """The API key a request carries: Authorization: Bearer KEY, or X-API-Key: KEY."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key")


def _check_key(request: Request, key: str) -> None:
    """Refuse (401) a request without ``key``; compared in constant time, never logged."""
    given = _presented_key(request)
    # header values arrive as bytes decoded as latin-1: compare the bytes the client sent
    if given is not None and hmac.compare_digest(given.encode("latin-1"), key.encode()):
        return
    raise RequestProblem(
        401,
        "no API key was given" if given is None else "the API key is not the server's",
        "send the server's key as Authorization: Bearer KEY or X-API-Key: KEY.",
        field="Authorization",
        reason="unauthorized",
        headers={"WWW-Authenticate": "Bearer"},
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or localhost) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _predict_columns(served: ServedModel, body: bytes, max_rows: int) -> dict[str, list[Any]]:
    """The checked columns of a /predict body: a row object or a list of them."""
    _check_containers(body, max_rows)
    payload = _parse_json(body)
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


def _invocation_columns(
    served: ServedModel, media: str, body: bytes, max_rows: int
) -> dict[str, list[Any]]:
    """The checked columns of an /invocations body: MLflow's JSON formats or CSV."""
    if media == "text/csv":
        records = _records_from_csv(served, body, max_rows)
    else:
        _check_containers(body, max_rows)
        records = _records_from_mlflow_json(_parse_json(body), max_rows)
    return served.columns_from_records(records)


def _score_now(served: ServedModel, columns: dict[str, list[Any]]) -> tuple[list[float], list[int]]:
    """(probabilities, labels) of checked columns, as Python lists."""
    if served.scorer is not None:
        proba = served.scorer.predict_proba(columns)
        return proba.tolist(), served.scorer.predict(proba).tolist()
    import pandas as pd

    proba, labels = served.score(served.typed(pd.DataFrame(columns)))
    return proba.tolist(), labels.tolist()


async def _checked_and_scored(
    served: ServedModel, body: bytes, columns_of: Callable[[], dict[str, list[Any]]]
) -> tuple[int, list[float], list[int]]:
    """(rows, probabilities, labels) of a body; a large body is parsed, checked and scored off
    the event loop, a large batch scored off it, so /health answers meanwhile."""

    def work(columns: dict[str, list[Any]] | None = None) -> tuple[int, list[float], list[int]]:
        columns = columns_of() if columns is None else columns
        return len(next(iter(columns.values()))), *_score_now(served, columns)

    if len(body) > INLINE_BYTES:
        return await run_in_threadpool(work)
    columns = columns_of()
    if len(next(iter(columns.values()))) <= INLINE_ROWS:
        return work(columns)
    return await run_in_threadpool(work, columns)


class Observed:
    """ASGI middleware: each request's count and latency by endpoint and status in /metrics,
    and one access log line per request when asked (plain, or JSON with --log-json)."""

    def __init__(self, app: Any, endpoints: set[str], log_requests: bool) -> None:
        self.app = app
        self.endpoints = endpoints
        self.log_requests = log_requests
        # (endpoint, method, status) -> its counter and histogram: a label lookup costs more
        # than the count itself
        self.series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - start
            # unknown paths share one label: a scanner must not grow the metrics without end
            endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
            method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
            key = (endpoint, method, status)
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = (
                    metrics.REQUESTS.labels(endpoint, method, str(status)),
                    metrics.LATENCY.labels(endpoint, str(status)),
                )
            series[0].inc()
            series[1].observe(seconds)
            if self.log_requests:
                client = scope.get("client") or ("", 0)
                access_log.info(
                    '%s "%s %s" %d %.1f ms',
                    client[0],
                    method,
                    scope["path"],
                    status,
                    seconds * 1000,
                    extra={
                        "http": {
                            "client": client[0],
                            "method": method,
                            "path": scope["path"],
                            "status": status,
                            "duration_ms": round(seconds * 1000, 3),
                        }
                    },
                )


# --- the app -----------------------------------------------------------------------------------
ROW_REF = {"$ref": "#/components/schemas/Row"}
REFUSAL_REF = {"$ref": "#/components/schemas/Refusal"}
PREDICT_EXAMPLE = {
    "predictions": [{"label": 1, "probability": 0.8312}],
    "model_version": "3",
    "threshold": 0.4127,
}
REFUSAL_EXAMPLE = {
    "detail": "row 0: age: missing column. Fix: " + _ROW_FIX,
    "problem": "missing column",
    "field": "age",
    "row": 0,
    "fix": _ROW_FIX,
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


def _content(schema: dict[str, Any], media: str = "application/json", **extra: Any) -> dict:
    return {"content": {media: {"schema": schema, **extra}}}


def _refused(description: str) -> dict[str, Any]:
    return {"description": description, **_content(REFUSAL_REF, example=REFUSAL_EXAMPLE)}


NOT_READY = {
    "description": "No model loaded yet",
    **_content({"$ref": "#/components/schemas/NotReady"}),
}


def _scoring_responses(ok: dict[str, Any], example: dict[str, Any]) -> dict[int | str, Any]:
    return {
        200: {"description": "Scored", **_content(ok, example=example)},
        400: _refused("Empty body, malformed JSON or CSV, or a key named twice in an object"),
        401: _refused("The server has an API key and the request did not carry it"),
        413: _refused("Body over --max-body-bytes, or more rows than --max-rows"),
        415: _refused("A Content-Type the endpoint does not read"),
        422: _refused("A row that does not fit the model's input schema"),
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
            "minimum": -served_model.INT64,
            "maximum": served_model.INT64 - 1,
        }
    return {"type": ["number", "null"] if imputed else "number"}


def _columns_schemas(served: ServedModel) -> dict[str, dict[str, Any]]:
    """Each input column's schema, in signature order."""
    return {
        column: _column_schema(kind, column in served.imputed)
        for column, kind in served.columns.items()
    }


def _row_schema(served: ServedModel | None) -> dict[str, Any]:
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


def _csv_schema(served: ServedModel | None, max_rows: int) -> dict[str, Any]:
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


def _invocations_schema(served: ServedModel | None, rows: dict[str, Any]) -> dict[str, Any]:
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


def create_app(reference: ModelReference, settings: Settings | None = None) -> FastAPI:
    """The inference app serving ``reference``; the model loads after the server starts."""
    settings = settings or Settings()
    state = ServingState(reference, settings.poll_seconds)
    in_flight = 0  # scoring requests being answered now (one event loop: no lock needed)
    rows_scored = {path: metrics.ROWS_SCORED.labels(path) for path in ("/predict", "/invocations")}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        asyncio.get_running_loop().set_exception_handler(connections.handle_loop_exception)
        task = asyncio.create_task(state.keep_current())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(
        title="Reprise inference",
        summary="Scores rows with the served model; MLflow's scoring protocol at /invocations.",
        version="1",
        lifespan=lifespan,
    )
    app.state.serving = state
    app.state.settings = settings
    rows_doc = {"type": "array", "minItems": 1, "maxItems": settings.max_rows}
    key_doc = " Needs the API key (Authorization: Bearer KEY or X-API-Key: KEY)."
    needs_key = key_doc if settings.api_key else ""

    def not_ready() -> Response:
        return _json(
            {
                "ready": False,
                "detail": f"no model loaded yet ({state.problem}). "
                "Fix: wait, or read the server's log for why it cannot load.",
            },
            503,
        )

    def identity(served: ServedModel) -> dict[str, Any]:
        return {
            **served.describe(),
            "reference": str(reference),
            "follows_alias": state.polling,
            "poll_seconds": settings.poll_seconds if state.polling else None,
            "inputs": served.columns,
        }

    async def scoring(
        request: Request,
        endpoint: str,
        columns_of: Callable[[ServedModel, str, bytes], dict[str, list[Any]]],
        answer: Callable[[ServedModel, list[float], list[int]], dict[str, Any]],
    ) -> Response:
        """A scoring endpoint: key, content type, concurrency, body, checks, score."""

        async def handle() -> Response:
            nonlocal in_flight
            if settings.api_key:
                _check_key(request, settings.api_key)
            media = _media_type(request, ("text/csv",) if endpoint == "/invocations" else ())
            served = state.served
            if served is None:
                return not_ready()
            if in_flight >= settings.max_concurrency:
                raise RequestProblem(
                    503,
                    f"the server is busy: {in_flight} requests are being scored",
                    "retry after a second, or start the server with more --workers.",
                    reason="busy",
                    headers={"Retry-After": "1"},
                    close=True,
                )
            in_flight += 1
            try:
                body = await _read_body(request, settings.max_body_bytes)
                rows, proba, labels = await _checked_and_scored(
                    served, body, lambda: columns_of(served, media, body)
                )
            finally:
                in_flight -= 1
            rows_scored[endpoint].inc(rows)
            return _json(answer(served, proba, labels))

        return await _answer(request, handle)

    @app.get(
        "/health",
        summary="The process is up",
        responses={200: _content({"type": "object", "properties": {"status": {"const": "ok"}}})},
    )
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get(
        "/ping",
        summary="MLflow's health path: 200 once a model is loaded, else 503",
        responses={
            200: {"description": "A model is loaded", **_content({"type": "string"}, "text/plain")},
            503: NOT_READY,
        },
    )
    async def ping() -> Response:
        return not_ready() if state.served is None else Response("\n", media_type="text/plain")

    @app.get(
        "/ready",
        summary="A model is loaded: 200 with it, else 503",
        responses={200: _content({"$ref": "#/components/schemas/Identity"}), 503: NOT_READY},
    )
    async def ready() -> Response:
        served = state.served
        if served is None:
            return not_ready()
        return _json({"ready": True, **served.describe()})

    @app.get(
        "/version",
        summary="What is served: release, model version, commits, threshold",
        responses={200: _content({"$ref": "#/components/schemas/Identity"}), 503: NOT_READY},
    )
    async def version() -> Response:
        served = state.served
        return not_ready() if served is None else _json(identity(served))

    @app.get(
        "/metrics",
        summary="Prometheus metrics of this server process",
        responses={200: _content({"type": "string"}, "text/plain")},
    )
    async def metrics_page() -> Response:
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    @app.post(
        "/predict",
        summary="Label and probability per row",
        description="A row object or a list of them (column -> value), as application/json. "
        "Labels are the model's classes at its decision threshold; probability is that of "
        f"class 1. At most --max-rows ({settings.max_rows}) rows per request.{needs_key}",
        openapi_extra={
            "requestBody": {
                "required": True,
                **_content({"oneOf": [ROW_REF, {**rows_doc, "items": ROW_REF}]}),
            }
        },
        responses=_scoring_responses(
            {
                "type": "object",
                "properties": {
                    "predictions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "label": {"type": "integer"},
                                "probability": {"type": "number"},
                            },
                        },
                    },
                    "model_version": {"type": ["string", "null"]},
                    "threshold": {"type": "number"},
                },
                "required": ["predictions", "model_version", "threshold"],
            },
            PREDICT_EXAMPLE,
        ),
    )
    async def predict(request: Request) -> Response:
        return await scoring(
            request,
            "/predict",
            lambda served, _, body: _predict_columns(served, body, settings.max_rows),
            lambda served, proba, labels: {
                "predictions": [
                    {"label": label, "probability": p}
                    for label, p in zip(labels, proba, strict=True)
                ],
                "model_version": served.version,
                "threshold": served.threshold,
            },
        )

    @app.post(
        "/invocations",
        summary="MLflow's scoring protocol (as `mlflow models serve`)",
        description="JSON with exactly one of dataframe_split, dataframe_records, instances, "
        "inputs; or text/csv with a header line and as many fields on every line. Answers the "
        f"labels at the model's threshold. At most --max-rows ({settings.max_rows}) rows per "
        f"request.{needs_key}",
        openapi_extra={"requestBody": {"required": True, "content": {}}},
        responses=_scoring_responses(
            {
                "type": "object",
                "properties": {"predictions": {"type": "array", "items": {"type": "integer"}}},
                "required": ["predictions"],
            },
            {"predictions": [1, 0]},
        ),
    )
    async def invocations(request: Request) -> Response:
        return await scoring(
            request,
            "/invocations",
            lambda served, media, body: _invocation_columns(served, media, body, settings.max_rows),
            lambda served, proba, labels: {"predictions": labels},
        )

    reload_refusals = (
        {401: _refused("The request did not carry the server's API key")}
        if settings.api_key
        else {403: _refused("No API key is set and the request came from another host")}
    )

    @app.post(
        "/reload",
        summary="Check the followed alias now; switch if it moved",
        description="Needs the API key when the server has one; without one, only clients on "
        "the server's own host (loopback) may call it.",
        responses={
            200: _content({"$ref": "#/components/schemas/Identity"}),
            **reload_refusals,
            409: _refused("The server serves a fixed model: there is no alias to follow"),
            503: _refused("The registry cannot be read, or its alias points nowhere now"),
        },
    )
    async def reload(request: Request) -> Response:
        async def handle() -> Response:
            if settings.api_key:
                _check_key(request, settings.api_key)
            elif not is_loopback(request.client.host if request.client else ""):
                raise RequestProblem(
                    403,
                    "POST /reload from another host needs an API key, and the server has none",
                    "start the server with an API key (--api-key or REPRISE_SERVE_API_KEY), "
                    "or call /reload on the server's host.",
                    reason="forbidden",
                )
            if reference.alias is None and state.served is not None:
                raise RequestProblem(
                    409,
                    f"the server serves a fixed model ({reference}): there is nothing to follow",
                    "start it with --model models:/name@alias (the default: prod) to follow one.",
                    reason="fixed_model",
                )
            try:
                switched = await state.refresh()
            except RepriseError as err:
                raise RequestProblem(503, err.cause, err.fix, reason="registry") from None
            except Exception as err:
                raise RequestProblem(
                    503,
                    str(err).splitlines()[0],
                    "fix the registry, then POST /reload again.",
                    reason="registry",
                ) from None
            return _json({"switched": switched, **identity(state.served)})  # type: ignore[arg-type]

        return await _answer(request, handle)

    @app.exception_handler(Exception)
    async def bug(request: Request, err: Exception) -> Response:
        log.error("bug while answering %s %s: %r", request.method, request.url.path, err)
        return _json(_refusal("internal error (logged)", "report it with the server log."), 500)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
        document = app.openapi_schema
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(SCHEMAS)
        served = state.served  # the served model's signature, as it is now
        schemas["Row"] = _row_schema(served)
        body = document["paths"]["/invocations"]["post"]["requestBody"]
        body["content"] = {
            **_content(_invocations_schema(served, rows_doc))["content"],
            "text/csv": {"schema": _csv_schema(served, settings.max_rows)},
        }
        if settings.api_key:
            document["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            for path in ("/predict", "/invocations", "/reload"):
                document["paths"][path]["post"]["security"] = [{"bearer": []}, {"apiKey": []}]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    endpoints = {route.path for route in app.routes if hasattr(route, "path")}
    app.add_middleware(Observed, endpoints=endpoints, log_requests=settings.access_log)
    return app


def app_from_env() -> FastAPI:
    """The app as `serve` configured it through REPRISE_SERVE_* (each uvicorn worker calls it)."""
    env = os.environ
    reference = ModelReference(
        env.get(ENV_PREFIX + "RELEASE") or None, env.get(ENV_PREFIX + "MODEL") or None
    )
    return create_app(reference, Settings.from_env())


# --- the command -------------------------------------------------------------------------------
class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line (time, level, logger, message; an access line's fields)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if hasattr(record, "http"):
            line.update(record.http)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def _log_config(access: bool, as_json: bool = False) -> dict[str, Any]:
    """The platform's log format for uvicorn, the workers' own loggers included; the access
    lines come from the app (reprise.access), which knows each request's duration."""
    formatter = (
        {"()": JsonLogFormatter}
        if as_json
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s", "datefmt": "%H:%M:%S"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "uvicorn": {"level": "WARNING"},
            "uvicorn.access": {"level": "WARNING"},
            "reprise.access": {"level": "INFO" if access else "WARNING"},
        },
    }


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise RepriseError(
                f"Cannot listen on {host}:{port}: {err.strerror or err}.",
                "pass another --port (make serve PORT=...) or stop what holds this one.",
            ) from None


def _check_model(uri: str, meta: dict[str, Any]) -> None:
    """Fail now, not in every worker, when the model cannot be found or has no signature."""
    import mlflow

    pinned = f"models:/{meta['name']}/{meta['version']}" if meta.get("version") else uri
    try:
        info = mlflow.models.get_model_info(pinned)
    except Exception as err:
        raise RepriseError(
            f"Model {pinned} cannot be found: {str(err).splitlines()[0]}",
            "check the URI (models:/name/version, models:/name@alias, runs:/id/model) "
            "and MLFLOW_TRACKING_URI.",
        ) from None
    if info.signature is None or info.signature.inputs is None:
        raise RepriseError(f"Model {pinned} has no input signature.", "log it with one.")


def serve(
    release: str | None,
    model: str | None,
    host: str,
    port: int,
    workers: int,
    settings: Settings,
    limits: Limits,
    backlog: int = DEFAULT_BACKLOG,
) -> int:
    """Serve the model over HTTP until SIGTERM / Ctrl-C (`python -m reprise serve`)."""
    import uvicorn

    for name, value, low in (
        ("--port", port, 1),
        ("--workers", workers, 1),
        ("--max-body-bytes", settings.max_body_bytes, 1),
        ("--max-rows", settings.max_rows, 1),
        ("--max-concurrency", settings.max_concurrency, 1),
        ("--max-connections", limits.max_connections, 1),
        ("--backlog", backlog, 1),
    ):
        if value < low:
            raise RepriseError(f"{name} {value} is out of range.", f"pass at least {low}.")
    for name, seconds in (
        ("--poll-seconds", settings.poll_seconds),
        ("--keep-alive-seconds", limits.keep_alive_seconds),
        ("--read-timeout-seconds", limits.read_timeout_seconds),
    ):
        if seconds < 0 or (seconds == 0 and name != "--poll-seconds"):
            raise RepriseError(f"{name} {seconds:g} is out of range.", "pass a positive number.")
    connections.reserve_descriptors(limits.max_connections, backlog)
    reference = ModelReference(release or None, model or None)
    uri, meta = reference.resolve()  # RepriseError, e.g. nothing aliased prod
    _check_model(uri, meta)
    _check_port(host, port)
    if not settings.api_key and not is_loopback(host):
        log.warning(
            "listening on %s without an API key: anyone who reaches it can score; POST /reload "
            "is refused to other hosts. Set REPRISE_SERVE_API_KEY (or --api-key) to require one.",
            host,
        )
    os.environ.update(
        {
            ENV_PREFIX + "RELEASE": reference.release or "",
            ENV_PREFIX + "MODEL": reference.model or "",
            **settings.env(),
            **limits.env(),
        }
    )
    following = (
        f", following it every {settings.poll_seconds:g} s"
        if reference.alias and settings.poll_seconds
        else ""
    )
    log.info(
        "serving %s (now %s%s) on http://%s:%d with %d worker(s), API key %s; API docs at /docs",
        reference,
        f"version {meta['version']}" if meta.get("version") else uri,
        following,
        host,
        port,
        workers,
        "required" if settings.api_key else "off",
    )
    uvicorn.run(
        "reprise.serving.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=connections.GuardedH11Protocol,
        log_config=_log_config(settings.access_log, settings.log_json),
        log_level="info" if settings.access_log else "warning",
        access_log=False,
        backlog=backlog,
        timeout_keep_alive=limits.keep_alive_seconds,  # type: ignore[arg-type]
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return 0
