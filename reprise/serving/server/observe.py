"""Each request counted and timed in /metrics, and logged when access logs are on."""

from __future__ import annotations

import logging
import time
from typing import Any

from reprise.serving import metrics

access_log = logging.getLogger("reprise.access")

HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}


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
