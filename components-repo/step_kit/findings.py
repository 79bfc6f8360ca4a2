"""The outcome of one check of data or of a model: its name, whether it passed, what it saw."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Finding:
    """One named check, whether it passed, and the numbers it saw."""

    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def listing(findings: list[Finding]) -> str:
    """``name: detail; name: detail`` of the findings, for a one-line message."""
    return "; ".join(f"{f.name}: {f.detail}" for f in findings)
