"""The log format of the server processes (plain or JSON lines), as uvicorn's log config."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any


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


def log_config(access: bool, as_json: bool = False) -> dict[str, Any]:
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
