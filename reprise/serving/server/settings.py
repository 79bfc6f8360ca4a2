"""How the server answers (body and row caps, concurrency, the API key, access logs), passed
from `serve` to each uvicorn worker as REPRISE_SERVE_* variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from reprise.serving import connections

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_POLL_SECONDS = 5.0
ENV_PREFIX = connections.ENV_PREFIX
API_KEY_ENV = ENV_PREFIX + "API_KEY"


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
                default: Any = f.default  # a field's default: its type parses the value
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
