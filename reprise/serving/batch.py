"""Offline (batch) scoring of a file: stream it in chunks through a pool of processes (or Apache
Spark), write each row's id, probability and label, and set rows that cannot be scored aside or
stop at the first one. Nothing is half-written: outputs go to a temporary file beside the target
and are renamed into place at the end. Nothing is destroyed: an output that is or holds the input,
a folder, or (without --overwrite) an existing file is refused before any row is scored."""

from __future__ import annotations

import contextlib
import csv
import gzip
import itertools
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from reprise import owners
from reprise.errors import RepriseError

if TYPE_CHECKING:  # imported when used: it brings MLflow, seconds of import
    from reprise.serving.model import ServedModel

log = logging.getLogger(__name__)

ENGINES = ("local", "spark")
ON_ERROR = ("fail", "quarantine")
DEFAULT_CHUNK_ROWS = 200_000
# Rows scored at once inside a worker: bounds the one-hot matrix (rows x ~100 float64).
SCORE_SLICE_ROWS = 20_000
PARQUET_BUFFER_BYTES = 1 << 20
ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"
# Bytes the CSV reader parses at once; chunks of rows are cut from these blocks.
CSV_BLOCK_BYTES = 1 << 20  # the reader reads ~40 blocks ahead
INPUT_SUFFIXES = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}
OUTPUT_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
ID_DEFAULT = "id"
ROW_COLUMN = "row"  # the generated id: 0-based row number in the input
PROBABILITY, LABEL, REASON = "probability", "label", "reason"
SPARK_MASTER_ENV = "REPRISE_SPARK_MASTER"  # a cluster's master URL; default local[workers]
PANDAS3_WARNING = "PySpark does not yet fully support pandas"
SPARK_START_HINT = (
    "install Java 17 (JAVA_HOME) and the spark extra (make setup), or use --engine local"
)


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


@dataclass
class _Plan:
    """The files and columns of one batch scoring, checked before any row is scored."""

    input: Path
    input_format: str
    output: Path
    output_format: str
    quarantine: Path | None
    columns: dict[str, str]  # model column -> "integer" | "number" | "string"
    id_column: str  # the input's id column, or ROW_COLUMN when generated
    id_generated: bool
    overwrite: bool = False  # an existing output file may be replaced
    read_columns: list[str] = field(default_factory=list)  # model columns + id, each once
    # text columns of the model read dictionary-encoded: a few categories repeated, so chunks
    # are a third of the size to hold and to send to a worker; decoded before the checks
    dictionary_columns: list[str] = field(default_factory=list)


# --- planning -----------------------------------------------------------------------------------
def _suffix(path: Path, known: dict[str, str], what: str) -> str:
    """The file type of ``path`` by its suffix."""
    name = path.name.lower()
    for suffix, kind in sorted(known.items(), key=lambda item: -len(item[0])):
        if name.endswith(suffix):
            return kind
    raise RepriseError(
        f"{what} {path} has an unknown file type.",
        f"name it with one of {', '.join(known)} (the type is taken from the suffix).",
    )


def quarantine_path(output: Path) -> Path:
    """The side file of the rows that could not be scored: <stem>.quarantine.<suffix>."""
    return output.with_name(f"{output.stem}.quarantine{output.suffix}")


def _arrow_kind(kind: pa.DataType) -> str:
    """An Arrow type as a kind of value: string, number, null or other."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_null(kind):
        return "null"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return "string"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "number"
    return "other"


def _check_input_columns(
    available: dict[str, tuple[str, str]], columns: dict[str, str], source: Path
) -> None:
    """Every model column present, of a type that can hold its values; else one clear error."""
    # available: input column -> (kind, the type as the file spells it)
    missing = [c for c in columns if c not in available]
    if missing:
        raise RepriseError(
            f"{source} lacks the model column(s) {', '.join(repr(c) for c in missing)} "
            f"(it has {', '.join(available) or 'no columns'}).",
            f"add them; the model reads {', '.join(columns)}.",
        )
    for column, wanted in columns.items():
        kind, spelled = available[column]
        fits = kind in ("null", "string") or (kind == "number" and wanted != "string")
        if not fits:
            reads = (
                "text"
                if wanted == "string"
                else f"an {wanted}"
                if wanted == "integer"
                else "a number"
            )
            raise RepriseError(
                f"Column {column!r} of {source} holds {spelled}; the model reads {reads}.",
                f"write {column!r} as {reads} (a string column is checked row by row).",
            )


def _plan(
    input_path: Path,
    output_path: Path,
    columns: dict[str, str],
    available: dict[str, tuple[str, str]],
    id_column: str | None,
    on_error: str,
    overwrite: bool = False,
) -> _Plan:
    """Choose the id column and the columns to read; check the input has what the model reads."""
    _check_input_columns(available, columns, input_path)
    if id_column and id_column not in available:
        raise RepriseError(
            f"--id-column {id_column!r} is not a column of {input_path}.",
            f"pass one of {', '.join(available)}, or leave it out (then 'id', else row numbers).",
        )
    chosen = id_column or (ID_DEFAULT if ID_DEFAULT in available else ROW_COLUMN)
    generated = not id_column and ID_DEFAULT not in available
    clashes = {PROBABILITY, LABEL} | ({REASON} if on_error == "quarantine" else set())
    if chosen in clashes:
        raise RepriseError(
            f"The id column {chosen!r} has the name of an output column.",
            f"rename it in the input (the output adds {', '.join(sorted(clashes))}).",
        )
    read = list(columns) + ([] if generated or chosen in columns else [chosen])
    return _Plan(
        input=input_path,
        input_format=INPUT_SUFFIXES.get(_input_suffix(input_path), "parquet"),
        output=output_path,
        output_format=_suffix(output_path, OUTPUT_SUFFIXES, "OUTPUT"),
        quarantine=quarantine_path(output_path) if on_error == "quarantine" else None,
        columns=columns,
        id_column=chosen,
        id_generated=generated,
        overwrite=overwrite,
        read_columns=read,
        dictionary_columns=[
            c
            for c, kind in columns.items()
            if kind == "string" and available[c][0] == "string" and c != chosen
        ],
    )


def _input_suffix(path: Path) -> str:
    """The suffix that names the input's type (.csv.gz counts as one)."""
    name = path.name.lower()
    return ".csv.gz" if name.endswith(".csv.gz") else path.suffix.lower()


def _check_paths(
    input_path: Path, output_path: Path, engine: str, on_error: str, overwrite: bool
) -> str:
    """The input's format; refuses what cannot work, or would replace what it must not, before
    anything is loaded, and removes what dead runs left of the outputs."""
    if not input_path.exists():
        raise RepriseError(
            f"INPUT {input_path} does not exist.", "give the path of a CSV or Parquet file."
        )
    if input_path.is_dir() and engine == "local":
        raise RepriseError(
            f"INPUT {input_path} is a folder; the local engine reads one file.",
            "give one file, or use --engine spark for a folder of part files.",
        )
    kind = _suffix(input_path, INPUT_SUFFIXES, "INPUT")
    _suffix(output_path, OUTPUT_SUFFIXES, "OUTPUT")
    targets = {"OUTPUT": output_path}
    if on_error == "quarantine":
        targets["the quarantine file"] = quarantine_path(output_path)
    for what, target in targets.items():
        _check_target(what, target, input_path, overwrite)
    for target in targets.values():
        _remove_stale_temps(target)
    return kind


def _check_target(what: str, target: Path, source: Path, overwrite: bool) -> None:
    """Refuse a target that is or holds the input, a folder, an existing file (unless
    ``overwrite``; a read-only one even then) or a place this process cannot write."""
    subject = f"{what[:1].upper()}{what[1:]} {target}"
    touches = _touches_input(target, source)
    if touches:
        raise RepriseError(
            f"{subject} {touches}: writing it would destroy the data being scored.",
            "write to a new file outside INPUT.",
        )
    folder = target.parent
    if not folder.is_dir():
        raise RepriseError(
            f"The folder of {what}, {folder}, does not exist.",
            "create it first, or write elsewhere.",
        )
    if target.is_dir():
        raise RepriseError(
            f"{subject} is a folder; predict never replaces or deletes a folder.",
            "name a new file (remove the folder yourself if it is to go).",
        )
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise RepriseError(
                f"{subject} exists.",
                "pass --overwrite (make predict OVERWRITE=1) to replace it, or name a new file.",
            )
        protected = target.exists() and not (
            target.stat().st_mode & stat.S_IWUSR and os.access(target, os.W_OK)
        )
        if protected:
            raise RepriseError(
                f"{subject} is read-only; predict does not replace a protected file, "
                "even with --overwrite.",
                f"make it writable (chmod u+w {target}) if it may go, or name a new file.",
            )
    try:  # the one sure test of a folder's permissions, whoever runs this (root included)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(target), suffix=".part")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise RepriseError(
            f"Cannot write in {folder}, the folder of {what}: {err.strerror or err}.",
            "write to a folder you can write in, or make this one writable (chmod, chown).",
        ) from None


def _touches_input(target: Path, source: Path) -> str:
    """How writing ``target`` would touch the input ("" if it would not): the same file (a
    symlink or a hard link to it included), a folder holding it, or a file inside it."""
    real_target, real_source = target.resolve(), source.resolve()
    if real_target == real_source or (
        target.exists() and os.path.samefile(target, source)  # a hard link
    ):
        return "is INPUT (the same file, or a link to it)"
    if real_target in real_source.parents:
        return "holds INPUT"
    if real_source in real_target.parents:
        return "is inside INPUT"
    return ""


def _temp_prefix(target: Path) -> str:
    """The start of this process's temporary names beside ``target``: hidden, with the pid
    that owns them, so a later run can tell a dead run's leftovers from a live run's files."""
    return f".{target.name}.{os.getpid()}."


def _remove_stale_temps(target: Path) -> None:
    """Remove the temporary files (or Spark folders) of ``target`` whose writer is dead (a
    kill -9 leaves them): only names of our own pattern, only of processes that are gone."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[A-Za-z0-9_]+\.part")
    with contextlib.suppress(OSError):
        for entry in target.parent.iterdir():
            found = pattern.fullmatch(entry.name)
            if not found or not _dead(int(found.group(1))):
                continue
            with contextlib.suppress(OSError):
                size = entry.stat().st_size
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                log.info("removed %s, left by a run that died (%d bytes)", entry, size)


def _dead(pid: int) -> bool:
    """Whether process ``pid`` of this machine is surely gone (a run's owner by the same rule)."""
    return pid != os.getpid() and owners.can_tell() and owners.process_start(pid) is None


# --- reading --------------------------------------------------------------------------------------
def _csv_header(path: Path) -> list[str]:
    """The column names on a CSV file's first line."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            return next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise RepriseError(
            f"INPUT {path} cannot be read as CSV: {err}", "give a UTF-8 CSV file with a header."
        ) from None


def _malformed_line(path: Path) -> str:
    """Where the first CSV record with a wrong number of fields is, which Arrow does not say."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            width = len(next(reader, []))
            for record in reader:
                if len(record) != width:
                    return f" at line {reader.line_num} ({len(record)} fields, the header {width})"
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        return f" ({err})"
    return ""


def _available_local(path: Path, kind: str) -> dict[str, tuple[str, str]]:
    """The input's columns and their kinds; CSV columns are text, checked row by row."""
    if kind == "csv":
        return {name: ("string", "text") for name in _csv_header(path)}
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise RepriseError(
            f"INPUT {path} cannot be read as Parquet: {err}", "give a valid Parquet file."
        ) from None
    return {f.name: (_arrow_kind(f.type), str(f.type)) for f in schema}


class _Source:
    """The input as Arrow batches of the columns to read, and how far reading has got."""

    def __init__(self, plan: _Plan, chunk_rows: int) -> None:
        self.plan = plan
        self.chunk_rows = chunk_rows
        self.total_rows: int | None = None
        self._raw: pa.NativeFile | None = None
        self._size = plan.input.stat().st_size

    def fraction(self) -> float | None:
        """How much of a CSV file has been read (None when unknown)."""
        if self._raw is None or self._raw.closed or not self._size:
            return None
        return min(1.0, self._raw.tell() / self._size)

    def batches(self) -> Iterator[pa.RecordBatch]:
        if self.plan.input_format == "parquet":
            parquet = pq.ParquetFile(
                self.plan.input,
                read_dictionary=self.plan.dictionary_columns,
                buffer_size=PARQUET_BUFFER_BYTES,  # read column chunks in pieces, not whole
                pre_buffer=False,
            )
            self.total_rows = parquet.metadata.num_rows
            yield from parquet.iter_batches(
                batch_size=self.chunk_rows, columns=self.plan.read_columns
            )
            return
        self._raw = pa.OSFile(str(self.plan.input))
        stream = (
            pa.CompressedInputStream(self._raw, "gzip")
            if self.plan.input.name.lower().endswith(".gz")
            else self._raw
        )
        reader = pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=pa_csv.ConvertOptions(
                # every column as text: a bad value is a bad row, not a reader crash
                column_types={
                    c: _DICTIONARY if c in self.plan.dictionary_columns else pa.string()
                    for c in self.plan.read_columns
                },
                include_columns=self.plan.read_columns,
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
        with contextlib.closing(self._raw):
            yield from reader

    def chunks(self) -> Iterator[pa.Table]:
        """Tables of exactly chunk_rows rows (the last may be shorter), in file order."""
        pending: list[pa.RecordBatch] = []
        held = 0
        try:
            for batch in self.batches():
                while batch.num_rows:
                    take = min(self.chunk_rows - held, batch.num_rows)
                    pending.append(batch.slice(0, take))
                    held += take
                    batch = batch.slice(take)
                    if held == self.chunk_rows:
                        yield pa.Table.from_batches(pending)
                        pending, held = [], 0
        except pa.ArrowException as err:
            where = _malformed_line(self.plan.input) if self.plan.input_format == "csv" else ""
            raise RepriseError(
                f"INPUT {self.plan.input} cannot be read{where}: {str(err).splitlines()[0]}",
                "repair the file (each CSV line needs every column of the header).",
            ) from None
        if held:
            yield pa.Table.from_batches(pending)


# --- scoring (in worker processes) ----------------------------------------------------------------
_SERVED: ServedModel | None = None


@dataclass
class _Scores:
    """A chunk's result: scores of its good rows, positions and reasons of its bad rows."""

    probability: np.ndarray
    label: np.ndarray
    bad_positions: np.ndarray
    bad_reasons: list[str]


def _limit_threads() -> None:
    """One thread of native code per process: the processes are the parallelism."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _lean_arrow_memory() -> None:
    """Arrow's jemalloc pool, which gives freed memory back (~250 MB less on 10M rows)."""
    # the variable reaches processes started from here (the CLI sets it before Arrow loads);
    # this one switches pools now, for what it allocates from here on
    os.environ.setdefault(ARROW_POOL_ENV, "jemalloc")
    with contextlib.suppress(NotImplementedError, pa.ArrowException):
        if pa.default_memory_pool().backend_name != "jemalloc":
            pa.set_memory_pool(pa.jemalloc_memory_pool())


def _init_worker(model_bytes: bytes) -> None:
    """Process pool initializer: the model, once per worker; Ctrl-C is the parent's to handle."""
    global _SERVED
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_threads()
    _lean_arrow_memory()
    _SERVED = pickle.loads(model_bytes)


_DICTIONARY = pa.dictionary(pa.int32(), pa.string())


def _decoded(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns as plain ones: the values the file holds, as it holds them."""
    fields = [
        f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def _to_ipc(table: pa.Table) -> bytes:
    """A table as Arrow IPC bytes: what is sent to a worker (slices sent as slices)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> pa.Table:
    """The table of ``_to_ipc`` bytes."""
    return pa.ipc.open_stream(data).read_all()


def check_and_type(
    served: ServedModel, frame: pd.DataFrame, impute: bool = True
) -> tuple[pd.Series, pd.DataFrame]:
    """(reason per row, "" for a good one; the good rows typed as the model was trained); with
    ``impute`` off a missing number is a bad row even where the model imputes it."""
    # ServedModel.bad_rows decides; it runs only when a vectorised look finds a possibly bad
    # value (a chunk of clean rows skips its per-value checks, the slow part)
    numbers = {
        c: pd.to_numeric(frame[c], errors="coerce")
        for c, kind in served.columns.items()
        if kind != "string" and not pd.api.types.is_numeric_dtype(frame[c])
    }
    imputed = served.imputed if impute else frozenset()
    if _surely_good(served.columns, frame, numbers, imputed):
        reasons = pd.Series("", index=frame.index, dtype=object)
        good = frame
    else:
        reasons = served.bad_rows(frame, impute)
        keep = (reasons == "").to_numpy()
        good = frame.loc[keep]
        numbers = {c: values.loc[keep] for c, values in numbers.items()}
    return reasons, served.typed(good.assign(**numbers) if numbers else good)


def _surely_good(
    columns: dict[str, str],
    frame: pd.DataFrame,
    numbers: dict[str, pd.Series],
    imputed: frozenset[str] = frozenset(),
) -> bool:
    """True only when ServedModel.bad_rows would find no bad row in ``frame`` (``imputed``: the
    number columns where a missing value is good)."""
    # text columns of a string dtype hold text or missing, nothing else; numbers pass the rule
    # of the row checks (present unless imputed, finite, integers held exactly by an int64)
    from reprise.serving.model import refused_numbers

    for column, kind in columns.items():
        if kind == "string":
            if not isinstance(frame[column].dtype, pd.StringDtype):
                return False
            continue
        parsed = numbers.get(column, frame[column])
        if refused_numbers(frame[column], parsed, kind, column in imputed).any():
            return False
    return True


def _arrow_clean(
    columns: dict[str, str], table: pa.Table, imputed: frozenset[str] = frozenset()
) -> bool:
    """True only when every row of ``table`` is good (ServedModel.bad_rows would find no bad
    row) and its numbers read as the model's dtypes would give them: text columns of text, number
    columns of integers an int64 holds (or floats for 'number'), all finite, none missing but
    nulls of the ``imputed`` columns (a NaN takes the checked path: in a CSV it was text)."""
    import pyarrow.compute as pc

    for column, kind in columns.items():
        kind_of = table.schema.field(column).type
        if kind == "string":
            if _arrow_kind(kind_of) not in ("string", "null"):
                return False
            continue
        whole = pa.types.is_signed_integer(kind_of) or (
            pa.types.is_unsigned_integer(kind_of) and kind_of.bit_width < 64
        )
        floating = kind == "number" and pa.types.is_floating(kind_of)
        values = table.column(column)
        if not (whole or floating) or (values.null_count and column not in imputed):
            return False
        if floating and not pc.all(pc.is_finite(values)).as_py():
            return False
    return True


def _numbers_from_text(columns: dict[str, str], table: pa.Table) -> pa.Table:
    """``table`` with its text columns of numbers (a CSV file's) parsed by Arrow; a column with
    a value Arrow will not parse is left as text (the chunk then takes the checked path)."""
    import pyarrow.compute as pc

    for column, kind in columns.items():
        if kind == "string" or _arrow_kind(table.schema.field(column).type) != "string":
            continue
        target = pa.int64() if kind == "integer" else pa.float64()
        try:
            parsed = pc.cast(table.column(column), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        table = table.set_column(table.schema.get_field_index(column), column, parsed)
    return table


def score_table(served: ServedModel, table: pa.Table, stop_on_bad: bool = False) -> _Scores:
    """Check every row of a chunk and score the good ones: straight from Arrow when the fast
    path reads it and no row can be bad, else through pandas and the row checks."""
    scorer = served.scorer
    numbers = _numbers_from_text(served.columns, table) if scorer is not None else table
    if scorer is None or not _arrow_clean(served.columns, numbers, served.imputed):
        return score_frame(served, _decoded(table).to_pandas(), stop_on_bad)
    table = numbers
    # compiled trees hold no matrix per row; scikit-learn's estimators get a bounded one
    step = max(table.num_rows, 1) if scorer.trees is not None else SCORE_SLICE_ROWS
    probability = np.concatenate(
        [np.empty(0)]
        + [
            scorer.predict_proba_arrow(table.slice(start, step))
            for start in range(0, table.num_rows, step)
        ]
    )
    no_rows = np.empty(0, dtype=np.int64)
    return _Scores(probability, scorer.predict(probability), no_rows, [])


def score_frame(served: ServedModel, frame: pd.DataFrame, stop_on_bad: bool = False) -> _Scores:
    """Check every row of ``frame``, score the good ones (in slices, to bound memory)."""
    reasons, typed = check_and_type(served, frame)
    bad = np.flatnonzero((reasons != "").to_numpy())
    bad_reasons = [str(r) for r in reasons.iloc[bad]]
    if stop_on_bad and len(bad):
        empty = np.empty(0)
        return _Scores(empty, empty.astype(np.int64), bad, bad_reasons)
    probabilities, labels = [], []
    for start in range(0, len(typed), SCORE_SLICE_ROWS):
        proba, label = served.score(typed.iloc[start : start + SCORE_SLICE_ROWS])
        probabilities.append(np.asarray(proba, dtype=np.float64))
        labels.append(np.asarray(label, dtype=np.int64))
    probability = np.concatenate(probabilities) if probabilities else np.empty(0)
    label = np.concatenate(labels) if labels else np.empty(0, dtype=np.int64)
    return _Scores(probability, label, bad, bad_reasons)


def _score_chunk(data: bytes, stop_on_bad: bool) -> _Scores:
    """Worker task: a chunk as Arrow IPC bytes -> its scores."""
    if _SERVED is None:
        raise RuntimeError("worker started without a model")
    return score_table(_SERVED, _from_ipc(data), stop_on_bad)


# --- writing ----------------------------------------------------------------------------------------
def _put_in_place(temp: Path, target: Path, overwrite: bool) -> None:
    """Rename ``temp`` (a file, or a folder of parts) to ``target``; replaces only a file, and
    only when ``overwrite``, keeping its mode; never a folder."""
    if target.is_dir():  # made since the checks: never ours to replace
        raise RepriseError(
            f"{target} became a folder while scoring; predict never replaces a folder.",
            "move it away and run again, or name a new file.",
        )
    there = target.exists() or target.is_symlink()
    if there and not overwrite:
        raise _exists_error(target)
    if target.is_file() and temp.is_file():
        temp.chmod(stat.S_IMODE(target.stat().st_mode))
    if not there and temp.is_file():
        try:  # a link does not replace: a file made since the checks stays
            os.link(temp, target)
        except FileExistsError:
            raise _exists_error(target) from None
        except OSError:  # a file system without hard links
            os.replace(temp, target)
        else:
            temp.unlink()
        return
    if there and temp.is_dir():  # a folder does not rename over a file
        old = target.with_name(f"{_temp_prefix(target)}replaced.part")
        target.rename(old)
        temp.rename(target)
        old.unlink()
        return
    os.replace(temp, target)


def _exists_error(target: Path) -> RepriseError:
    """The error of a target made by another process while this one scored."""
    return RepriseError(
        f"{target} was made by another process while scoring; it is not replaced.",
        "run again with --overwrite to replace it, or name a new file.",
    )


def _umask() -> int:
    """This process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _Writer:
    """Writes Arrow batches to a temporary file beside ``target``; commit() renames it there."""

    def __init__(self, target: Path, kind: str, schema: pa.Schema, overwrite: bool) -> None:
        self.target = target
        self.overwrite = overwrite
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=_temp_prefix(target), suffix=".part")
        os.close(fd)
        self.temp = Path(name)
        self.temp.chmod(0o666 & ~_umask())  # as a plain open() would make it, not mkstemp's 0600
        self.rows = 0
        if kind == "parquet":
            # dictionary pages only where values repeat (a label); ids and scores rarely do
            dictionary = [f.name for f in schema if f.name in (LABEL, REASON)]
            self._writer: Any = pq.ParquetWriter(self.temp, schema, use_dictionary=dictionary)
        else:
            self._writer = pa_csv.CSVWriter(str(self.temp), schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def commit(self) -> None:
        self.close()
        _put_in_place(self.temp, self.target, self.overwrite)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
        self.temp.unlink(missing_ok=True)


# --- progress ---------------------------------------------------------------------------------------
class _Progress:
    """A one-line progress bar on stderr, shown only when stderr is a terminal."""

    def __init__(self, source: _Source) -> None:
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


# --- the local engine -------------------------------------------------------------------------------
def _id_values(plan: _Plan, table: pa.Table, first_row: int) -> pa.Array:
    """A chunk's ids: its id column, or its row numbers."""
    if plan.id_generated:
        return pa.array(np.arange(first_row, first_row + table.num_rows, dtype=np.int64))
    ids = table.column(plan.id_column)
    if pa.types.is_dictionary(ids.type):
        ids = ids.cast(ids.type.value_type)
    return ids.combine_chunks()


def _bad_row_error(
    plan: _Plan, row: int, ident: Any, reason: str, count: int, where: str
) -> RepriseError:
    """The one-line error of --on-error fail: the first bad row, its column and value."""
    which = f"row {row}" + ("" if plan.id_generated else f" ({plan.id_column} {ident!r})")
    more = f" ({count} bad rows {where})" if count > 1 else ""
    return RepriseError(
        f"{which} of {plan.input} cannot be scored: {reason}{more}; no output was written.",
        "correct the value (rows count from 0, the header not counted), or pass "
        "--on-error quarantine to set bad rows aside and score the rest.",
    )


def _id_type(plan: _Plan) -> pa.DataType:
    """The id's type in the output: as the input has it (text from CSV), int64 when generated."""
    if plan.id_generated:
        return pa.int64()
    if plan.input_format == "csv":
        return pa.string()
    kind = pq.read_schema(plan.input).field(plan.id_column).type
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _predict_local(
    plan: _Plan, served: ServedModel, chunk_rows: int, workers: int, fail: bool
) -> tuple[int, int, int, int]:
    """Score the input chunk by chunk, in input order; (read, scored, quarantined, workers)."""
    source = _Source(plan, chunk_rows)
    id_type = _id_type(plan)
    out_schema = pa.schema(
        [(plan.id_column, id_type), (PROBABILITY, pa.float64()), (LABEL, pa.int64())]
    )
    side_schema = pa.schema([(plan.id_column, id_type), (REASON, pa.string())])
    out = _Writer(plan.output, plan.output_format, out_schema, plan.overwrite)
    side = (
        _Writer(plan.quarantine, plan.output_format, side_schema, plan.overwrite)
        if plan.quarantine
        else None
    )
    progress = _Progress(source)
    counts = {"read": 0, "scored": 0, "quarantined": 0}

    def take(ids: pa.Array, first_row: int, scores: _Scores) -> None:
        """Write one scored chunk, given its ids (or stop at its first bad row)."""
        bad = scores.bad_positions
        if fail and len(bad):
            position = int(bad[0])
            raise _bad_row_error(
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
            _limit_threads()
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
    plan: _Plan,
    served: ServedModel,
    workers: int,
    chunks: Iterator[pa.Table],
    take: Callable[[pa.Array, int, _Scores], None],
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

        def submit(table: pa.Table) -> Future[_Scores]:
            return pool.submit(score_table, served, table.select(columns), fail)

    else:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=_forkserver(),
            initializer=_init_worker,
            initargs=(pickle.dumps(served),),
        )

        def submit(table: pa.Table) -> Future[_Scores]:
            return pool.submit(_score_chunk, _to_ipc(table.select(columns)), fail)

    pending: deque[tuple[pa.Array, int, Future[_Scores]]] = deque()
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


def _forkserver() -> Any:
    """The forkserver context, which imports the model's code once and forks workers from it."""
    # a clean process: no copy of this one's threads or memory, no import per worker
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["reprise.serving.model", "threadpoolctl"])
    return context


def _estimated_rows(path: Path, kind: str) -> int:
    """Rows of the input: a Parquet file's count, a CSV file's from its first lines' length."""
    if kind == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    if path.name.lower().endswith(".gz"):
        return sys.maxsize  # compressed: assume large
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    return path.stat().st_size * max(head.count(b"\n"), 1) // max(len(head), 1)


def _done(item: tuple[pa.Array, int, Future[_Scores]]) -> tuple[pa.Array, int, _Scores]:
    """An in-flight chunk's ids, first row and scores, waiting for them."""
    ids, offset, future = item
    return ids, offset, future.result()


# --- the Spark engine -------------------------------------------------------------------------------
_SPARK_MODELS: dict[str, ServedModel] = {}


def _executor_model(uri: str, meta: dict[str, Any]) -> ServedModel:
    """The model in a Spark Python worker, loaded once per worker from its URI."""
    if uri not in _SPARK_MODELS:
        _limit_threads()
        from reprise.serving.model import load

        _SPARK_MODELS[uri] = load(uri, meta)
    return _SPARK_MODELS[uri]


def _spark_session(workers: int, chunk_rows: int) -> Any:
    """A Spark session: local[workers] on 127.0.0.1 unless REPRISE_SPARK_MASTER names one."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise RepriseError("pyspark is not installed.", SPARK_START_HINT) from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # pyspark 4.3 warns on every pandas UDF that pandas 3 is not fully supported; the scores
    # are checked equal to the local engine's (tests/test_batch_e2e.py)
    os.environ.setdefault("PYTHONWARNINGS", f"ignore:{PANDAS3_WARNING}:FutureWarning")
    warnings.filterwarnings("ignore", message=PANDAS3_WARNING, category=FutureWarning)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    master = os.environ.get(SPARK_MASTER_ENV) or f"local[{workers}]"
    builder = SparkSession.builder.master(master).appName("reprise-predict")
    if master.startswith("local"):  # nothing listens beyond this machine
        builder = builder.config("spark.driver.host", "127.0.0.1").config(
            "spark.driver.bindAddress", "127.0.0.1"
        )
    builder = (
        builder.config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(min(chunk_rows, 100_000)))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.executorEnv.MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI", ""))
    )
    try:
        spark = builder.getOrCreate()
    except Exception as err:
        raise RepriseError(
            f"Spark could not start: {str(err).splitlines()[0]}", SPARK_START_HINT
        ) from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _spark_kind(data_type: Any) -> tuple[str, str]:
    """A Spark type as a kind of value, and its name."""
    from pyspark.sql import types as T

    spelled = data_type.simpleString()
    if isinstance(data_type, T.StringType | T.VarcharType | T.CharType):
        return "string", spelled
    if isinstance(data_type, T.NullType):
        return "null", spelled
    if isinstance(data_type, T.NumericType):
        return "number", spelled
    return "other", spelled


def _spark_type(kind: str) -> Any:
    """The Spark type of a signature kind."""
    from pyspark.sql import types as T

    return {"integer": T.LongType(), "number": T.DoubleType()}.get(kind, T.StringType())


def _with_row_numbers(frame: Any) -> Any:
    """A 0-based row number ``_row`` in read order, computed in the JVM."""
    # the partition's offset plus the position in it: monotonically_increasing_id holds the
    # partition in its upper 31 bits and the position in the lower 33
    from pyspark.sql import functions as F

    frame = frame.withColumn("_mid", F.monotonically_increasing_id())
    partition = F.shiftright(F.col("_mid"), 33)
    counts = sorted(
        (row["p"], row["n"])
        for row in frame.groupBy(partition.alias("p")).agg(F.count("*").alias("n")).collect()
    )
    offsets, total = [], 0
    for part, count in counts:
        offsets += [F.lit(part), F.lit(total)]
        total += count
    if not offsets:
        return frame.withColumn("_row", F.lit(0).cast("long")).drop("_mid")
    start = F.create_map(*offsets)[partition]
    row = F.col("_mid") - F.shiftleft(partition, 33) + start
    return frame.withColumn("_row", row).drop("_mid")


def _column_with_gaps(values: pd.Series, good: np.ndarray, kind: str) -> Any:
    """A typed column of the good rows spread over all rows, null where a row is bad."""
    if kind == "integer":
        data = np.zeros(len(good), dtype=np.int64)
        data[good] = values.to_numpy(dtype=np.int64)
        return pd.arrays.IntegerArray(data, ~good)
    if kind == "number":
        data = np.full(len(good), np.nan)
        data[good] = values.to_numpy(dtype=np.float64)
        return data
    data = np.full(len(good), None, dtype=object)
    data[good] = values.astype(object).where(values.notna(), None).to_numpy(dtype=object)
    return data


def _spark_prepare(uri: str, meta: dict[str, Any], columns: dict[str, str]) -> Any:
    """A pandas UDF: each row's reason ("" when good), probability and typed model columns."""
    # the same code as the local engine: ServedModel's checks and scores, per Arrow batch
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    fields = [
        T.StructField(REASON, T.StringType()),
        T.StructField(PROBABILITY, T.DoubleType()),
        *(T.StructField(c, _spark_type(kind)) for c, kind in columns.items()),
    ]

    def prepare(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        served = _executor_model(uri, meta)
        for frame in batches:
            frame = frame.reset_index(drop=True)
            # a missing number stays a bad row here: the label's spark_udf reads integer
            # columns as int64, which holds no missing value
            reasons, typed = check_and_type(served, frame, impute=False)
            good = (reasons == "").to_numpy()
            out = pd.DataFrame({REASON: reasons.to_numpy(dtype=object)})
            probability = np.full(len(frame), np.nan)
            if good.any():
                probability[good] = served.score(typed)[0]
            out[PROBABILITY] = probability
            for column, kind in columns.items():
                out[column] = _column_with_gaps(typed[column], good, kind)
            yield out

    return F.pandas_udf(prepare, T.StructType(fields))


def _spark_write(frame: Any, target: Path, kind: str, overwrite: bool) -> None:
    """Write ``frame`` as Spark writes: a folder of part files, renamed into place at the end."""
    temp = Path(tempfile.mkdtemp(dir=target.parent, prefix=_temp_prefix(target), suffix=".part"))
    temp.rmdir()
    try:
        writer = frame.write.mode("error")
        if kind == "parquet":
            writer.parquet(str(temp))
        else:
            writer.option("header", True).csv(str(temp))
        _put_in_place(temp, target, overwrite)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _predict_spark(
    input_path: Path,
    kind: str,
    output_path: Path,
    served: ServedModel,
    meta: dict[str, Any],
    id_column: str | None,
    chunk_rows: int,
    workers: int,
    on_error: str,
    overwrite: bool,
) -> tuple[_Plan, int, int, int]:
    """The same scoring on Apache Spark; (plan, rows read, scored, quarantined)."""
    # the label from mlflow.pyfunc.spark_udf; the row checks and the probability from a pandas
    # UDF running ServedModel's code
    import mlflow.pyfunc
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    spark = _spark_session(workers, chunk_rows)
    try:
        reader = spark.read
        if kind == "csv":
            frame = reader.option("header", True).option("inferSchema", False).csv(str(input_path))
        else:
            frame = reader.parquet(str(input_path))
        available = {f.name: _spark_kind(f.dataType) for f in frame.schema.fields}
        plan = _plan(
            input_path, output_path, served.columns, available, id_column, on_error, overwrite
        )
        ident = F.col("_row") if plan.id_generated else F.col(plan.id_column)
        frame = _with_row_numbers(frame.select(*[F.col(f"`{c}`") for c in plan.read_columns]))
        prepare = _spark_prepare(served.uri, meta, served.columns)
        checked = frame.select(
            F.col("_row"),
            ident.alias(plan.id_column),
            prepare(F.struct(*[F.col(f"`{c}`") for c in served.columns])).alias("_p"),
        ).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            reason = F.col("_p").getField(REASON)
            read = checked.count()
            bad = checked.filter(reason != "")
            quarantined = bad.count()
            if quarantined and on_error == "fail":
                row = bad.orderBy("_row").select("_row", plan.id_column, reason.alias("r")).first()
                raise _bad_row_error(
                    plan, row["_row"], row[plan.id_column], row["r"], quarantined, "in the file"
                )
            # env_manager "local": this environment is the model's (its warning says otherwise)
            pyfunc_log = logging.getLogger("mlflow.pyfunc")
            level = pyfunc_log.level
            pyfunc_log.setLevel(logging.ERROR)
            try:
                label = mlflow.pyfunc.spark_udf(
                    spark, served.uri, result_type="long", env_manager="local"
                )
            finally:
                pyfunc_log.setLevel(level)
            model_input = F.struct(*[F.col("_p").getField(c).alias(c) for c in served.columns])
            good = checked.filter(reason == "").select(
                F.col(plan.id_column),
                F.col("_p").getField(PROBABILITY).alias(PROBABILITY),
                label(model_input).alias(LABEL),
            )
            if plan.quarantine is not None:
                _spark_write(
                    bad.orderBy("_row").select(plan.id_column, reason.alias(REASON)),
                    plan.quarantine,
                    plan.output_format,
                    overwrite,
                )
            _spark_write(good, plan.output, plan.output_format, overwrite)
            scored = read - quarantined
        finally:
            checked.unpersist()
    except RepriseError:
        raise
    except Exception as err:
        if type(err).__name__ not in ("Py4JJavaError", "AnalysisException", "PythonException"):
            raise
        raise RepriseError(
            f"Spark failed: {str(err).strip().splitlines()[0][:500]}",
            "see the Spark error above; --engine local scores one machine's worth of rows.",
        ) from None
    finally:
        spark.stop()
    return plan, read, scored, quarantined


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


# --- the entry point --------------------------------------------------------------------------------
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
    kind = _check_paths(input_path, output_path, engine, on_error, overwrite)
    if engine == "local":  # read the header first: an unreadable file fails before the model loads
        _lean_arrow_memory()
        available = _available_local(input_path, kind)
    from reprise.serving.model import compiled_on_disk, load, resolve

    uri, meta = resolve(release, model)
    big = engine == "local" and workers > 1 and _estimated_rows(input_path, kind) > chunk_rows
    if big and not compiled_on_disk(meta):  # it may need processes: start their server now,
        _forkserver()  # which imports while the model loads
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
                plan = _plan(
                    input_path,
                    output_path,
                    served.columns,
                    available,
                    id_column,
                    on_error,
                    overwrite,
                )
                read, scored, quarantined, workers = _predict_local(
                    plan, served, chunk_rows, workers, on_error == "fail"
                )
            else:
                plan, read, scored, quarantined = _predict_spark(
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
