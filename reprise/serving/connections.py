"""Connection guards of the online server: idle and slow connections are closed on a deadline,
the number of open connections is capped (the oldest connection without a request in flight
makes room for a new one), and errors of the accept loop are logged at a bounded rate.

uvicorn's own keep-alive timeout only starts once a response is sent: a connection that never
sends a byte, or sends its headers one byte at a time, would be held for ever. The limits come
from the environment `serve` sets, as every uvicorn worker reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import time
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from reprise.errors import RepriseError
from reprise.serving import metrics

log = logging.getLogger(__name__)

ENV_PREFIX = "REPRISE_SERVE_"
DEFAULT_KEEP_ALIVE_SECONDS = 5.0
DEFAULT_READ_TIMEOUT_SECONDS = 15.0
DEFAULT_MAX_CONNECTIONS = 1000
# File descriptors kept free for what is not a client connection: the listening socket, the
# model's files, the tracking store, logs.
SPARE_DESCRIPTORS = 64
ACCEPT_TURNS = 4
# At most one line per this many seconds for a repeated connection-level warning.
LOG_EVERY_SECONDS = 10.0
RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# States of the client side in which its request has been read to its end (or never will be).
RECEIVED = {h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR}


@dataclass(frozen=True)
class Limits:
    """How long a connection may sit idle or take to send a request, and how many may be open."""

    keep_alive_seconds: float = DEFAULT_KEEP_ALIVE_SECONDS
    read_timeout_seconds: float = DEFAULT_READ_TIMEOUT_SECONDS
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    @classmethod
    def from_env(cls) -> Limits:
        """The limits `serve` put in REPRISE_SERVE_* (the defaults where unset)."""
        env = os.environ
        return cls(
            float(env.get(ENV_PREFIX + "KEEP_ALIVE_SECONDS", DEFAULT_KEEP_ALIVE_SECONDS)),
            float(env.get(ENV_PREFIX + "READ_TIMEOUT_SECONDS", DEFAULT_READ_TIMEOUT_SECONDS)),
            int(env.get(ENV_PREFIX + "MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)),
        )

    def env(self) -> dict[str, str]:
        """These limits as the REPRISE_SERVE_* variables ``from_env`` reads."""
        return {
            ENV_PREFIX + "KEEP_ALIVE_SECONDS": str(self.keep_alive_seconds),
            ENV_PREFIX + "READ_TIMEOUT_SECONDS": str(self.read_timeout_seconds),
            ENV_PREFIX + "MAX_CONNECTIONS": str(self.max_connections),
        }


def descriptors_needed(max_connections: int, backlog: int) -> int:
    """File descriptors the server may hold at once: its connections, plus what the accept loop
    takes before the limit is applied (asyncio accepts up to ``backlog`` connections a turn, and
    a connection is counted a few turns after it is accepted), plus SPARE_DESCRIPTORS."""
    return max_connections + ACCEPT_TURNS * backlog + SPARE_DESCRIPTORS


def reserve_descriptors(max_connections: int, backlog: int) -> None:
    """Raise this process's soft file limit to what the server needs, up to the hard limit;
    RepriseError if that is not enough (the workers inherit the limit)."""
    needed = descriptors_needed(max_connections, backlog)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard == resource.RLIM_INFINITY or hard >= needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        log.info("file limit raised from %d to %d for the connections", soft, needed)
        return
    raise RepriseError(
        f"--max-connections {max_connections} with --backlog {backlog} needs {needed} file "
        f"descriptors; this process may open {hard}.",
        "pass a smaller --max-connections or --backlog, or raise the hard limit (ulimit -Hn).",
    )


class RateLimitedLog:
    """A warning logged at most once per LOG_EVERY_SECONDS, with how many were left out."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.last = -LOG_EVERY_SECONDS
        self.skipped = 0

    def warning(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last < LOG_EVERY_SECONDS:
            self.skipped += 1
            return
        more = f" ({self.skipped} more like it in the last {LOG_EVERY_SECONDS:g} s)"
        self.logger.warning(message + (more if self.skipped else ""), *args)
        self.last, self.skipped = now, 0


_accept_errors = RateLimitedLog(log)
_limit_reached = RateLimitedLog(log)


def handle_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's error handler: out-of-descriptor errors of the accept loop become a
    rate-limited line (they repeat every time the loop retries), the rest go to asyncio's own."""
    err = context.get("exception")
    if isinstance(err, OSError) and err.errno in RESOURCE_ERRNOS:
        _accept_errors.warning(
            "cannot accept connections: %s; lower --max-connections or raise the file limit "
            "(ulimit -n)",
            err.strerror or err,
        )
        return
    loop.default_exception_handler(context)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on idle and slow connections and a cap on
    open ones."""

    limits: Limits | None = None  # read from the environment by the first connection
    # open connections in the order they were made: the oldest idle one is closed first
    opened: dict[GuardedH11Protocol, None] = {}

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = type(self).limits
        if limits is None:
            limits = type(self).limits = Limits.from_env()
        self.deadline: asyncio.TimerHandle | None = None
        self.reading = False  # a request has begun and is not all received yet
        self.read_timeout = limits.read_timeout_seconds
        opened = type(self).opened
        opened[self] = None
        if len(opened) > limits.max_connections and not self._make_room():
            _limit_reached.warning(
                "%d connections are open, each with a request in flight: a new one was closed "
                "(--max-connections)",
                len(opened) - 1,
            )
            metrics.CONNECTIONS_CLOSED.labels("limit").inc()
            transport.close()
            return
        self._arm(limits.keep_alive_seconds, "idle")

    def _make_room(self) -> bool:
        """Close the oldest connection that has no request in flight; False if there is none."""
        for other in type(self).opened:
            if other is not self and (other.cycle is None or other.cycle.response_complete):
                _limit_reached.warning(
                    "%d connections are open: the oldest idle one was closed (--max-connections)",
                    len(type(self).opened) - 1,
                )
                metrics.CONNECTIONS_CLOSED.labels("limit").inc()
                other._close()
                return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        type(self).opened.pop(self, None)
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.reading:
            self._disarm()  # a fresh connection's idle deadline: it has sent its first bytes
        super().data_received(data)
        if self.conn.their_state in RECEIVED:
            if self.reading:
                self.reading = False
                self._disarm()  # received whole: uvicorn's keep-alive timer takes over
        elif not self.reading and not self.transport.is_closing():
            # a request has begun and is not all here: from now it has read_timeout_seconds to
            # arrive whole, so a client sending a byte now and then does not hold the connection
            # (a request that arrives in one piece, the usual case, costs no timer at all)
            self.reading = True
            self._arm(self.read_timeout, "read_timeout")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.reading:
            self.reading = True  # a pipelined request has begun: the same deadline applies
            self._arm(self.read_timeout, "read_timeout")

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(seconds, self._expire, reason)

    def _disarm(self) -> None:
        deadline = getattr(self, "deadline", None)
        if deadline is not None:
            deadline.cancel()
            self.deadline = None

    def _expire(self, reason: str) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        log.debug("closing %s: %s", self.client, reason)
        metrics.CONNECTIONS_CLOSED.labels(reason).inc()
        self._close()

    def _close(self) -> None:
        if self.conn.our_state is not h11.ERROR:
            # a response half sent cannot end cleanly: closing the socket is all there is to do
            with contextlib.suppress(h11.LocalProtocolError):
                self.conn.send(h11.ConnectionClosed())
        self.transport.close()
