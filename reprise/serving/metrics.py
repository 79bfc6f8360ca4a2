"""The online server's Prometheus metrics (GET /metrics): requests and their latency by endpoint
and status, rows scored, refusals by reason, the served model version, reloads, and the
connections the server closed. One registry per process: with --workers N, each worker counts
its own requests."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # a *_created sample per label set doubles the page for nothing
REGISTRY = CollectorRegistry(auto_describe=True)
# Scoring answers in about a millisecond; a big batch or a reload takes seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

REQUESTS = Counter(
    "reprise_requests",
    "HTTP requests answered, by endpoint, method and status.",
    ["endpoint", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "reprise_request_duration_seconds",
    "Time from a request's start to the end of its answer, by endpoint and status.",
    ["endpoint", "status"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
ROWS_SCORED = Counter(
    "reprise_rows_scored", "Rows scored, by endpoint.", ["endpoint"], registry=REGISTRY
)
REFUSED = Counter(
    "reprise_refused",
    "Requests refused, by reason (each refusal refuses all the rows of its request).",
    ["reason"],
    registry=REGISTRY,
)
MODEL = Gauge(
    "reprise_served_model",
    "1 for the model version served now (its labels say which).",
    ["registered_model", "version", "uri"],
    registry=REGISTRY,
)
RELOADS = Counter(
    "reprise_reloads",
    "Checks of the followed alias, by result: switched, unchanged or failed.",
    ["result"],
    registry=REGISTRY,
)
CONNECTIONS_CLOSED = Counter(
    "reprise_connections_closed",
    "Connections the server closed: idle, read_timeout (a request too slow to arrive), "
    "limit (over --max-connections).",
    ["reason"],
    registry=REGISTRY,
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def serving(name: str | None, version: str | None, uri: str) -> None:
    """Record that this model version is served now, and no other."""
    MODEL.clear()
    MODEL.labels(name or "", version or "", uri).set(1)


def exposition() -> bytes:
    """Every metric in Prometheus' text format."""
    return generate_latest(REGISTRY)
