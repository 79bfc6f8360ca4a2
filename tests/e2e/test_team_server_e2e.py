"""The team's tracking server as a user lives it, through `python -m reprise server`: started,
started again, killed and recovered, stopped; its secret kept out of sight, its data in its
folder, its artifacts proxied. Each test starts its own server (a folder of its own)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import ROOT, free_port, reprise

pytestmark = pytest.mark.e2e

CLI_TIMEOUT_S = 240
# a client that logs a run with an artifact, downloads it into its own folder, and says whether
# it sees the server's artifacts folder
CLIENT = """
import sys
from pathlib import Path
import mlflow

mlflow.set_tracking_uri(sys.argv[1])
with mlflow.start_run() as run:
    mlflow.log_param("kept", "yes")
    mlflow.log_text("proxied", "note.txt")
got = mlflow.artifacts.download_artifacts(
    run_id=run.info.run_id, artifact_path="note.txt", dst_path="downloads"
)
sees = (Path(sys.argv[2]) / "artifacts").exists()
print(run.info.run_id, run.info.artifact_uri, Path(got).read_text(), sees)
"""
# as root: the client in a mount namespace of its own where an empty tmpfs covers the folder
HIDE_FOLDER = ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"']


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A server folder outside pytest's (closed to other users, and PostgreSQL runs as nobody
    when the tests run as root); its server stopped and the folder removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="reprise-team-server-test-"))
    try:
        yield folder
    finally:
        reprise_server(folder, "stop")
        shutil.rmtree(folder, ignore_errors=True)


def reprise_server(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return reprise("server", *args, env=_env(folder), timeout=CLI_TIMEOUT_S)


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "REPRISE_"))}
    return {**env, "REPRISE_SERVER_DIR": str(folder)}


def _start_args(port: int) -> list[str]:
    return ["start", "--port", str(port), "--workers", "1"]


def _state(folder: Path) -> dict:
    return json.loads((folder / "state.json").read_text())


def _commands() -> dict[int, bytes]:
    """Every process's command line, by PID."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
    return found


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def _mlflow_servers(port: int) -> list[int]:
    marker = f"--port {port} ".encode()
    return [pid for pid, cmd in _commands().items() if b"mlflow server" in cmd and marker in cmd]


def _log_and_download(uri: str, folder: Path) -> tuple[str, str, str, bool]:
    """(run id, artifact URI, artifact text, whether the client saw the artifacts folder) from
    CLIENT; run where the server's folder is hidden when this is root (else the URI and the
    server's log prove the proxy)."""
    hide = HIDE_FOLDER + [str(folder)] if os.geteuid() == 0 and shutil.which("unshare") else []
    work = Path(tempfile.mkdtemp(prefix="reprise-team-client-"))
    try:
        done = subprocess.run(
            [*hide, sys.executable, "-c", CLIENT, uri, str(folder)],
            cwd=work,
            env=_env(folder),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    # MLflow prints its own lines ("View run ..."): the client's is the last
    run_id, artifact_uri, text, sees = done.stdout.strip().splitlines()[-1].split()
    if hide:
        assert sees == "False", "the client saw the server's folder"
    return run_id, artifact_uri, text, sees == "True"


def test_a_servers_life_start_twice_at_once_kill_and_recover_stop(server_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    # two starts at the same moment: one starts it, the other finds it running
    starts = [
        subprocess.Popen(
            [sys.executable, "-m", "reprise", "server", *_start_args(port)],
            cwd=ROOT,
            env=_env(server_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=CLI_TIMEOUT_S) for process in starts]
    assert [process.returncode for process in starts] == [0, 0], outputs
    said = sorted(out.split(":", 1)[0] for out, _ in outputs)
    assert said == ["Already running", "Started"], outputs
    for out, _ in outputs:
        assert f"export MLFLOW_TRACKING_URI={uri}\n" in out
    assert len(_mlflow_servers(port)) == 1
    first = _state(server_dir)

    again = reprise_server(server_dir, *_start_args(port))
    assert again.returncode == 0 and again.stdout.startswith("Already running:"), again
    elsewhere = reprise_server(server_dir, *_start_args(port + 1))
    assert elsewhere.returncode == 1
    (line,) = elsewhere.stderr.strip().splitlines()
    assert f"already runs at {uri}, not on 127.0.0.1:{port + 1}" in line
    assert f"export MLFLOW_TRACKING_URI={uri}" in line

    # the data lives in the given folder; the password in pgpass (0600) only
    assert (server_dir / "pgdata" / "PG_VERSION").is_file()
    pgpass = server_dir / "pgpass"
    assert pgpass.stat().st_mode & 0o777 == 0o600
    password = pgpass.read_text().strip().rsplit(":", 1)[1]
    assert len(password) >= 24
    postgres_command = _commands()[first["postgres_pid"]].decode()
    assert f"-D {server_dir / 'pgdata'} " in postgres_command

    # artifacts are proxied: the client sees mlflow-artifacts: URIs and needs no folder access
    run_id, artifact_uri, text, _ = _log_and_download(uri, server_dir)
    assert artifact_uri.startswith("mlflow-artifacts:"), artifact_uri
    assert str(server_dir) not in artifact_uri
    assert text == "proxied"
    assert list((server_dir / "artifacts").rglob("note.txt")), "not stored in the folder"
    served = (server_dir / "mlflow.log").read_text()
    assert "PUT /api/2.0/mlflow-artifacts/artifacts/" in served
    assert "GET /api/2.0/mlflow-artifacts/artifacts/" in served

    # kill -9 of the MLflow server: a start brings it back on the same database
    os.kill(first["mlflow_pid"], signal.SIGKILL)
    restarted = reprise_server(server_dir, *_start_args(port))
    assert restarted.returncode == 0 and restarted.stdout.startswith("Started:"), restarted
    second = _state(server_dir)
    assert second["postgres_pid"] == first["postgres_pid"]
    assert second["mlflow_pid"] != first["mlflow_pid"]
    assert _mlflow_servers(port) == [second["mlflow_pid"]]  # the old one's uvicorn is gone too
    assert MlflowClient(uri).get_run(run_id).data.params == {"kept": "yes"}

    # kill -9 of PostgreSQL: a start recovers it (and restarts MLflow on it)
    os.kill(first["postgres_pid"], signal.SIGKILL)
    recovered = reprise_server(server_dir, *_start_args(port))
    assert recovered.returncode == 0 and recovered.stdout.startswith("Started:"), recovered
    third = _state(server_dir)
    assert third["postgres_pid"] != first["postgres_pid"]
    assert MlflowClient(uri).get_run(run_id).data.params == {"kept": "yes"}

    # the password is in no command line, URI, log line or output
    leaks = [pid for pid, cmd in _commands().items() if password.encode() in cmd]
    assert not leaks, f"password in the command line of {leaks}"
    for name in ("mlflow.log", "postgres.log", "state.json"):
        assert password not in (server_dir / name).read_text(errors="replace"), name
    for done in (again, restarted, recovered):
        assert password not in done.stdout + done.stderr
    assert password not in json.dumps(third)

    # stop stops both; a second stop says nothing runs
    stopped = reprise_server(server_dir, "stop")
    assert stopped.returncode == 0, stopped
    assert stopped.stdout.startswith("Stopped MLflow server"), stopped.stdout
    assert "PostgreSQL" in stopped.stdout
    assert _gone(third["mlflow_pid"]) and _gone(third["postgres_pid"])
    assert _mlflow_servers(port) == []
    assert reprise_server(server_dir, "stop").stdout == "No tracking server runs.\n"
    status = reprise_server(server_dir, "status")
    assert status.returncode == 1 and status.stdout.startswith("No tracking server runs")


def test_a_port_another_program_holds_is_refused_in_one_line(server_dir: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        done = reprise_server(server_dir, *_start_args(port))
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert f"Port {port} on 127.0.0.1 is taken by another program." in line
    assert f"make server PORT={port + 1}" in line
    assert not (server_dir / "pgdata").exists()  # nothing started


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as nobody only under root")
def test_a_folder_nobody_may_enter_is_refused_in_one_line(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    done = reprise_server(closed / "server", *_start_args(free_port()))
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "runs as user nobody, who may not enter" in line
    assert "Fix: give REPRISE_SERVER_DIR a folder whose parents others may enter" in line
