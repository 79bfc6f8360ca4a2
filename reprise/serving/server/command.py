"""`python -m reprise serve`: check the flags, the model and the port, then start uvicorn's
workers, each building the app from the REPRISE_SERVE_* variables."""

from __future__ import annotations

import logging
import os
import socket

from reprise.errors import RepriseError
from reprise.serving import connections
from reprise.serving.connections import Limits
from reprise.serving.reference import ModelReference, check_model
from reprise.serving.server.app import app_from_env
from reprise.serving.server.guards import is_loopback
from reprise.serving.server.logs import log_config
from reprise.serving.server.settings import ENV_PREFIX, Settings

log = logging.getLogger(__name__)

# Connections accepted per turn of the event loop too: small, so that a flood of connections
# cannot take the file descriptors before the connection limit closes the extra ones.
DEFAULT_BACKLOG = 128
GRACEFUL_SHUTDOWN_SECONDS = 10


SERVE_PORT_FIX = "pass another --port (make serve PORT=...) or stop what holds this one."


def check_port(host: str, port: int, fix: str = SERVE_PORT_FIX) -> None:
    """Refuse in one line, before anything starts, a port this process cannot listen on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise RepriseError(
                f"Cannot listen on {host}:{port}: {err.strerror or err}.",
                fix,
            ) from None


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
    check_model(uri, meta)
    check_port(host, port)
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
        # workers build the app themselves: uvicorn takes the factory by its import path
        f"{app_from_env.__module__}:{app_from_env.__qualname__}",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=connections.GuardedH11Protocol,
        log_config=log_config(settings.access_log, settings.log_json),
        log_level="info" if settings.access_log else "warning",
        access_log=False,
        backlog=backlog,
        timeout_keep_alive=limits.keep_alive_seconds,  # type: ignore[arg-type]
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return 0
