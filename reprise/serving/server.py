"""The online inference server: a FastAPI app scoring JSON rows with the served model, MLflow's
scoring protocol at /invocations, health and readiness probes, and a hot switch of the model when
the registry alias it follows moves (`python -m reprise serve`, `make serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from reprise.errors import RepriseError
from reprise.serving import model as served_model
from reprise.serving.model import InputError, ServedModel

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_POLL_SECONDS = 5.0
# Retry a failed first load this often (the registry or its artifacts may be back soon).
RETRY_SECONDS = 5.0
# Batches up to this many rows are scored on the event loop: a thread hop costs more than they do.
INLINE_ROWS = 64
GRACEFUL_SHUTDOWN_SECONDS = 10
ENV_PREFIX = "REPRISE_SERVE_"
MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
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
        return self.model or f"models:/{served_model.DEFAULT_NAME}@{served_model.PROD_ALIAS}"

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


class RequestProblem(Exception):
    """A request the server refuses: HTTP status, what is wrong, and how to fix it."""

    def __init__(
        self, status: int, problem: str, fix: str, field: str = "", close: bool = False
    ) -> None:
        self.status = status
        self.problem = problem
        self.fix = fix
        self.field = field
        self.close = close  # the body was not read to its end: the connection cannot be reused
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
            return served_model.load(*self.reference.resolve())
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
        return served_model.load(uri, meta)

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
                raise
            if self.problem and self.served is not None:
                log.info("the registry answers again; version %s is served", self.served.version)
            self.problem = ""
            if new is None:
                return False
            old, self.served = self.served, new  # one reference: requests in flight keep `old`
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


# --- input -------------------------------------------------------------------------------------
def _records_from_columns(columns: Any, data: Any) -> list[dict[str, Any]]:
    """Rows of MLflow's dataframe_split: {"columns": [...], "data": [[...], ...]}."""
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InputError("must be a list of column names", "dataframe_split.columns")
    if len(set(columns)) != len(columns):
        raise InputError("names a column twice", "dataframe_split.columns")
    if not isinstance(data, list):
        raise InputError("must be a list of rows (lists of values)", "dataframe_split.data")
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


def _records_from_mlflow_json(payload: Any) -> list[Any]:
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
    key = given[0]
    value = payload[key]
    if key == "dataframe_split":
        if not isinstance(value, dict) or "columns" not in value or "data" not in value:
            raise InputError('must be {"columns": [...], "data": [[...], ...]}', key)
        return _records_from_columns(value["columns"], value["data"])
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise InputError("must be a list of row objects", key)
        return value
    return _records_from_tensor_input(value, key)


def _records_from_csv(served: ServedModel, body: bytes) -> list[dict[str, Any]]:
    """Rows of a CSV body with a header line, as MLflow's scoring server reads text/csv."""
    import pandas as pd

    text = {column: str for column, kind in served.columns.items() if kind == "string"}
    try:
        frame = pd.read_csv(io.BytesIO(body), dtype=text)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise RequestProblem(
            400, f"the CSV body cannot be read: {str(err).splitlines()[0]}", _CSV_FIX
        ) from None
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict("records")


_CSV_FIX = "send a header line of column names, then one line per row."
_ROW_FIX = "send each row as an object of column: value with the columns and types of GET /version."


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise RequestProblem(400, "the body is empty", "send a JSON row or a list of rows.")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as err:
        raise RequestProblem(
            400, f"the body is not valid JSON: {err}", "send a JSON row or a list of rows."
        ) from None


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as Content-Length or the bytes read pass ``limit``."""
    too_large = RequestProblem(
        413,
        f"the body is larger than {limit} bytes",
        "send fewer rows per request (or start the server with a larger --max-body-bytes).",
        close=True,
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
        headers = {"Connection": "close"} if err.close else None
        return _json(_refusal(err.problem, err.fix, err.field), err.status, headers)
    except InputError as err:
        return _json(_refusal(err.problem, _ROW_FIX, err.field, err.row), 422)
    except ClientDisconnect:
        log.debug("client went away during %s %s", request.method, request.url.path)
        return Response(status_code=400)
    except Exception:
        log.exception("bug while answering %s %s", request.method, request.url.path)
        return _json(
            _refusal("internal error (logged by the server)", "report it with the log."), 500
        )


async def _score(
    served: ServedModel, columns: dict[str, list[Any]]
) -> tuple[list[float], list[int]]:
    """(probabilities, labels) as Python lists; big batches are scored off the event loop."""

    def score() -> tuple[list[float], list[int]]:
        if served.scorer is not None:
            proba = served.scorer.predict_proba(columns)
            return proba.tolist(), served.scorer.predict(proba).tolist()
        import pandas as pd

        proba, labels = served.score(served.typed(pd.DataFrame(columns)))
        return proba.tolist(), labels.tolist()

    rows = len(next(iter(columns.values())))
    return score() if rows <= INLINE_ROWS else await run_in_threadpool(score)


# --- the app -----------------------------------------------------------------------------------
ROW_REF = {"$ref": "#/components/schemas/Row"}
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


def _doc_responses(example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    refusal = {"content": {"application/json": {"example": REFUSAL_EXAMPLE}}}
    return {
        200: {"content": {"application/json": {"example": example}}},
        400: {"description": "Empty body or malformed JSON", **refusal},
        413: {"description": "Body over the server's --max-body-bytes", **refusal},
        422: {"description": "A row that does not fit the model's input schema", **refusal},
        503: {"description": "No model loaded yet"},
    }


def _row_schema(served: ServedModel | None) -> dict[str, Any]:
    if served is None:
        return {"type": "object", "description": "A row: column -> value (see GET /version)."}
    properties = {
        column: {"type": JSON_TYPES[kind], **({"nullable": True} if kind == "string" else {})}
        for column, kind in served.columns.items()
    }
    return {
        "type": "object",
        "properties": properties,
        "required": list(served.columns),
        "additionalProperties": False,
    }


def create_app(
    reference: ModelReference,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
) -> FastAPI:
    """The inference app serving ``reference``; the model loads after the server starts."""
    state = ServingState(reference, poll_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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
            "poll_seconds": poll_seconds if state.polling else None,
            "inputs": served.columns,
        }

    @app.get("/health", summary="The process is up")
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/ready", summary="A model is loaded: 200 with it, else 503")
    async def ready() -> Response:
        served = state.served
        if served is None:
            return not_ready()
        return _json({"ready": True, **served.describe()})

    @app.get("/version", summary="What is served: release, model version, commits, threshold")
    async def version() -> Response:
        served = state.served
        return not_ready() if served is None else _json(identity(served))

    @app.post(
        "/predict",
        summary="Label and probability per row",
        description="A row object or a list of them (column -> value). Labels are the model's "
        "classes at its decision threshold; probability is that of class 1.",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"oneOf": [ROW_REF, {"type": "array", "items": ROW_REF}]}
                    }
                },
            }
        },
        responses=_doc_responses(PREDICT_EXAMPLE),
    )
    async def predict(request: Request) -> Response:
        async def handle() -> Response:
            served = state.served
            if served is None:
                return not_ready()
            payload = _parse_json(await _read_body(request, max_body_bytes))
            try:
                columns = served.columns_from_records(
                    [payload] if isinstance(payload, dict) else payload
                )
            except InputError:
                is_row = isinstance(payload, dict)
                formats = sorted(payload.keys() & set(MLFLOW_FORMATS)) if is_row else []
                if formats:
                    raise RequestProblem(
                        422,
                        "the body is in MLflow's scoring protocol, not a row",
                        "POST it to /invocations, or send the rows themselves here.",
                        field=",".join(formats),
                    ) from None
                raise
            proba, labels = await _score(served, columns)
            return _json(
                {
                    "predictions": [
                        {"label": label, "probability": p}
                        for label, p in zip(labels, proba, strict=True)
                    ],
                    "model_version": served.version,
                    "threshold": served.threshold,
                }
            )

        return await _answer(request, handle)

    @app.post(
        "/invocations",
        summary="MLflow's scoring protocol (as `mlflow models serve`)",
        description="JSON with exactly one of dataframe_split, dataframe_records, instances, "
        "inputs; or text/csv with a header line. Answers the labels at the model's threshold.",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "dataframe_split": {
                                    "type": "object",
                                    "properties": {
                                        "columns": {"type": "array", "items": {"type": "string"}},
                                        "data": {"type": "array", "items": {"type": "array"}},
                                    },
                                },
                                "dataframe_records": {"type": "array", "items": ROW_REF},
                                "instances": {"type": "array", "items": ROW_REF},
                                "inputs": {"type": "array", "items": ROW_REF},
                            },
                        }
                    },
                    "text/csv": {"schema": {"type": "string"}},
                },
            }
        },
        responses=_doc_responses({"predictions": [1, 0]}),
    )
    async def invocations(request: Request) -> Response:
        async def handle() -> Response:
            served = state.served
            if served is None:
                return not_ready()
            content_type = request.headers.get("content-type", "application/json")
            media = content_type.split(";", 1)[0].strip().lower()
            body = await _read_body(request, max_body_bytes)
            if media == "text/csv":
                if not body.strip():
                    raise RequestProblem(400, "the body is empty", _CSV_FIX)
                records = await run_in_threadpool(_records_from_csv, served, body)
            elif media == "application/json" or media.endswith("+json"):
                records = _records_from_mlflow_json(_parse_json(body))
            else:
                raise RequestProblem(
                    415,
                    f"content type {media!r} is not served",
                    "send Content-Type: application/json or text/csv.",
                    field="Content-Type",
                )
            _, labels = await _score(served, served.columns_from_records(records))
            return _json({"predictions": labels})

        return await _answer(request, handle)

    @app.post("/reload", summary="Check the followed alias now; switch if it moved")
    async def reload(request: Request) -> Response:
        async def handle() -> Response:
            if reference.alias is None and state.served is not None:
                raise RequestProblem(
                    409,
                    f"the server serves a fixed model ({reference}): there is nothing to follow",
                    "start it with --model models:/name@alias (the default: prod) to follow one.",
                )
            try:
                switched = await state.refresh()
            except RepriseError as err:
                raise RequestProblem(503, err.cause, err.fix) from None
            except Exception as err:
                raise RequestProblem(
                    503, str(err).splitlines()[0], "fix the registry, then POST /reload again."
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
        schemas = app.openapi_schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["Row"] = _row_schema(state.served)  # the served model's signature, as it is now
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """The app as `serve` configured it through REPRISE_SERVE_* (each uvicorn worker calls it)."""
    env = os.environ
    reference = ModelReference(
        env.get(ENV_PREFIX + "RELEASE") or None, env.get(ENV_PREFIX + "MODEL") or None
    )
    return create_app(
        reference,
        int(env.get(ENV_PREFIX + "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
        float(env.get(ENV_PREFIX + "POLL_SECONDS", DEFAULT_POLL_SECONDS)),
    )


# --- the command -------------------------------------------------------------------------------
def _log_config(access_log: bool) -> dict[str, Any]:
    """The platform's log format for uvicorn, the workers' own loggers included."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {
                "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
                "datefmt": "%H:%M:%S",
            }
        },
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
            "uvicorn.access": {"level": "INFO" if access_log else "WARNING"},
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
    max_body_bytes: int,
    poll_seconds: float,
    access_log: bool = False,
) -> int:
    """Serve the model over HTTP until SIGTERM / Ctrl-C (`python -m reprise serve`)."""
    import uvicorn

    for name, value, low in (
        ("--port", port, 1),
        ("--workers", workers, 1),
        ("--max-body-bytes", max_body_bytes, 1),
    ):
        if value < low:
            raise RepriseError(f"{name} {value} is out of range.", f"pass at least {low}.")
    if poll_seconds < 0:
        raise RepriseError(f"--poll-seconds {poll_seconds} is negative.", "pass 0 (off) or more.")
    reference = ModelReference(release or None, model or None)
    uri, meta = reference.resolve()  # RepriseError, e.g. nothing aliased prod
    _check_model(uri, meta)
    _check_port(host, port)
    os.environ.update(
        {
            ENV_PREFIX + "RELEASE": reference.release or "",
            ENV_PREFIX + "MODEL": reference.model or "",
            ENV_PREFIX + "MAX_BODY_BYTES": str(max_body_bytes),
            ENV_PREFIX + "POLL_SECONDS": str(poll_seconds),
        }
    )
    following = (
        f", following it every {poll_seconds:g} s" if reference.alias and poll_seconds else ""
    )
    log.info(
        "serving %s (now %s%s) on http://%s:%d with %d worker(s); API docs at /docs",
        reference,
        f"version {meta['version']}" if meta.get("version") else uri,
        following,
        host,
        port,
        workers,
    )
    uvicorn.run(
        "reprise.serving.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=_log_config(access_log),
        log_level="info" if access_log else "warning",
        access_log=access_log,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return 0
