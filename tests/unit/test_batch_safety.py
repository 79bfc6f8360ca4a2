"""Batch scoring's safety rules, in milliseconds: what a number column accepts (one rule for
requests, rows and files), which outputs are refused before scoring, and which leftovers of
dead runs are removed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from reprise.errors import RepriseError
from reprise.serving.batch.plan import check_paths, remove_stale_temps
from reprise.serving.batch.score import arrow_clean, check_and_type
from reprise.serving.batch.write import put_in_place
from reprise.serving.model import ServedModel
from reprise.serving.rows import unfit_numbers, value_problem

COLUMNS = {"n": "integer", "x": "number", "t": "string"}
# floats an int64 column cannot hold exactly: too large for int64, beyond 2**53 (where floats
# skip integers), not whole, not finite
BAD_INTEGER_FLOATS = [
    1e308,
    -1e308,
    1e30,
    9.3e18,
    -9.3e18,
    2.0**63,
    2.0**53,
    2.0**53 + 2,
    -(2.0**53),
    1.5,
    -0.25,
    float("inf"),
    float("-inf"),
    float("nan"),
]
GOOD_INTEGER_FLOATS = [0.0, -0.0, 1.0, -7.0, 2.0**53 - 1, -(2.0**53 - 1), 1e15]
GOOD_INTEGERS = [0, 1, -1, 2**53 + 1, 2**63 - 1, -(2**63)]  # ints are exact at any size in range
BAD_INTEGERS = [2**63, -(2**63) - 1, 10**30, 10**400]


@pytest.fixture
def served() -> ServedModel:
    return ServedModel(uri="test", model=None, columns=COLUMNS)


def test_value_problem_and_the_vectorised_rule_agree_on_every_class_of_number():
    for value in BAD_INTEGER_FLOATS + GOOD_INTEGER_FLOATS:
        refused = bool(unfit_numbers(np.array([value]), "integer")[0])
        assert refused == bool(value_problem(value, "integer")), value
        assert refused == (value in BAD_INTEGER_FLOATS or value != value), value
    for value in BAD_INTEGER_FLOATS:  # a number column refuses only what is not finite
        assert bool(value_problem(value, "number")) == (not np.isfinite(value)), value
    for value in GOOD_INTEGERS:
        assert value_problem(value, "integer") == "", value
        assert not unfit_numbers(np.array([value]), "integer")[0]
    for value in BAD_INTEGERS:
        assert "out of range of a 64-bit integer" in value_problem(value, "integer")
    unsigned = np.array([0, 2**63 - 1, 2**63, 2**64 - 1], dtype=np.uint64)
    assert unfit_numbers(unsigned, "integer").tolist() == [False, False, True, True]
    assert unfit_numbers(np.array([True, False]), "integer").all()  # a bool is no number


def test_value_problem_says_why_a_float_is_refused():
    assert value_problem(1e30, "integer") == (
        "is not an integer a 64-bit integer holds exactly (as a float, within ±2**53), got 1e+30"
    )
    assert value_problem(1.5, "integer") == "must be an integer, got 1.5"
    assert value_problem(float("inf"), "number") == "must be a finite number, got inf"


def _rows(values: list) -> pd.DataFrame:
    return pd.DataFrame({"n": values, "x": [1.5] * len(values), "t": ["a"] * len(values)})


@pytest.mark.parametrize(
    "values",
    [
        BAD_INTEGER_FLOATS + GOOD_INTEGER_FLOATS,  # a Parquet float column
        [repr(v) for v in BAD_INTEGER_FLOATS + GOOD_INTEGER_FLOATS],  # a CSV's text
        ["9300000000000000000", "1e30", "1e308", "7"],  # text too large for an int64
    ],
    ids=["floats", "text-of-floats", "text-of-large-integers"],
)
def test_file_rows_follow_the_rule_without_overflow(served: ServedModel, values: list):
    frame = _rows(values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "overflow encountered in cast" fails the test
        reasons, typed = check_and_type(served, frame)
    expected = [bool(value_problem(float(v), "integer")) for v in values]
    assert (reasons != "").tolist() == expected
    for reason, value in zip(reasons[reasons != ""], frame["n"][reasons != ""], strict=True):
        shown = "a missing value" if isinstance(value, float) and np.isnan(value) else repr(value)
        assert reason.startswith("n: ") and reason.endswith(f"got {shown}"), reason
    kept = [float(v) for v, bad in zip(values, expected, strict=True) if not bad]
    assert typed["n"].tolist() == [int(v) for v in kept]
    assert typed["n"].dtype == np.int64


def test_a_non_finite_number_is_refused_in_files_as_over_http(served: ServedModel):
    frame = pd.DataFrame({"n": [1, 2, 3], "x": [1.0, float("inf"), float("-inf")], "t": "a"})
    reasons, _ = check_and_type(served, frame)
    assert reasons.tolist() == ["", "x: must be a finite number, got inf", reasons[2]]
    assert reasons[2] == "x: must be a finite number, got -inf"
    table = pa.table({"n": [1, 2], "x": [1.0, float("inf")], "t": ["a", "b"]})
    assert not arrow_clean(COLUMNS, table)  # not the unchecked fast path
    assert arrow_clean(COLUMNS, table.slice(0, 1))


def test_a_large_unsigned_integer_is_refused(served: ServedModel):
    frame = pd.DataFrame(
        {"n": np.array([5, 2**64 - 1], dtype=np.uint64), "x": [1.0, 2.0], "t": ["a", "b"]}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reasons, typed = check_and_type(served, frame)
    assert reasons.tolist() == [
        "",
        "n: is out of range of a 64-bit integer, got 18446744073709551615",
    ]
    assert typed["n"].tolist() == [5]


# --- where the output may go -----------------------------------------------------------------------
@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "in.csv").write_text("a\n1\n")
    return tmp_path


def _refused(
    inp: Path, out: Path, *, overwrite: bool = False, on_error: str = "fail", engine: str = "local"
) -> str:
    with pytest.raises(RepriseError) as caught:
        check_paths(inp, out, engine, on_error, overwrite)
    text = str(caught.value)
    assert "\n" not in text and " Fix: " in text, text
    return text


def test_an_output_that_is_or_holds_the_input_is_refused_even_with_overwrite(files: Path):
    inp = files / "in.csv"
    (files / "link.csv").symlink_to(inp)
    os.link(inp, files / "hard.csv")
    (files / "d.parquet").mkdir()
    (files / "d.parquet" / "p.parquet").write_bytes(b"data")
    cases = {
        inp: "is INPUT",
        files / "." / "in.csv": "is INPUT",
        files / "link.csv": "is INPUT",
        files / "hard.csv": "is INPUT",
    }
    for out, said in cases.items():
        assert said in _refused(inp, out, overwrite=True), out
    assert "holds INPUT" in _refused(files / "d.parquet" / "p.parquet", files / "d.parquet")
    inside = files / "d.parquet" / "scored.parquet"  # a partitioned input: a new part in it
    assert "is inside INPUT" in _refused(files / "d.parquet", inside, engine="spark")
    # the quarantine file is held to the same rules: x.quarantine.csv is x.csv's
    quarantined = files / "x.quarantine.csv"
    quarantined.write_text("a\n1\n")
    text = _refused(quarantined, files / "x.csv", on_error="quarantine")
    assert text.startswith(f"The quarantine file {quarantined} is INPUT"), text
    assert (files / "d.parquet" / "p.parquet").read_bytes() == b"data"
    assert inp.read_text() == "a\n1\n"


def test_an_existing_output_needs_overwrite_and_a_folder_or_read_only_file_never_goes(
    files: Path,
):
    inp = files / "in.csv"
    (files / "old.csv").write_text("kept")
    text = _refused(inp, files / "old.csv")
    assert "exists" in text and "--overwrite" in text and "OVERWRITE=1" in text
    check_paths(inp, files / "old.csv", "local", "fail", True)  # allowed with it

    (files / "dir.csv").mkdir()
    (files / "dir.csv" / "mine.txt").write_text("kept")
    for overwrite in (False, True):
        assert "is a folder" in _refused(inp, files / "dir.csv", overwrite=overwrite)
    assert (files / "dir.csv" / "mine.txt").read_text() == "kept"

    (files / "ro.csv").write_text("kept")
    (files / "ro.csv").chmod(0o444)
    text = _refused(inp, files / "ro.csv", overwrite=True)
    assert "read-only" in text and "chmod u+w" in text

    (files / "dangling.csv").symlink_to(files / "nowhere.csv")
    assert "exists" in _refused(inp, files / "dangling.csv")
    (files / "out.quarantine.csv").write_text("kept")
    assert "The quarantine file" in _refused(inp, files / "out.csv", on_error="quarantine")
    assert (files / "old.csv").read_text() == "kept"


def test_a_missing_or_unwritable_folder_is_one_line(files: Path):
    inp = files / "in.csv"
    text = _refused(inp, files / "no" / "such" / "out.csv")
    assert "does not exist" in text and "create it first" in text
    locked = files / "locked"
    locked.mkdir()
    with unwritable(locked):
        text = _refused(inp, locked / "out.csv")
    assert text.startswith(f"Cannot write in {locked}, the folder of OUTPUT:"), text
    assert "make this one writable" in text
    assert list(locked.iterdir()) == []  # the probe left nothing


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """``folder`` made unwritable for this process: immutable for root (file modes do not stop
    root), mode 0555 for anyone else."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


# --- writing in place ------------------------------------------------------------------------------
def test_put_in_place_keeps_the_mode_and_never_replaces_a_folder(tmp_path: Path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    target.chmod(0o640)
    temp = tmp_path / ".out.csv.1.abc.part"
    temp.write_text("new")
    with pytest.raises(RepriseError, match="another process"):
        put_in_place(temp, target, overwrite=False)
    put_in_place(temp, target, overwrite=True)
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o640

    folder = tmp_path / "folder.csv"
    folder.mkdir()
    (folder / "mine").write_text("kept")
    temp.write_text("new")
    with pytest.raises(RepriseError, match="never replaces a folder"):
        put_in_place(temp, folder, overwrite=True)
    assert (folder / "mine").read_text() == "kept"


def test_stale_temporary_files_of_dead_writers_go_and_no_others(tmp_path: Path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    target = tmp_path / "out.parquet"
    stale = [
        tmp_path / f".out.parquet.{dead_pid}.k2j_x9ab.part",
        tmp_path / f".out.parquet.{dead_pid}.replaced.part",
    ]
    spark_folder = tmp_path / f".out.parquet.{dead_pid}.a1b2c3d4.part"
    kept = [
        tmp_path / f".out.parquet.{os.getpid()}.livefile.part",  # this process: live
        tmp_path / f".out.parquet.{os.getppid()}.livefile.part",  # the parent: live
        tmp_path / f".other.parquet.{dead_pid}.k2j_x9ab.part",  # another output's
        tmp_path / ".out.parquet.k2j_x9ab.part",  # no pid: whose, nobody can tell
        tmp_path / f"out.parquet.{dead_pid}.k2j_x9ab.part",  # not hidden: not our name
        tmp_path / f".out.parquet.{dead_pid}.k2j_x9ab.part.bak",
    ]
    for path in stale + kept:
        path.write_bytes(b"x" * 10)
    spark_folder.mkdir()
    (spark_folder / "part-0000.parquet").write_bytes(b"x")
    remove_stale_temps(target)
    assert [p for p in stale + [spark_folder] if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []
