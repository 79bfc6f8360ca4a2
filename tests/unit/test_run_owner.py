"""reprise.owners on real processes, signals, folders and a real sqlite tracking store: which
owners are gone, which scratch folders go, what a signal does, which runs a check ends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from reprise import owners

HOST = socket.gethostname()


def ended_process() -> int:
    """The pid of a process that has run and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_this_process_is_its_own_live_owner() -> None:
    me = owners.this_process()
    assert (me.host, me.pid) == (HOST, os.getpid())
    assert me.start == owners.process_start(os.getpid())
    assert not owners.is_gone(me)
    assert owners.owner_from(me.tags()) == me


def test_gone_owners_are_every_kind_of_missing_process() -> None:
    me = owners.this_process()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
        gone = {
            "ended": owners.Owner(HOST, ended_process(), me.start),
            "pid reused by another process": owners.Owner(HOST, me.pid, f"{me.start}0"),
            "zombie": owners.Owner(HOST, zombie.pid, me.start),
            "never was": owners.Owner(HOST, 2**22 + 7, me.start),
        }
        assert {name for name, owner in gone.items() if owners.is_gone(owner)} == set(gone)
    finally:
        zombie.wait()


def test_an_owner_on_another_host_is_never_judged_gone() -> None:
    assert not owners.is_gone(owners.Owner(f"{HOST}-elsewhere", ended_process(), "x/1"))


@pytest.mark.parametrize(
    "tags",
    [{}, {owners.HOST_TAG: HOST}, {**owners.this_process().tags(), owners.PID_TAG: "12a"}],
    ids=["none", "host only", "pid not a number"],
)
def test_tags_without_a_whole_owner_name_none(tags: dict[str, str]) -> None:
    assert owners.owner_from(tags) is None


def test_only_the_scratch_folders_of_gone_owners_are_removed(tmp_path: Path) -> None:
    me = owners.this_process()
    kinds = {
        "live": me,
        "dead": owners.Owner(HOST, ended_process(), me.start),
        "reused": owners.Owner(HOST, me.pid, f"{me.start}0"),
        "other-host": owners.Owner(f"{HOST}-elsewhere", ended_process(), me.start),
    }
    for name, owner in kinds.items():
        folder = tmp_path / f"reprise-run-{name}"
        (folder / "reprise-get_data-x").mkdir(parents=True)
        (folder / "reprise-get_data-x" / "raw.parquet").write_bytes(b"PAR1")
        (folder / owners.OWNER_FILE).write_text(json.dumps(owner.tags()))
    (tmp_path / "reprise-get_data-legacy").mkdir()  # no owner file: nobody can tell
    (tmp_path / "reprise-run-broken").mkdir()
    (tmp_path / "reprise-run-broken" / owners.OWNER_FILE).write_text("{not json")
    (tmp_path / "reprise-a-file").write_text("not a folder")
    (tmp_path / "reprise-run-link").symlink_to(tmp_path / "reprise-run-dead")
    (tmp_path / "other-dead").mkdir()
    (tmp_path / "other-dead" / owners.OWNER_FILE).write_text(json.dumps(kinds["dead"].tags()))

    removed, unowned = owners.remove_dead_scratch(tmp_path)

    assert sorted(p.name for p in removed) == ["reprise-run-dead", "reprise-run-reused"]
    assert sorted(p.name for p in unowned) == ["reprise-get_data-legacy", "reprise-run-broken"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "other-dead",
        "reprise-a-file",
        "reprise-get_data-legacy",
        "reprise-run-broken",
        "reprise-run-link",
        "reprise-run-live",
        "reprise-run-other-host",
    ]


def test_a_scratch_folder_is_the_childrens_temp_folder_and_goes_after(tmp_path: Path) -> None:
    os.environ["TMPDIR"] = str(tmp_path)
    try:
        with owners.scratch_for_children() as folder:
            owner = json.loads((folder / owners.OWNER_FILE).read_text())
            assert owner == owners.this_process().tags()
            child = subprocess.run(
                [sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
                capture_output=True,
                text=True,
                check=True,
            )
            assert child.stdout.strip() == str(folder)
        assert not folder.exists()
        assert os.environ["TMPDIR"] == str(tmp_path)
    finally:
        del os.environ["TMPDIR"]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_raises_stopped_once_then_handlers_come_back(
    signum: int, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    before = signal.getsignal(signum)
    with pytest.raises(owners.Stopped) as caught, owners.signals_stop():
        try:
            os.kill(os.getpid(), signum)
            signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a point where the handler runs
        finally:
            os.kill(os.getpid(), signum)  # the second, while stopping: ignored
    assert caught.value.exit_code == code
    assert f"{signal.Signals(signum).name} ignored: already stopping" in caplog.text
    assert caught.value.summary() == (
        f"stopped by {signal.Signals(signum).name}: runs ended KILLED: none had started."
    )
    assert signal.getsignal(signum) == before


def test_processes_are_found_by_run_and_stopped_even_if_they_ignore_sigterm() -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        env={**os.environ, "MLFLOW_RUN_ID": "run-a"},
        stdout=subprocess.PIPE,
        text=True,
    )
    plain = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**os.environ, "MLFLOW_RUN_ID": "run-b"},
    )
    try:
        assert stubborn.stdout.readline() == "ready\n"
        found = owners.processes_of_runs(["run-a", "run-b", "run-c"])
        assert found == {stubborn.pid: "run-a", plain.pid: "run-b"}
        assert set(owners.descendants(os.getpid())) >= set(found)
        assert sorted(owners.stop_processes(found, grace=0.5)) == sorted(found)
        assert stubborn.wait(5) == -signal.SIGKILL
        assert plain.wait(5) == -signal.SIGTERM
    finally:
        for process in (stubborn, plain):
            process.kill()
            process.wait()


def test_a_check_of_the_store_ends_only_the_runs_of_gone_owners(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("owners", artifact_location=tmp_path.as_uri())
    me = owners.this_process()
    gone = owners.Owner(HOST, ended_process(), me.start)
    elsewhere = owners.Owner(f"{HOST}-elsewhere", 1, "x/1")

    def run(name: str, owner: owners.Owner | None = None, parent: str = "") -> str:
        tags = {"mlflow.runName": name, **(owner.tags() if owner else {})}
        if parent:
            tags[owners.PARENT_TAG] = parent
        return client.create_run(experiment, tags=tags).info.run_id

    dead = run("pipeline", gone)
    runs = {
        "dead pipeline": dead,
        "its step": run("get_data", parent=dead),
        "reused pid": run("pipeline", owners.Owner(HOST, me.pid, f"{me.start}0")),
        "live": run("pipeline", me),
        "live step": run("get_data", parent=run("pipeline", me)),
        "other host": run("pipeline", elsewhere),
        "no owner": run("mlflow run"),
    }
    finished = run("pipeline", gone)
    client.set_terminated(finished, "FINISHED")

    found = owners.reap(client)

    status = {name: client.get_run(r).info.status for name, r in runs.items()}
    killed = {"dead pipeline", "its step", "reused pid"}
    assert {n for n, s in status.items() if s == "KILLED"} == killed
    assert {n for n, s in status.items() if s == "RUNNING"} == set(runs) - killed
    assert client.get_run(finished).info.status == "FINISHED"
    assert client.get_run(dead).data.tags[owners.KILLED_TAG] == f"its owner, {gone}, is gone"
    assert {r.info.run_id for r, _ in found.killed} == {runs[n] for n in killed}
    assert [r.info.run_id for r, _ in found.elsewhere] == [runs["other host"]]
    assert [r.info.run_id for r in found.unowned] == [runs["no owner"]]
    assert not owners.reap(client).killed  # nothing left to do
