"""Writing a batch scoring's outputs: to a temporary file beside the target, renamed into
place at the end, replacing a file only when asked and never a folder."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from reprise.errors import RepriseError
from reprise.serving.batch.plan import (
    LABEL,
    REASON,
    temp_prefix,
)


def put_in_place(temp: Path, target: Path, overwrite: bool) -> None:
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
        old = target.with_name(f"{temp_prefix(target)}replaced.part")
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


class Writer:
    """Writes Arrow batches to a temporary file beside ``target``; commit() renames it there."""

    def __init__(self, target: Path, kind: str, schema: pa.Schema, overwrite: bool) -> None:
        self.target = target
        self.overwrite = overwrite
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=temp_prefix(target), suffix=".part")
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
        put_in_place(self.temp, self.target, self.overwrite)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
        self.temp.unlink(missing_ok=True)
