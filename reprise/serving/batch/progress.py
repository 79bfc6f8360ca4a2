"""The progress of a batch scoring on a terminal."""

from __future__ import annotations

import sys
import time

from reprise.serving.batch.read import Source


class Progress:
    """A one-line progress bar on stderr, shown only when stderr is a terminal."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.enabled = sys.stderr.isatty()
        self.start = time.monotonic()
        self.last = 0.0
        self.rows = 0

    def update(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.2:
            return
        self.last = now
        total = self.source.total_rows
        fraction = self.rows / total if total else self.source.fraction()
        rate = self.rows / max(now - self.start, 1e-9)
        bar = ""
        if fraction is not None:
            filled = int(fraction * 30)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} "
        sys.stderr.write(f"\rpredict {bar}{self.rows:,} rows, {rate:,.0f} rows/s ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\n")
            sys.stderr.flush()
