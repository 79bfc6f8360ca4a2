"""Batch scoring never destroys data, as a user meets it: `python -m reprise predict` refuses,
before scoring, every output that is, holds or sits in the input, a folder, an existing file
(without --overwrite) or a folder it cannot write; a kill -9 leaves a temporary file that the
next run of that output removes; an integer column refuses values an int64 cannot hold exactly,
in Parquet, in CSV and over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from test_batch_e2e import counts, ok, predict
from test_batch_safety import unwritable
from test_serving_e2e import start_server, stop_server

from reprise.serving.rows import value_problem
from support import ROOT, ServedStore

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("served")]

TARGET = "income"
KILL_ROWS = 2_000_000  # enough rows that a run is still writing when it is killed
# floats an integer column cannot hold exactly, and where each goes in the test rows
BAD_AGES = {3: 1e308, 5: 1e30, 8: 9.3e18, 13: -9.3e18, 21: 2.0**53, 34: 1.5}
GOOD_BIG_AGE = (40, 1e15)  # whole and below 2**53: scored


@pytest.fixture(scope="module")
def frame(served_store: ServedStore) -> pd.DataFrame:
    """The test split as the model reads it."""
    return pd.read_parquet(served_store.test_table).drop(columns=[TARGET])


def tree(folder: Path) -> dict[str, tuple[bytes | str, int]]:
    """Every entry under ``folder``: its bytes (or a link's target) and its mode."""
    found: dict[str, tuple[bytes | str, int]] = {}
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        if path.is_symlink():
            found[str(path)] = (os.readlink(path), mode)
        elif path.is_file():
            found[str(path)] = (path.read_bytes(), mode)
        else:
            found[str(path)] = (b"", mode)
    return found


# (arguments from the folder, what the one line says); each arranges its folder first
def _folder_output(d: Path) -> list[str]:
    (d / "results.parquet").mkdir()
    (d / "results.parquet" / "mine.txt").write_text("a week of work")
    return ["--input", str(d / "in.parquet"), "--output", str(d / "results.parquet")]


def _output_holds_input(d: Path) -> list[str]:
    (d / "d.parquet").mkdir()
    (d / "in.parquet").rename(d / "d.parquet" / "p.parquet")
    return ["--input", str(d / "d.parquet" / "p.parquet"), "--output", str(d / "d.parquet")]


def _symlink_to_input(d: Path) -> list[str]:
    (d / "link.parquet").symlink_to(d / "in.parquet")
    return ["--input", str(d / "in.parquet"), "--output", str(d / "link.parquet"), "--overwrite"]


def _hard_link_to_input(d: Path) -> list[str]:
    os.link(d / "in.parquet", d / "hard.parquet")
    return ["--input", str(d / "in.parquet"), "--output", str(d / "hard.parquet"), "--overwrite"]


def _quarantine_is_input(d: Path) -> list[str]:
    (d / "in.parquet").rename(d / "x.quarantine.parquet")
    args = ["--input", str(d / "x.quarantine.parquet"), "--output", str(d / "x.parquet")]
    return [*args, "--on-error", "quarantine", "--overwrite"]


def _existing_file(d: Path) -> list[str]:
    (d / "scored.parquet").write_bytes(b"last month's scores")
    return ["--input", str(d / "in.parquet"), "--output", str(d / "scored.parquet")]


def _read_only_file(d: Path) -> list[str]:
    (d / "scored.parquet").write_bytes(b"last month's scores")
    (d / "scored.parquet").chmod(0o444)
    return ["--input", str(d / "in.parquet"), "--output", str(d / "scored.parquet"), "--overwrite"]


def _missing_folder(d: Path) -> list[str]:
    return ["--input", str(d / "in.parquet"), "--output", str(d / "no" / "such" / "out.parquet")]


REFUSALS: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "an existing folder": (_folder_output, "is a folder; predict never replaces or deletes"),
    "the folder holding the input": (_output_holds_input, "holds INPUT"),
    "the input itself": (
        lambda d: ["--input", f"{d}/in.parquet", "--output", f"{d}/in.parquet"],
        "is INPUT",
    ),
    "a symlink to the input": (_symlink_to_input, "is INPUT"),
    "a hard link to the input": (_hard_link_to_input, "is INPUT"),
    "a quarantine file that is the input": (_quarantine_is_input, "The quarantine file"),
    "an existing file": (_existing_file, "exists. Fix: pass --overwrite"),
    "a read-only file, with --overwrite": (_read_only_file, "is read-only"),
    "a folder that does not exist": (_missing_folder, "does not exist"),
}


def refused(result: subprocess.CompletedProcess, said: str) -> str:
    """The one line of a refusal, checked: exit 1, cause and fix, no traceback, before scoring."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert said in lines[0] and " Fix: " in lines[0], lines[0]
    # the model was not even loaded: nothing was scored (its log line: "scoring X with models:/")
    assert " with models:/" not in result.stderr and not result.stdout, result.stderr
    return lines[0]


@pytest.mark.parametrize("case", list(REFUSALS))
def test_an_output_that_would_destroy_data_is_refused_before_scoring(
    served_store: ServedStore, frame: pd.DataFrame, tmp_path: Path, case: str
):
    arrange, said = REFUSALS[case]
    frame.head(200).to_parquet(tmp_path / "in.parquet", index=False)
    args = arrange(tmp_path)
    before = tree(tmp_path)
    refused(predict(served_store, *args), said)
    assert tree(tmp_path) == before  # nothing deleted, replaced, re-moded or left behind


def test_an_unwritable_folder_is_one_line_before_scoring(
    served_store: ServedStore, frame: pd.DataFrame, tmp_path: Path
):
    frame.head(200).to_parquet(tmp_path / "in.parquet", index=False)
    locked = tmp_path / "locked"
    locked.mkdir()
    with unwritable(locked):  # immutable when run as root, whom modes do not stop
        result = predict(
            served_store, "--input", str(tmp_path / "in.parquet"), "--output", str(locked / "o.csv")
        )
    line = refused(result, f"Cannot write in {locked}, the folder of OUTPUT")
    assert "make this one writable" in line
    assert list(locked.iterdir()) == []


def test_overwrite_replaces_a_file_and_keeps_its_mode(
    served_store: ServedStore, frame: pd.DataFrame, tmp_path: Path
):
    frame.head(300).to_parquet(tmp_path / "in.parquet", index=False)
    out = tmp_path / "scored.parquet"
    out.write_bytes(b"last month's scores")
    out.chmod(0o640)
    args = ["--input", str(tmp_path / "in.parquet"), "--output", str(out), "--overwrite"]
    assert counts(ok(predict(served_store, *args))) == (300, 300, 0)
    assert len(pd.read_parquet(out)) == 300 and out.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "scored.parquet"]


@pytest.fixture
def sleeper() -> Iterator[int]:
    """The pid of a live process (a sleep), stopped by that pid at the end."""
    process = subprocess.Popen(["sleep", "300"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait(timeout=10)


def test_a_killed_run_leaves_a_temp_file_the_next_run_of_that_output_removes(
    served_store: ServedStore, frame: pd.DataFrame, tmp_path: Path, sleeper: int
):
    big = frame.sample(KILL_ROWS, replace=True, random_state=0).reset_index(drop=True)
    big["age"] = big["age"].astype("float64")  # every chunk through the row checks: slower
    big.to_parquet(tmp_path / "big.parquet", index=False)
    out = tmp_path / "out.csv"
    args = ["--input", str(tmp_path / "big.parquet"), "--output", str(out)]
    command = [sys.executable, "-m", "reprise", "predict", *args, "--workers", "1"]
    command += ["--chunk-rows", "20000"]
    run = subprocess.Popen(
        command,
        cwd=ROOT,
        env=served_store.workspace.env,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pattern = f".out.csv.{run.pid}.*.part"
    deadline = time.monotonic() + 120
    try:
        while not [p for p in tmp_path.glob(pattern) if p.stat().st_size > 0]:
            assert run.poll() is None, f"predict ended before it was killed: {run.stderr.read()}"
            assert time.monotonic() < deadline, "no temporary file appeared in 120 s"
            time.sleep(0.02)
    finally:
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL
    (left,) = tmp_path.glob(pattern)
    assert not out.exists()
    # a live writer's file (the pid of a running process) and another output's stay
    live = tmp_path / f".out.csv.{sleeper}.a1b2c3d4.part"
    other = tmp_path / f".other.csv.{run.pid}.a1b2c3d4.part"
    live.write_bytes(b"being written")
    other.write_bytes(b"another output's")

    small = tmp_path / "small.parquet"
    frame.head(100).to_parquet(small, index=False)
    again = predict(served_store, "--input", str(small), "--output", str(out))
    assert counts(ok(again)) == (100, 100, 0)
    assert not left.exists(), "the dead run's temporary file is still there"
    assert f"removed {left}" in again.stderr
    assert live.read_bytes() == b"being written" and other.exists()
    assert len(pd.read_csv(out)) == 100


# --- integers an int64 cannot hold --------------------------------------------------------------
def _ages(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame.head(60).reset_index(drop=True)
    rows.insert(0, "id", np.arange(len(rows)) + 500)
    ages = rows["age"].astype("float64")
    for row, value in [*BAD_AGES.items(), GOOD_BIG_AGE]:
        ages[row] = value
    return rows.assign(age=ages)


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_integers_an_int64_cannot_hold_are_quarantined_with_the_reason(
    served_store: ServedStore, frame: pd.DataFrame, tmp_path: Path, kind: str
):
    rows = _ages(frame)
    source = tmp_path / f"in.{kind}"
    if kind == "parquet":
        rows.to_parquet(source, index=False)  # a float column where the model reads integers
        shown = {row: repr(value) for row, value in BAD_AGES.items()}
    else:
        text = rows.astype(object).where(rows.notna(), "")
        text["age"] = [repr(v) if i in BAD_AGES else str(int(v)) for i, v in enumerate(rows.age)]
        text.loc[8, "age"] = "9300000000000000000"  # digits beyond an int64 as text
        text.to_csv(source, index=False)
        shown = {row: repr(text["age"][row]) for row in BAD_AGES}
    out = tmp_path / f"out.{kind}"
    args = ["--input", str(source), "--output", str(out), "--on-error", "quarantine"]
    result = predict(served_store, *args)
    assert counts(ok(result)) == (60, 60 - len(BAD_AGES), len(BAD_AGES))
    assert "overflow" not in result.stderr, result.stderr
    side = (
        pd.read_parquet(tmp_path / "out.quarantine.parquet")
        if kind == "parquet"
        else (pd.read_csv(tmp_path / "out.quarantine.csv"))
    )
    assert side["id"].astype(int).tolist() == [500 + row for row in BAD_AGES]
    for reason, row in zip(side["reason"], BAD_AGES, strict=True):
        assert reason.startswith("age: ") and reason.endswith(f"got {shown[row]}"), reason
    scored = pd.read_parquet(out) if kind == "parquet" else pd.read_csv(out)
    assert 500 + GOOD_BIG_AGE[0] in scored["id"].astype(int).tolist()


def test_an_integer_an_int64_cannot_hold_stops_a_fail_run_naming_row_and_column(
    served_store: ServedStore, frame: pd.DataFrame, tmp_path: Path
):
    _ages(frame).to_parquet(tmp_path / "in.parquet", index=False)
    out = tmp_path / "out.parquet"
    result = predict(served_store, "--input", str(tmp_path / "in.parquet"), "--output", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "row 3 (id 503)" in last and "age: " in last and "1e+308" in last, last
    assert f"({len(BAD_AGES)} bad rows" in last and "Fix: " in last, last
    assert not out.exists()


def test_the_server_refuses_the_same_integers(
    served_store: ServedStore, frame: pd.DataFrame, tmp_path: Path
):
    server = start_server(served_store.workspace.env, tmp_path / "server.log")
    try:
        row = frame.head(1).astype(object).where(frame.head(1).notna(), None).to_dict("records")[0]
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for value in [*BAD_AGES.values(), 9300000000000000000, 10**30]:
                answer = client.post("/predict", json={**row, "age": value})
                assert answer.status_code == 422, (value, answer.text)
                assert answer.json()["field"] == "age", answer.text
                assert answer.json()["problem"] == value_problem(value, "integer")
            header = ",".join(row)
            for text in ["1e30", "9.3e18", "9300000000000000000", "1e308"]:
                line = ",".join(text if c == "age" else str(v) for c, v in row.items())
                answer = client.post(
                    "/invocations",
                    content=f"{header}\n{line}\n".encode(),
                    headers={"Content-Type": "text/csv"},
                )
                assert answer.status_code == 422, (text, answer.text)
                assert answer.json()["field"] == "age", answer.text
            good = client.post("/predict", json={**row, "age": GOOD_BIG_AGE[1]})
            assert good.status_code == 200, good.text
    finally:
        stop_server(server)
    assert "overflow" not in server.log_text()
