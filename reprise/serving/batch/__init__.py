"""Offline (batch) scoring of a file: stream it in chunks through a pool of processes (or Apache
Spark), write each row's id, probability and label, and set rows that cannot be scored aside or
stop at the first one. Nothing is half-written: outputs go to a temporary file beside the target
and are renamed into place at the end. Nothing is destroyed: an output that is or holds the input,
a folder, or (without --overwrite) an existing file is refused before any row is scored."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprise.errors import RepriseError
from reprise.serving.batch.local import forkserver, predict_local
from reprise.serving.batch.plan import check_paths, make_plan
from reprise.serving.batch.read import available_local, estimated_rows
from reprise.serving.batch.score import lean_arrow_memory
from reprise.serving.batch.spark import predict_spark

log = logging.getLogger(__name__)

ENGINES = ("local", "spark")
ON_ERROR = ("fail", "quarantine")
DEFAULT_CHUNK_ROWS = 200_000


@dataclass
class BatchResult:
    """What a batch scoring did: where, with which model, how many rows."""

    input: Path
    output: Path
    quarantine: Path | None
    model: dict[str, Any]
    engine: str
    workers: int
    id_column: str
    rows_read: int = 0
    rows_scored: int = 0
    rows_quarantined: int = 0
    seconds: float = 0.0


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (as Ctrl-C does) so that temporary files are removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def predict(
    input_path: str | Path,
    output_path: str | Path,
    release: str | None = None,
    model: str | None = None,
    id_column: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    workers: int | None = None,
    on_error: str = "fail",
    engine: str = "local",
    overwrite: bool = False,
) -> BatchResult:
    """Score every row of INPUT with the model and write id, probability and label to OUTPUT
    (replacing an existing OUTPUT file only when ``overwrite``)."""
    started = time.monotonic()
    input_path, output_path = Path(input_path), Path(output_path)
    workers = workers or os.cpu_count() or 1
    if chunk_rows < 1 or workers < 1:
        raise RepriseError(
            f"--chunk-rows {chunk_rows} and --workers {workers} must be at least 1.",
            "pass positive numbers.",
        )
    if on_error not in ON_ERROR or engine not in ENGINES:
        raise RepriseError(
            f"Unknown --on-error {on_error!r} or --engine {engine!r}.",
            f"use --on-error {'|'.join(ON_ERROR)} and --engine {'|'.join(ENGINES)}.",
        )
    kind = check_paths(input_path, output_path, engine, on_error, overwrite)
    if engine == "local":  # read the header first: an unreadable file fails before the model loads
        lean_arrow_memory()
        available = available_local(input_path, kind)
    from reprise.serving.model import compiled_on_disk, load
    from reprise.serving.reference import resolve

    uri, meta = resolve(release, model)
    big = engine == "local" and workers > 1 and estimated_rows(input_path, kind) > chunk_rows
    if big and not compiled_on_disk(meta):  # it may need processes: start their server now,
        forkserver()  # which imports while the model loads
        multiprocessing.forkserver.ensure_running()
    served = load(uri, meta)
    log.info(
        "scoring %s with %s (threshold %.4f), engine %s, %d worker(s), chunks of %d rows",
        input_path,
        served.uri,
        served.threshold,
        engine,
        workers,
        chunk_rows,
    )
    try:
        with _terminate_as_interrupt():
            if engine == "local":
                plan = make_plan(
                    input_path,
                    output_path,
                    served.columns,
                    available,
                    id_column,
                    on_error,
                    overwrite,
                )
                read, scored, quarantined, workers = predict_local(
                    plan, served, chunk_rows, workers, on_error == "fail"
                )
            else:
                plan, read, scored, quarantined = predict_spark(
                    input_path,
                    kind,
                    output_path,
                    served,
                    meta,
                    id_column,
                    chunk_rows,
                    workers,
                    on_error,
                    overwrite,
                )
    except KeyboardInterrupt:
        raise RepriseError(
            f"Interrupted while scoring {input_path}; no output was written.",
            "run it again; it starts from the beginning.",
        ) from None
    if read != scored + quarantined:
        raise AssertionError(f"rows read {read} != scored {scored} + quarantined {quarantined}")
    return BatchResult(
        input=input_path,
        output=output_path,
        quarantine=plan.quarantine,
        model=served.describe(),
        engine=engine,
        workers=workers,
        id_column=plan.id_column,
        rows_read=read,
        rows_scored=scored,
        rows_quarantined=quarantined,
        seconds=time.monotonic() - started,
    )
