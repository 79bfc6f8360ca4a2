"""Reading the input of a batch scoring: its columns and their kinds before the model
loads, then chunks of exactly chunk_rows rows as Arrow tables, in file order."""

from __future__ import annotations

import contextlib
import csv
import gzip
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from reprise.errors import RepriseError
from reprise.serving.batch.plan import (
    Plan,
    arrow_kind,
)
from reprise.serving.rows import MiscountedLine, csv_records

# Bytes the CSV reader parses at once; chunks of rows are cut from these blocks.
CSV_BLOCK_BYTES = 1 << 20  # the reader reads ~40 blocks ahead
PARQUET_BUFFER_BYTES = 1 << 20
_DICTIONARY = pa.dictionary(pa.int32(), pa.string())


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
            for _ in csv_records(handle):
                pass
    except MiscountedLine as err:
        return f" at line {err.line} ({err.fields} fields, the header {err.header})"
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        return f" ({err})"
    return ""


def available_local(path: Path, kind: str) -> dict[str, tuple[str, str]]:
    """The input's columns and their kinds; CSV columns are text, checked row by row."""
    if kind == "csv":
        return {name: ("string", "text") for name in _csv_header(path)}
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise RepriseError(
            f"INPUT {path} cannot be read as Parquet: {err}", "give a valid Parquet file."
        ) from None
    return {f.name: (arrow_kind(f.type), str(f.type)) for f in schema}


class Source:
    """The input as Arrow batches of the columns to read, and how far reading has got."""

    def __init__(self, plan: Plan, chunk_rows: int) -> None:
        self.plan = plan
        self.chunk_rows = chunk_rows
        self.total_rows: int | None = None
        self._raw: pa.NativeFile | None = None
        self._size = plan.input.stat().st_size

    def fraction(self) -> float | None:
        """How much of a CSV file has been read (None when unknown)."""
        if self._raw is None or self._raw.closed or not self._size:
            return None
        return min(1.0, float(self._raw.tell()) / self._size)

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


def estimated_rows(path: Path, kind: str) -> int:
    """Rows of the input: a Parquet file's count, a CSV file's from its first lines' length."""
    if kind == "parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    if path.name.lower().endswith(".gz"):
        return sys.maxsize  # compressed: assume large
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    return path.stat().st_size * max(head.count(b"\n"), 1) // max(len(head), 1)
