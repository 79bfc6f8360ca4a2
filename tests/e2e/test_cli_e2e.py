"""End to end: `make ui` as a user runs it, against a real server URI and a real sqlite store
(the MLflow UI started on 127.0.0.1, answered over HTTP, stopped by PID)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import suppress
from pathlib import Path

from support import ROOT, free_port

UI_START_TIMEOUT_S = 180  # mlflow ui imports MLflow's server twice; a loaded 2-core machine is slow


def test_make_ui_names_a_servers_url_without_credentials() -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://alice:s3cret@127.0.0.1:5000"}
    result = subprocess.run(
        # -o: the test's environment is used as it is, never synced again under a running suite
        ["make", "-s", "-o", ".venv/.synced", "ui"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "open http://127.0.0.1:5000 in a browser"
    assert "s3cret" not in result.stdout + result.stderr


def test_make_ui_serves_the_mlflow_ui_of_a_sqlite_store(tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "state" / "mlflow.db"
    store.parent.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    # the venv's bin off PATH, as in a user's shell: make ui must not need it
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    log = tmp_path / "ui.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["make", "-o", ".venv/.synced", "ui", f"PORT={port}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the UI's workers stop with it
        )
    try:
        status = wait_for_http(f"http://127.0.0.1:{port}/", process, UI_START_TIMEOUT_S)
        assert status == 200, log.read_text()[-3000:]
        assert store.is_file(), "the UI did not open the store it was given"
    finally:
        stop_group(process)
    assert process.poll() is not None


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """The first HTTP status ``url`` answers, or 0 when ``process`` ends or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as err:
            return err.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    return 0


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process`` and what it started (its process group) by its PID: TERM, then KILL."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever of the group outlived its leader
    process.wait(timeout=10)


def test_make_ui_on_a_taken_port_fails_in_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
        result = subprocess.run(
            ["make", "-s", "-o", ".venv/.synced", "ui", f"PORT={port}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "make ui PORT=" in result.stderr and "Traceback" not in result.stderr
