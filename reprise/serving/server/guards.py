"""What a request must pass before its body is read: the API key, the client's host, the content
type, and the body size limit."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from reprise.serving.server.refusals import RequestProblem


async def read_body(request: Request, limit: int) -> bytes:
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


def media_type(request: Request, also: tuple[str, ...] = ()) -> str:
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


def check_key(request: Request, key: str) -> None:
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
