"""Who owns a run, and what to do when the owner is gone.

A pipeline run records its owner: the process that will end it, as host, pid and start time (read
from /proc/<pid>/stat with the boot id, so a pid reused by another process is not taken for the
owner). A step run is owned through its parent (tag mlflow.parentRunId): MLflow creates it inside
``mlflow.projects.run`` and hands its id back only when the step is over. A run still RUNNING
whose owner on this host is gone is ended KILLED, with the reason in tag ``reprise.killed``, and
the processes still working for it (their environment names it in MLFLOW_RUN_ID) are stopped.

The steps' temporary files (copies of training data) go in a folder of the system temp folder
that holds its owner (``reprise-run-<pid>-*/owner.json``): a folder whose owner is gone is removed,
never a live one's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from reprise import tags

if TYPE_CHECKING:  # mlflow takes seconds to import: only the type checker reads it here
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

HOST_TAG = tags.OWNER_HOST_TAG
PID_TAG = tags.OWNER_PID_TAG
START_TAG = tags.OWNER_START_TAG
KILLED_TAG = tags.KILLED_TAG
PARENT_TAG = "mlflow.parentRunId"
SCRATCH_PREFIX = "reprise-run-"
OWNER_FILE = "owner.json"
PROC = Path("/proc")
# A step gets this long to end after SIGTERM before it gets SIGKILL.
GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Owner:
    """The process that owns a run: it alone ends the run."""

    host: str
    pid: int
    start: str  # "<boot id>/<start time in clock ticks since boot>"

    def tags(self) -> dict[str, str]:
        """The owner as run tags (also the content of a scratch folder's owner file)."""
        return {HOST_TAG: self.host, PID_TAG: str(self.pid), START_TAG: self.start}

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host}"


@cache
def _boot_id() -> str:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "-"


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (boot id and clock ticks), or None if there is none (an
    exited process still waiting to be reaped, a zombie, counts as none)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # the command name (field 2) is in parentheses and may itself hold spaces and parentheses
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return f"{_boot_id()}/{fields[19]}"


def this_process() -> Owner:
    """The owner that this process is."""
    pid = os.getpid()
    return Owner(socket.gethostname(), pid, process_start(pid) or "-")


def owner_from(tags: dict[str, str]) -> Owner | None:
    """The owner recorded in ``tags``, or None when there is none."""
    try:
        return Owner(tags[HOST_TAG], int(tags[PID_TAG]), tags[START_TAG])
    except (KeyError, ValueError):
        return None


def can_tell() -> bool:
    """Whether this system shows its processes' start times (/proc), without which no owner is
    ever judged gone."""
    return (PROC / "self" / "stat").is_file()


def is_gone(owner: Owner) -> bool:
    """True when ``owner`` ran on this host and that process is no longer running."""
    if owner.host != socket.gethostname() or not can_tell():
        return False
    return process_start(owner.pid) != owner.start


def run_of_process(pid: int) -> str | None:
    """The run a process works for: the MLFLOW_RUN_ID that MLflow puts in a step's environment."""
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:  # gone meanwhile, or another user's
        return None
    for item in environ.split(b"\0"):
        if item.startswith(b"MLFLOW_RUN_ID="):
            return item.removeprefix(b"MLFLOW_RUN_ID=").decode(errors="replace")
    return None


def processes_of_runs(run_ids: Iterable[str]) -> dict[int, str]:
    """The processes (other than this one) working for these runs: pid -> run id."""
    wanted = set(run_ids)
    found: dict[int, str] = {}
    if not wanted:
        return found
    for entry in PROC.glob("[0-9]*"):
        pid = int(entry.name)
        if pid != os.getpid() and (run_id := run_of_process(pid)) in wanted:
            found[pid] = run_id
    return found


def descendants(pid: int) -> list[int]:
    """Every process started below ``pid`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_processes(pids: Iterable[int], grace: float = GRACE_SECONDS) -> list[int]:
    """SIGTERM each process, SIGKILL those still there after ``grace`` seconds, and wait until
    all are gone; the pids that were running."""
    started = {pid: s for pid in pids if (s := process_start(pid)) is not None}
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        left = [pid for pid, s in started.items() if process_start(pid) == s]
        for pid in left:
            with suppress(OSError):  # ended meanwhile
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [pid for pid in left if process_start(pid) == started[pid]]
        if not left:
            break
    return list(started)


@dataclass
class Findings:
    """What a check of the store found and did."""

    killed: list[tuple[Run, str]] = field(default_factory=list)  # (run, reason)
    elsewhere: list[tuple[Run, Owner]] = field(default_factory=list)  # owned on another host
    unowned: list[Run] = field(default_factory=list)  # RUNNING, no owner recorded
    processes: list[int] = field(default_factory=list)  # stopped, working for killed runs
    folders: list[Path] = field(default_factory=list)  # removed scratch folders
    unowned_folders: list[Path] = field(default_factory=list)


def end_killed(
    client: MlflowClient, run_ids: Iterable[str], reason: str, only_running: bool = True
) -> list[str]:
    """End the runs KILLED (only those still RUNNING, unless ``only_running`` is False), with
    ``reason`` in tag reprise.killed; the ids of those ended."""
    ended = []
    for run_id in run_ids:
        status = client.get_run(run_id).info.status
        if status == "KILLED" or (only_running and status != "RUNNING"):
            continue
        client.set_tag(run_id, KILLED_TAG, reason)
        client.set_terminated(run_id, "KILLED")
        ended.append(run_id)
    return ended


def reap(client: MlflowClient, experiment_ids: list[str] | None = None) -> Findings:
    """End KILLED every RUNNING run (of these experiments, else of all) whose owner on this host
    is gone, after stopping the processes still working for it; one search of the store when
    the experiments are given and nothing is to be done."""
    findings = Findings()
    if not can_tell():
        return findings
    experiments = experiment_ids or [e.experiment_id for e in client.search_experiments()]
    running = {
        r.info.run_id: r
        for r in client.search_runs(
            experiments, filter_string="attributes.status = 'RUNNING'", max_results=50_000
        )
    }
    dead: dict[str, tuple[Run, str]] = {}
    for run in running.values():
        owner = _owner_of(run, running)
        if owner is None:
            findings.unowned.append(run)
        elif owner.host != socket.gethostname():
            findings.elsewhere.append((run, owner))
        elif is_gone(owner):
            dead[run.info.run_id] = (run, f"its owner, {owner}, is gone")
    if not dead:
        return findings
    findings.processes = stop_processes(processes_of_runs(dead))
    for run_id, (run, reason) in dead.items():
        if end_killed(client, [run_id], reason):
            name = run.data.tags.get("mlflow.runName", "")
            log.warning("run %s (%s) marked KILLED: %s", run_id, name, reason)
            findings.killed.append((run, reason))
    return findings


def _owner_of(run: Run, running: dict[str, Run]) -> Owner | None:
    """The run's own owner, else its nearest RUNNING ancestor's (a step's is its pipeline's)."""
    seen = set()
    current: Run | None = run
    while current is not None and current.info.run_id not in seen:
        seen.add(current.info.run_id)
        if (owner := owner_from(current.data.tags)) is not None:
            return owner
        current = running.get(current.data.tags.get(PARENT_TAG, ""))
    return None


def make_scratch() -> Path:
    """A new folder in the system temp folder, owned by this process (its owner file says so)."""
    folder = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
    (folder / OWNER_FILE).write_text(json.dumps(this_process().tags()))
    return folder


@contextmanager
def scratch_for_children() -> Iterator[Path]:
    """A scratch folder that processes started inside take as their temp folder (TMPDIR); removed,
    and TMPDIR put back, on the way out."""
    folder = make_scratch()
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before
        shutil.rmtree(folder, ignore_errors=True)


def remove_dead_scratch(temp: Path | None = None) -> tuple[list[Path], list[Path]]:
    """Remove the ``reprise-*`` folders of the temp folder whose owner is gone; (removed, left
    alone for want of an owner file)."""
    removed, unowned = [], []
    for folder in sorted(Path(temp or tempfile.gettempdir()).glob("reprise-*")):
        if not folder.is_dir() or folder.is_symlink():
            continue
        try:
            owner = owner_from(json.loads((folder / OWNER_FILE).read_text()))
        except (OSError, ValueError):
            owner = None
        if owner is None:
            unowned.append(folder)
        elif is_gone(owner):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed, unowned


def doctor(client: MlflowClient) -> Findings:
    """End the runs of gone owners, stop their processes, and remove their scratch folders."""
    findings = reap(client)
    findings.folders, findings.unowned_folders = remove_dead_scratch()
    return findings


class Stopped(BaseException):
    """The command was asked to stop by a signal. A BaseException, as KeyboardInterrupt is: no
    ``except Exception`` on the way may swallow it, nor MLflow's handler of KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        self.runs: list[str] = []  # the runs ended KILLED on the way out
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    def summary(self) -> str:
        """One line: the signal, and the runs ended KILLED."""
        ended = ", ".join(dict.fromkeys(self.runs)) or "none had started"
        return f"{self}: runs ended KILLED: {ended}."


def stop_reason(stop: BaseException) -> str:
    """Why a run was killed, for tag reprise.killed."""
    name = signal.Signals(stop.signum).name if isinstance(stop, Stopped) else "SIGINT"
    return f"{name} stopped {this_process()}, which owned it"


@contextmanager
def signals_stop() -> Iterator[None]:
    """Inside, SIGINT and SIGTERM raise Stopped in the main thread; a second signal while the
    first is handled is ignored, so the runs are always ended. Handlers are put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if caught:
            log.warning("%s ignored: already stopping", signal.Signals(signum).name)
            return
        caught.append(signum)
        raise Stopped(signum)

    before = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, previous in before.items():
            signal.signal(s, previous)


def stop_below(stop: Stopped) -> str:
    """After ``stop``: stop every process started below this one, end KILLED the runs they
    worked for and the runs of owners now gone; the one line that says which runs ended."""
    below = descendants(os.getpid())
    carried = {r for pid in below if (r := run_of_process(pid))}
    stop_processes(below)
    if carried:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        # each was in progress when its process was stopped, whatever it was ended as since
        end_killed(client, sorted(carried), stop_reason(stop), only_running=False)
        stop.runs += sorted(carried)
        stop.runs += [r.info.run_id for r, _ in reap(client).killed]
    return stop.summary()


def stop_run(client: MlflowClient, run: Run, stop: BaseException) -> list[str]:
    """Stop the processes working for the unfinished children of ``run`` (its steps), then end
    them and ``run`` KILLED; the ids of the runs ended."""
    run_id = run.info.run_id
    # FAILED too: on KeyboardInterrupt MLflow ends the step it waits for FAILED
    children = [
        child.info.run_id
        for child in client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{run_id}' "
            "and attributes.status != 'FINISHED' and attributes.status != 'KILLED'",
        )
    ]
    stop_processes(processes_of_runs(children))
    ended = end_killed(client, [*children, run_id], stop_reason(stop), only_running=False)
    if isinstance(stop, Stopped):
        stop.runs += ended
    return ended
