"""Refused requests and the answers they get: an HTTP status and one line, cause and fix, with
its parts for programs; the wrapper that turns refusals into answers and bugs into a logged 500."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from starlette.requests import ClientDisconnect

from reprise.serving import metrics
from reprise.serving.rows import InputError

log = logging.getLogger(__name__)

MAX_PROBLEM_CHARS = 300
ROW_FIX = "send each row as an object of column: value with the columns and types of GET /version."


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


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A compact JSON answer (NaN refused: JSON has none)."""
    content = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def refusal(problem: str, fix: str, field: str = "", row: int | None = None) -> dict[str, Any]:
    """The JSON of a refusal: one line in detail, and its parts for programs."""
    if len(problem) > MAX_PROBLEM_CHARS:  # a huge value quoted back is no help
        problem = problem[:MAX_PROBLEM_CHARS] + "..."
    where = f"row {row}: " if row is not None else ""
    detail = f"{where}{field + ': ' if field else ''}{problem.rstrip('.')}. Fix: {fix}"
    return {"detail": detail, "problem": problem, "field": field or None, "row": row, "fix": fix}


async def respond(request: Request, handler: Callable[[], Awaitable[Response]]) -> Response:
    """Run an endpoint: refusals become 4xx answers naming the field, bugs a logged 500."""
    try:
        return await handler()
    except RequestProblem as err:
        metrics.REFUSED.labels(err.reason).inc()
        headers = {**err.headers, **({"Connection": "close"} if err.close else {})}
        return json_response(refusal(err.problem, err.fix, err.field), err.status, headers or None)
    except InputError as err:
        metrics.REFUSED.labels("invalid_row").inc()
        return json_response(refusal(err.problem, ROW_FIX, err.field, err.row), 422)
    except ClientDisconnect:
        log.debug("client went away during %s %s", request.method, request.url.path)
        return Response(status_code=400)
    except Exception:
        log.exception("bug while answering %s %s", request.method, request.url.path)
        return json_response(
            refusal("internal error (logged by the server)", "report it with the log."), 500
        )
