"""The inference app: health and readiness probes, /predict, MLflow's /invocations, /metrics
and /reload, over the served model."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi

from reprise.errors import RepriseError
from reprise.serving import connections, metrics
from reprise.serving.model import ServedModel
from reprise.serving.reference import ModelReference
from reprise.serving.server.guards import check_key, is_loopback, media_type, read_body
from reprise.serving.server.observe import Observed
from reprise.serving.server.openapi import (
    NOT_READY,
    PREDICT_EXAMPLE,
    ROW_REF,
    content,
    refused,
    rows_schema,
    scoring_responses,
    with_model,
)
from reprise.serving.server.protocol import invocation_columns, predict_columns
from reprise.serving.server.refusals import RequestProblem, json_response, refusal, respond
from reprise.serving.server.scoring import checked_and_scored
from reprise.serving.server.settings import ENV_PREFIX, Settings
from reprise.serving.server.state import ServingState

log = logging.getLogger(__name__)


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
    rows_doc = rows_schema(settings.max_rows)
    key_doc = " Needs the API key (Authorization: Bearer KEY or X-API-Key: KEY)."
    needs_key = key_doc if settings.api_key else ""

    def not_ready() -> Response:
        return json_response(
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
                check_key(request, settings.api_key)
            media = media_type(request, ("text/csv",) if endpoint == "/invocations" else ())
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
                body = await read_body(request, settings.max_body_bytes)
                rows, proba, labels = await checked_and_scored(
                    served, body, lambda: columns_of(served, media, body)
                )
            finally:
                in_flight -= 1
            rows_scored[endpoint].inc(rows)
            return json_response(answer(served, proba, labels))

        return await respond(request, handle)

    @app.get(
        "/health",
        summary="The process is up",
        responses={200: content({"type": "object", "properties": {"status": {"const": "ok"}}})},
    )
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get(
        "/ping",
        summary="MLflow's health path: 200 once a model is loaded, else 503",
        responses={
            200: {"description": "A model is loaded", **content({"type": "string"}, "text/plain")},
            503: NOT_READY,
        },
    )
    async def ping() -> Response:
        return not_ready() if state.served is None else Response("\n", media_type="text/plain")

    @app.get(
        "/ready",
        summary="A model is loaded: 200 with it, else 503",
        responses={200: content({"$ref": "#/components/schemas/Identity"}), 503: NOT_READY},
    )
    async def ready() -> Response:
        served = state.served
        if served is None:
            return not_ready()
        return json_response({"ready": True, **served.describe()})

    @app.get(
        "/version",
        summary="What is served: release, model version, commits, threshold",
        responses={200: content({"$ref": "#/components/schemas/Identity"}), 503: NOT_READY},
    )
    async def version() -> Response:
        served = state.served
        return not_ready() if served is None else json_response(identity(served))

    @app.get(
        "/metrics",
        summary="Prometheus metrics of this server process",
        responses={200: content({"type": "string"}, "text/plain")},
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
                **content({"oneOf": [ROW_REF, {**rows_doc, "items": ROW_REF}]}),
            }
        },
        responses=scoring_responses(
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
            lambda served, _, body: predict_columns(served, body, settings.max_rows),
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
        responses=scoring_responses(
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
            lambda served, media, body: invocation_columns(served, media, body, settings.max_rows),
            lambda served, proba, labels: {"predictions": labels},
        )

    reload_refusals: dict[int | str, Any] = (
        {401: refused("The request did not carry the server's API key")}
        if settings.api_key
        else {403: refused("No API key is set and the request came from another host")}
    )

    @app.post(
        "/reload",
        summary="Check the followed alias now; switch if it moved",
        description="Needs the API key when the server has one; without one, only clients on "
        "the server's own host (loopback) may call it.",
        responses={
            200: content({"$ref": "#/components/schemas/Identity"}),
            **reload_refusals,
            409: refused("The server serves a fixed model: there is no alias to follow"),
            503: refused("The registry cannot be read, or its alias points nowhere now"),
        },
    )
    async def reload(request: Request) -> Response:
        async def handle() -> Response:
            if settings.api_key:
                check_key(request, settings.api_key)
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
            return json_response({"switched": switched, **identity(state.served)})  # type: ignore[arg-type]

        return await respond(request, handle)

    @app.exception_handler(Exception)
    async def bug(request: Request, err: Exception) -> Response:
        log.error("bug while answering %s %s: %r", request.method, request.url.path, err)
        return json_response(
            refusal("internal error (logged)", "report it with the server log."), 500
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
        return with_model(app.openapi_schema, state.served, settings.max_rows, settings.api_key)

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
