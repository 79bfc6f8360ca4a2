"""The plan of a batch scoring, checked before any row is scored: the input's and the outputs'
types by suffix, the id column and the columns to read, the model's columns present and of a
type that can hold their values; and the targets refused when writing them would destroy data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from reprise import owners
from reprise.errors import RepriseError
from reprise.serving.rows import missing_columns

log = logging.getLogger(__name__)

INPUT_SUFFIXES = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}
OUTPUT_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
ID_DEFAULT = "id"
ROW_COLUMN = "row"  # the generated id: 0-based row number in the input

PROBABILITY, LABEL, REASON = "probability", "label", "reason"


@dataclass
class Plan:
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


def arrow_kind(kind: pa.DataType) -> str:
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
    missing = missing_columns(columns, available)
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


def make_plan(
    input_path: Path,
    output_path: Path,
    columns: dict[str, str],
    available: dict[str, tuple[str, str]],
    id_column: str | None,
    on_error: str,
    overwrite: bool = False,
) -> Plan:
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
    return Plan(
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


def check_paths(
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
        remove_stale_temps(target)
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
        fd, probe = tempfile.mkstemp(dir=folder, prefix=temp_prefix(target), suffix=".part")
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


def temp_prefix(target: Path) -> str:
    """The start of this process's temporary names beside ``target``: hidden, with the pid
    that owns them, so a later run can tell a dead run's leftovers from a live run's files."""
    return f".{target.name}.{os.getpid()}."


def remove_stale_temps(target: Path) -> None:
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


def bad_row_error(
    plan: Plan, row: int, ident: Any, reason: str, count: int, where: str
) -> RepriseError:
    """The one-line error of --on-error fail: the first bad row, its column and value."""
    which = f"row {row}" + ("" if plan.id_generated else f" ({plan.id_column} {ident!r})")
    more = f" ({count} bad rows {where})" if count > 1 else ""
    return RepriseError(
        f"{which} of {plan.input} cannot be scored: {reason}{more}; no output was written.",
        "correct the value (rows count from 0, the header not counted), or pass "
        "--on-error quarantine to set bad rows aside and score the rest.",
    )
