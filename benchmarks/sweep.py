"""Parallel sweeps, side by side in one run: the same 12-point Hydra sweep (model.max_depth x
model.min_samples_leaf, `--steps train_model,test_model`, cache off) run by Hydra's basic launcher
(one point after another), by the joblib launcher with 2 worker processes, and by the Ray launcher
on a Ray head of 2 CPUs started here on 127.0.0.1; wall time of each and whether every point
finished. All three track to one tracking server that this script starts with
reprise/team_server.py (PostgreSQL + `mlflow server`, proxied artifacts), after one full run
that makes the data the points train on. The Ray head and the server are stopped by PID.
Appends its table to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/sweep.py [--sample sample1.parquet] [--no-append]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path

from common import ROOT, code_state, free_port, python, record, run_env

from reprise import team_server

DEPTHS = "6,8,10,12"
LEAVES = "1,20,50"
EXPERIMENT = "bench-sweep"


def start_ray_head(temp: Path, cpus: int) -> tuple[subprocess.Popen, str]:
    """`ray start --head --block` on 127.0.0.1 in a session of its own, with none of this
    process's tracking settings (its workers get them from the sweep's runtime_env)."""
    port = free_port()
    env = {k: os.environ[k] for k in ("LANG",) if k in os.environ}
    # a HOME of its own: a ~/.ray/auth_token (a local ray.init writes one) would turn on auth
    env |= {"PATH": "/usr/bin:/bin", "HOME": str(temp)}
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
         "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={cpus}",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
         f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and head.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return head, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    os.killpg(head.pid, signal.SIGKILL)
    raise SystemExit("the Ray head did not start")


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group of ``process`` (its own session); SIGKILL to what outlives it."""
    os.killpg(process.pid, signal.SIGTERM)  # `ray start` stops its processes, in ~30 s
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=60)
    with suppress(ProcessLookupError):  # whatever of the group outlived it
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def points_of_latest_sweep(uri: str, since_ms: int) -> tuple[str, dict[str, int]]:
    """The sweep run started since ``since_ms`` and the count of its points by status."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (sweep,) = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`reprise.sweep` = 'true' and attributes.start_time >= {since_ms}",
    )
    points = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'",
    )
    counts: dict[str, int] = {}
    for point in points:
        counts[point.info.status] = counts.get(point.info.status, 0) + 1
    return sweep.info.status, counts


def sweep(env: dict[str, str], sample: str, *launcher: str) -> tuple[float, int, str, dict]:
    """Wall seconds, exit code, sweep run status and point statuses of one 12-point sweep."""
    since_ms = int(time.time() * 1000) - 1000
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "reprise", "run", "--no-cache", "--steps", "train_model,test_model",
         "--", "-m", f"model.max_depth={DEPTHS}", f"model.min_samples_leaf={LEAVES}",
         f"etl.sample={sample}", "evaluation.gate.min_roc_auc=0.5", *launcher],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    wall = time.monotonic() - started
    if result.returncode != 0:
        sys.stderr.write((result.stdout + result.stderr)[-3000:])
    status, points = points_of_latest_sweep(env["MLFLOW_TRACKING_URI"], since_ms)
    return wall, result.returncode, status, points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", default="sample1.parquet")
    parser.add_argument("--workers", type=int, default=2, help="joblib jobs and Ray CPUs")
    parser.add_argument("--no-append", action="store_true", help="print, do not append")
    args = parser.parse_args()
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    base = Path(tempfile.mkdtemp(prefix="reprise-bench-sweep-"))
    # a folder of its own under /tmp: PostgreSQL (as nobody, when run as root) must reach it
    server_dir = Path(tempfile.mkdtemp(prefix="reprise-bench-sweep-server-"))
    server, _ = team_server.start(port=free_port(), workers=2, where=server_dir)
    head = None
    # Ray's sockets live under its temp dir, whose path must stay short
    ray_temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    env = run_env(base / "state", server.uri, EXPERIMENT)
    rows = []
    try:
        python("-m", "reprise", "run", f"etl.sample={args.sample}", env=env)
        head, address = start_ray_head(ray_temp, args.workers)
        for label, launcher in (
            ("sequential (basic launcher)", ()),
            (
                f"joblib, n_jobs={args.workers}",
                ("hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.workers}"),
            ),
            (
                f"Ray, a head of {args.workers} CPUs on 127.0.0.1",
                ("hydra/launcher=ray", f"hydra.launcher.ray.init.address={address}"),
            ),
        ):
            wall, code, status, points = sweep(env, args.sample, *launcher)
            rows.append((label, wall, code, status, points))
            sys.stderr.write(f"{label}: {wall:.1f} s, exit {code}, {status}, {points}\n")
    finally:
        if head is not None:
            stop_group(head)
        team_server.stop(server_dir)
        shutil.rmtree(server_dir, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(ray_temp, ignore_errors=True)
    sequential = rows[0][1]
    lines = [
        f"\n## Parallel sweeps ({dt.date.today().isoformat()}, {args.sample}, 12 points)\n",
        f"`.venv/bin/python benchmarks/sweep.py{' --no-append' if args.no_append else ''}`\n",
        f"{code_state()}. Load average (1, 5, 15 min) at start: {load}, at the end: "
        f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}. {os.cpu_count()} cores. Each sweep: "
        f"`python -m reprise run --no-cache --steps train_model,test_model -- -m "
        f"model.max_depth={DEPTHS} model.min_samples_leaf={LEAVES}` (12 points, each a "
        "train_model and a test_model run, components from the local folder, env manager local), "
        "after one full run; all three against one tracking server (reprise/team_server.py: "
        "PostgreSQL 18 + `mlflow server`, 2 workers, proxied artifacts) on this machine. Wall "
        "time includes the command's start and, for Ray, connecting to the head.\n",
        "| launcher | wall s | vs sequential | exit | sweep run | points |",
        "|---|---|---|---|---|---|",
        *(
            f"| {label} | {wall:.1f} | {sequential / wall:.2f}x | {code} | {status} | "
            + ", ".join(f"{n} {s}" for s, n in sorted(points.items()))
            + " |"
            for label, wall, code, status, points in rows
        ),
    ]
    record(lines, append=not args.no_append)


if __name__ == "__main__":
    main()
