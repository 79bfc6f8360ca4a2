"""`python -m reprise run` stopped while a step runs: by SIGTERM or SIGINT (the step's process
stopped, every run KILLED, one line, exit 128+signal), or by kill -9 (runs left RUNNING until
`python -m reprise doctor` ends them and removes their temporary folder, leaving live runs alone).

The step is get_data downloading from a server on 127.0.0.1 that never finishes its answer, so
the step is surely running when the signal comes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reprise import owners
from support import ROOT, ComponentsRemote, Workspace, free_port, wait_until_listening

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("git")]

EXPERIMENT = "reprise-test"
# A notebook's call: Ctrl-C there is a KeyboardInterrupt, with no handler of Reprise's.
# Ctrl-C raises KeyboardInterrupt as in a terminal, even when the tests were started where
# SIGINT is ignored (a background job of a shell without job control)
AS_IN_A_TERMINAL = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
API_RUN = (
    AS_IN_A_TERMINAL + "import json, sys; from reprise import api; "
    "api.run(json.loads(sys.argv[1]), steps='get_data', cache=False)"
)
START_TIMEOUT_S = 180
# Sends the head of a parquet file, then holds the connection: a download that never ends.
ENDLESS_SERVER = """
import socket, sys, threading, time
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
def hold(conn):
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 100000000\\r\\n\\r\\nPAR1" + b"0" * 65536)
    time.sleep(180)
end = time.monotonic() + 600  # a bounded lifetime, whatever happens to the test
while time.monotonic() < end:
    threading.Thread(target=hold, args=(server.accept()[0],), daemon=True).start()
"""


@pytest.fixture(scope="module")
def endless_url() -> Iterator[str]:
    """The URL of a data file whose download never ends; the server is stopped by PID."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", ENDLESS_SERVER, str(port)], start_new_session=True
    )
    try:
        wait_until_listening(port, server, "the endless data server")
        yield f"http://127.0.0.1:{port}/endless.parquet"
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


def overrides(remote: ComponentsRemote, url: str) -> list[str]:
    """get_data (from the git server) on ``url``."""
    return [
        f"etl.sample={url}",
        "etl.timeout=600",
        f"components.repository={remote.url}",
        "components.version=0.2.0",
        "components.env_manager=local",
    ]


def start_run(
    workspace: Workspace, remote: ComponentsRemote, url: str, *first: str, api: bool = False
) -> subprocess.Popen:
    """`python -m reprise run` of get_data on ``url`` (Hydra overrides after ``first``), or the
    same through reprise.api.run, in the background. Its output goes to ``output_of(workspace)``,
    a file: a step left behind would hold a pipe open."""
    client_of(workspace).search_experiments()  # the store made here: the run and polls share it
    if api:
        command = ["-c", API_RUN, json.dumps(overrides(remote, url))]
    else:
        command = ["-m", "reprise", "run", "--steps", "get_data", "--no-cache", *first]
        command += overrides(remote, url)
    with output_of(workspace).open("w") as output:
        return subprocess.Popen(
            [sys.executable, *command],
            cwd=ROOT,
            env=workspace.env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def output_of(workspace: Workspace) -> Path:
    return workspace.path / "run-output.txt"


def client_of(workspace: Workspace):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=workspace.tracking_uri)


def runs_of(workspace: Workspace) -> dict[str, object]:
    """Every run of the test experiment by id."""
    client = client_of(workspace)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return {}
    return {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}


def running_step(workspace: Workspace, run: subprocess.Popen) -> tuple[str, list[int]]:
    """Wait until get_data's run is RUNNING and its process has started: (run id, its pids)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert run.poll() is None, "the run ended early:\n" + output_of(workspace).read_text()
        for run_id, found in runs_of(workspace).items():
            if found.info.status == "RUNNING" and found.data.tags.get("reprise.step") == "get_data":
                pids = owners.processes_of_runs([run_id])
                if pids:
                    return run_id, sorted(pids)
        time.sleep(0.2)
    run.kill()
    pytest.fail("get_data never ran:\n" + output_of(workspace).read_text()[-4000:])


def scratch_of(pid: int) -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob(f"{owners.SCRATCH_PREFIX}{pid}-*"))


def doctor(workspace: Workspace) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reprise", "doctor"],
        cwd=ROOT,
        env=workspace.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_step_and_ends_every_run_killed_in_one_line(
    workspace: Workspace,
    components_remote: ComponentsRemote,
    endless_url: str,
    signum: int,
    code: int,
) -> None:
    run = start_run(workspace, components_remote, endless_url)
    step_id, pids = running_step(workspace, run)
    assert scratch_of(run.pid), "the steps' temporary folder is not the run's own"

    run.send_signal(signum)
    started = time.monotonic()
    run.wait(timeout=60)
    seconds = time.monotonic() - started
    out, err = output_of(workspace).read_text(), ""

    name = signal.Signals(signum).name
    assert run.returncode == code, (out + err)[-4000:]
    assert seconds < 15
    assert "Traceback" not in out + err
    said = [line for line in (out + err).splitlines() if f"stopped by {name}" in line]
    assert len(said) == 1, (out + err)[-4000:]
    assert all(owners.process_start(pid) is None for pid in pids), "the step's process survived"
    assert not scratch_of(run.pid)
    runs = runs_of(workspace)
    assert {r.info.status for r in runs.values()} == {"KILLED"}
    (pipeline,) = [r for r in runs.values() if r.data.tags.get("reprise.pipeline") == "true"]
    assert runs[step_id].data.tags["mlflow.parentRunId"] == pipeline.info.run_id
    for run_id, found in runs.items():
        assert run_id in said[0]
        assert found.data.tags[owners.KILLED_TAG].startswith(f"{name} stopped process {run.pid}")
    assert pipeline.data.tags[owners.PID_TAG] == str(run.pid)
    time.sleep(2)  # a step process left behind would end its run meanwhile
    assert client_of(workspace).get_run(step_id).info.status == "KILLED"


def test_doctor_ends_the_runs_of_a_killed_run_and_leaves_live_ones_alone(
    workspace: Workspace, components_remote: ComponentsRemote, endless_url: str
) -> None:
    run = start_run(workspace, components_remote, endless_url)
    pids: list[int] = []
    try:
        step_id, pids = running_step(workspace, run)
        (scratch,) = scratch_of(run.pid)
        deadline = time.monotonic() + 60  # the step's copy of the data being downloaded
        while not list(scratch.glob("reprise-get_data-*/raw_data/endless.parquet")):
            assert time.monotonic() < deadline, "get_data never began its download"
            time.sleep(0.2)
        client = client_of(workspace)
        experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
        elsewhere = owners.Owner("another-host", run.pid, "x/1")
        far = client.create_run(experiment, tags=elsewhere.tags()).info.run_id

        live = doctor(workspace)
        assert live.returncode == 0, live.stderr[-4000:]
        assert "No run is left RUNNING by a process that is gone." in live.stdout
        assert f"left alone: run {far} is owned by {elsewhere}, another host" in live.stdout
        assert {r.info.status for r in runs_of(workspace).values()} == {"RUNNING"}
        assert scratch.is_dir()

        run.kill()
        run.wait(timeout=30)
        time.sleep(1)
        assert {r.info.status for r in runs_of(workspace).values()} == {"RUNNING"}
        assert any(owners.process_start(pid) for pid in pids), "the orphaned step should live on"
    finally:
        run.kill()
        run.wait()
        if sys.exc_info()[0] is not None:  # the test failed: leave no step behind
            owners.stop_processes(pids)

    dead = doctor(workspace)

    assert dead.returncode == 0, dead.stderr[-4000:]
    assert "Traceback" not in dead.stdout + dead.stderr
    runs = runs_of(workspace)
    (pipeline,) = [r for r in runs.values() if r.data.tags.get("reprise.pipeline") == "true"]
    reason = f"its owner, process {run.pid} on {owners.this_process().host}, is gone"
    for run_id in (pipeline.info.run_id, step_id):
        assert runs[run_id].info.status == "KILLED"
        assert runs[run_id].data.tags[owners.KILLED_TAG] == reason
        name = runs[run_id].data.tags["mlflow.runName"]
        assert f"marked KILLED: run {run_id} ({name}): {reason}" in dead.stdout
    assert all(owners.process_start(pid) is None for pid in pids), "the orphaned step lives on"
    assert f"removed temporary folder {scratch}" in dead.stdout
    assert not scratch.exists()
    assert runs[far].info.status == "RUNNING"
    assert f"left alone: run {far} is owned by {elsewhere}, another host" in dead.stdout


def test_a_signal_stops_a_sweep_its_steps_and_ends_its_runs_killed(
    workspace: Workspace, components_remote: ComponentsRemote, endless_url: str
) -> None:
    run = start_run(workspace, components_remote, f"{endless_url},sample1.parquet", "--", "-m")
    step_id, pids = running_step(workspace, run)

    run.send_signal(signal.SIGTERM)
    run.wait(timeout=60)

    out = output_of(workspace).read_text()
    assert run.returncode == 143, out[-4000:]
    assert "Traceback" not in out
    assert all(owners.process_start(pid) is None for pid in pids), "the step's process survived"
    runs = runs_of(workspace)
    (sweep,) = [r for r in runs.values() if r.data.tags.get("reprise.sweep") == "true"]
    assert {r.info.status for r in runs.values()} == {"KILLED"}
    assert len(runs) == 3  # the sweep, its first point, that point's get_data: no later point
    last = [line for line in out.splitlines() if "stopped by SIGTERM" in line][-1]
    assert sweep.info.run_id in last and step_id in last


def test_an_interrupt_of_the_python_api_stops_the_step_and_ends_its_runs_killed(
    workspace: Workspace, components_remote: ComponentsRemote, endless_url: str
) -> None:
    run = start_run(workspace, components_remote, endless_url, api=True)
    step_id, pids = running_step(workspace, run)

    run.send_signal(signal.SIGINT)
    run.wait(timeout=60)

    out = output_of(workspace).read_text()
    assert out.rstrip().endswith("KeyboardInterrupt"), out[-4000:]  # the caller's to handle
    assert all(owners.process_start(pid) is None for pid in pids), "the step's process survived"
    runs = runs_of(workspace)
    assert {r.info.status for r in runs.values()} == {"KILLED"}
    assert runs[step_id].data.tags[owners.KILLED_TAG].startswith("SIGINT stopped process")
