"""Scoring checked columns, on the event loop when small, off it when large."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from reprise.serving.model import ServedModel

# Batches up to this many rows are scored on the event loop: a thread hop costs more than they do.
INLINE_ROWS = 64
# Bodies over this size are parsed and checked off the event loop: a megabyte of JSON holding
# many small containers takes the parser (and the garbage collector it wakes) a long time.
INLINE_BYTES = 16 * 1024


def score_now(served: ServedModel, columns: dict[str, list[Any]]) -> tuple[list[float], list[int]]:
    """(probabilities, labels) of checked columns, as Python lists."""
    if served.scorer is not None:
        proba = served.scorer.predict_proba(columns)
        return proba.tolist(), served.scorer.predict(proba).tolist()
    import pandas as pd

    proba, labels = served.score(served.typed(pd.DataFrame(columns)))
    return proba.tolist(), labels.tolist()


async def checked_and_scored(
    served: ServedModel, body: bytes, columns_of: Callable[[], dict[str, list[Any]]]
) -> tuple[int, list[float], list[int]]:
    """(rows, probabilities, labels) of a body; a large body is parsed, checked and scored off
    the event loop, a large batch scored off it, so /health answers meanwhile."""

    def work(columns: dict[str, list[Any]] | None = None) -> tuple[int, list[float], list[int]]:
        columns = columns_of() if columns is None else columns
        return len(next(iter(columns.values()))), *score_now(served, columns)

    if len(body) > INLINE_BYTES:
        return await run_in_threadpool(work)
    columns = columns_of()
    if len(next(iter(columns.values()))) <= INLINE_ROWS:
        return work(columns)
    return await run_in_threadpool(work, columns)
