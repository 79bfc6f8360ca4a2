"""The local engine: the input scored chunk by chunk in input order, on this process or a
pool of threads (a compiled model) or processes (scikit-learn's own path)."""

from __future__ import annotations

import itertools
import multiprocessing
import pickle
import signal
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from reprise.errors import RepriseError
from reprise.serving.batch.plan import (
    LABEL,
    PROBABILITY,
    REASON,
    Plan,
    bad_row_error,
)
from reprise.serving.batch.progress import Progress
from reprise.serving.batch.read import Source
from reprise.serving.batch.score import (
    Scores,
    lean_arrow_memory,
    limit_threads,
    score_table,
)
from reprise.serving.batch.write import Writer

if TYPE_CHECKING:  # imported when used: it brings MLflow, seconds of import
    from reprise.serving.model import ServedModel

_SERVED: ServedModel | None = None


def _init_worker(model_bytes: bytes) -> None:
    """Process pool initializer: the model, once per worker; Ctrl-C is the parent's to handle."""
    global _SERVED
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads()
    lean_arrow_memory()
    _SERVED = pickle.loads(model_bytes)


def _to_ipc(table: pa.Table) -> bytes:
    """A table as Arrow IPC bytes: what is sent to a worker (slices sent as slices)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def _from_ipc(data: bytes) -> pa.Table:
    """The table of ``_to_ipc`` bytes."""
    return pa.ipc.open_stream(data).read_all()


def _score_chunk(data: bytes, stop_on_bad: bool) -> Scores:
    """Worker task: a chunk as Arrow IPC bytes -> its scores."""
    if _SERVED is None:
        raise RuntimeError("worker started without a model")
    return score_table(_SERVED, _from_ipc(data), stop_on_bad)


def _id_values(plan: Plan, table: pa.Table, first_row: int) -> pa.Array:
    """A chunk's ids: its id column, or its row numbers."""
    if plan.id_generated:
        return pa.array(np.arange(first_row, first_row + table.num_rows, dtype=np.int64))
    ids = table.column(plan.id_column)
    if pa.types.is_dictionary(ids.type):
        ids = ids.cast(ids.type.value_type)
    return ids.combine_chunks()


def _id_type(plan: Plan) -> pa.DataType:
    """The id's type in the output: as the input has it (text from CSV), int64 when generated."""
    if plan.id_generated:
        return pa.int64()
    if plan.input_format == "csv":
        return pa.string()
    kind = pq.read_schema(plan.input).field(plan.id_column).type
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def predict_local(
    plan: Plan, served: ServedModel, chunk_rows: int, workers: int, fail: bool
) -> tuple[int, int, int, int]:
    """Score the input chunk by chunk, in input order; (read, scored, quarantined, workers)."""
    source = Source(plan, chunk_rows)
    id_type = _id_type(plan)
    out_schema = pa.schema(
        [(plan.id_column, id_type), (PROBABILITY, pa.float64()), (LABEL, pa.int64())]
    )
    side_schema = pa.schema([(plan.id_column, id_type), (REASON, pa.string())])
    out = Writer(plan.output, plan.output_format, out_schema, plan.overwrite)
    side = (
        Writer(plan.quarantine, plan.output_format, side_schema, plan.overwrite)
        if plan.quarantine
        else None
    )
    progress = Progress(source)
    counts = {"read": 0, "scored": 0, "quarantined": 0}

    def take(ids: pa.Array, first_row: int, scores: Scores) -> None:
        """Write one scored chunk, given its ids (or stop at its first bad row)."""
        bad = scores.bad_positions
        if fail and len(bad):
            position = int(bad[0])
            raise bad_row_error(
                plan,
                first_row + position,
                ids[position].as_py(),
                scores.bad_reasons[0],
                len(bad),
                f"in rows {first_row}-{first_row + len(ids) - 1}",
            )
        good = np.ones(len(ids), dtype=bool)
        good[bad] = False
        if int(good.sum()) != len(scores.probability):
            raise AssertionError("a chunk's scores do not match its good rows")
        out.write(
            pa.record_batch(
                [ids.filter(pa.array(good)), pa.array(scores.probability), pa.array(scores.label)],
                schema=out_schema,
            )
        )
        if side is not None and len(bad):
            reasons = pa.array(scores.bad_reasons, pa.string())
            side.write(pa.record_batch([ids.take(pa.array(bad)), reasons], schema=side_schema))
        counts["read"] += len(ids)
        counts["scored"] += len(scores.probability)
        counts["quarantined"] += len(bad)
        progress.update(len(ids))

    chunks = source.chunks()
    try:
        head = list(itertools.islice(chunks, 2))  # one chunk only: no processes to start
        chunks = itertools.chain(head, chunks)
        if workers == 1 or len(head) < 2:
            workers = 1
            limit_threads()
            offset = 0
            for table in chunks:
                scores = score_table(served, table.select(list(plan.columns)), fail)
                take(_id_values(plan, table, offset), offset, scores)
                offset += table.num_rows
        else:
            _score_in_pool(plan, served, workers, chunks, take, fail)
        read, scored, quarantined = counts["read"], counts["scored"], counts["quarantined"]
        if read != scored + quarantined:
            raise AssertionError(f"rows read {read} != scored {scored} + quarantined {quarantined}")
        if side is not None:
            side.commit()
        out.commit()
    except BaseException:
        out.discard()
        if side is not None:
            side.discard()
        raise
    finally:
        progress.close()
    return read, scored, quarantined, workers


def _score_in_pool(
    plan: Plan,
    served: ServedModel,
    workers: int,
    chunks: Iterator[pa.Table],
    take: Callable[[pa.Array, int, Scores], None],
    fail: bool,
) -> None:
    """Score chunks on ``workers`` workers, at most two per worker in flight, in input order.

    A compiled model (numpy arrays, whose calls leave the interpreter free) is scored in threads
    that share the chunks with the reader; scikit-learn's own path in processes, each sent its
    chunk as Arrow IPC bytes.
    """
    columns = list(plan.columns)
    if _in_threads(served):
        pool: Executor = ThreadPoolExecutor(workers, thread_name_prefix="score")

        def submit(table: pa.Table) -> Future[Scores]:
            return pool.submit(score_table, served, table.select(columns), fail)

    else:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=forkserver(),
            initializer=_init_worker,
            initargs=(pickle.dumps(served),),
        )

        def submit(table: pa.Table) -> Future[Scores]:
            return pool.submit(_score_chunk, _to_ipc(table.select(columns)), fail)

    pending: deque[tuple[pa.Array, int, Future[Scores]]] = deque()
    offset = 0
    try:
        for table in chunks:
            ids = _id_values(plan, table, offset)  # all the parent keeps of a chunk in flight
            pending.append((ids, offset, submit(table)))
            offset += table.num_rows
            del table
            while len(pending) >= 2 * workers:
                take(*_done(pending.popleft()))
        while pending:
            take(*_done(pending.popleft()))
    except BrokenProcessPool as err:
        raise RepriseError(
            f"A scoring process died ({err}); often it ran out of memory.",
            "use fewer --workers or a smaller --chunk-rows.",
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _in_threads(served: ServedModel) -> bool:
    """Whether the model's chunks are scored in threads (compiled) rather than processes."""
    return served.scorer is not None and served.scorer.trees is not None


def forkserver() -> Any:
    """The forkserver context, which imports the model's code once and forks workers from it."""
    # a clean process: no copy of this one's threads or memory, no import per worker
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["reprise.serving.model", "threadpoolctl"])
    return context


def _done(item: tuple[pa.Array, int, Future[Scores]]) -> tuple[pa.Array, int, Scores]:
    """An in-flight chunk's ids, first row and scores, waiting for them."""
    ids, offset, future = item
    return ids, offset, future.result()
