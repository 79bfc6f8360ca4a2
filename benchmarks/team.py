"""Team mode, side by side: one pipeline run against the embedded sqlite store and against a
tracking server (PostgreSQL + `mlflow server`, started by reprise/team_server.py in a temporary
folder and stopped by PID); then N pipelines on the server one after another and all at once
(and, for comparison, all at once on one sqlite file). Wall time of each, and whether every
command exited 0 with its pipeline run FINISHED. Appends its table to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/team.py [--sample sample1.parquet] [--pipelines 4] [--no-append]

Every run has the cache off (main.cache=false), so each pipeline runs every step and the modes
compare the same work. The components are the local folder (env manager local).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, code_state, free_port, record, run_env

from reprise import team_server

TIMEOUT_S = 3600


def start(env: dict[str, str], overrides: list[str], log_file: Path) -> subprocess.Popen:
    """`python -m reprise run OVERRIDES` from the repository root, its output to ``log_file``."""
    with open(log_file, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "reprise", "run", *overrides],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def finished(tracking_uri: str, experiment: str) -> tuple[int, int]:
    """(pipeline runs FINISHED, pipeline runs) in ``experiment``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return 0, 0
    runs = client.search_runs([found.experiment_id], "tags.`reprise.pipeline` = 'true'")
    return sum(r.info.status == "FINISHED" for r in runs), len(runs)


def measure(
    base: Path,
    label: str,
    tracking_uri: str,
    count: int,
    at_once: bool,
    overrides: list[str],
) -> tuple[str, float, str]:
    """(label, wall seconds, what came of it) of ``count`` pipelines in one new experiment."""
    experiment = label.replace(" ", "-").replace(",", "")
    envs = []
    for i in range(count):
        state = base / experiment / str(i)
        state.mkdir(parents=True)
        env = run_env(state, tracking_uri, experiment)
        envs.append((env, state / "run.log"))
    started = time.monotonic()
    codes = []
    if at_once:
        processes = [start(env, overrides, log_file) for env, log_file in envs]
        codes = [p.wait(timeout=TIMEOUT_S) for p in processes]
    else:
        for env, log_file in envs:
            codes.append(start(env, overrides, log_file).wait(timeout=TIMEOUT_S))
    wall = time.monotonic() - started
    done, runs = finished(tracking_uri, experiment)
    failed = [str(log_file) for (_, log_file), code in zip(envs, codes, strict=True) if code]
    outcome = f"{codes.count(0)}/{count} exit 0, {done}/{count} pipeline runs FINISHED"
    if runs != count:
        outcome += f" ({runs} pipeline runs found)"
    if failed:
        tail = (Path(failed[0]).read_text().strip().splitlines() or [""])[-1]
        outcome += f"; first failure: {tail[:200]}"
    sys.stderr.write(f"{label}: {wall:.1f} s, {outcome}\n")
    return label, wall, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", default="sample1.parquet", help="etl.sample of every run")
    parser.add_argument("--pipelines", type=int, default=4, help="pipelines at once (N)")
    parser.add_argument(
        "--no-append", action="store_true", help="print the table, do not append it"
    )
    args = parser.parse_args()
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    base = Path(tempfile.mkdtemp(prefix="reprise-bench-team-"))
    base.chmod(0o711)  # as root, PostgreSQL runs as nobody, who must enter it to reach its data
    overrides = [f"etl.sample={args.sample}", "main.cache=false"]
    n = args.pipelines
    started = time.monotonic()
    server, _ = team_server.start(port=free_port(), where=base / "server")
    server_start = time.monotonic() - started
    try:
        rows = [
            measure(
                base, "1 pipeline, sqlite", f"sqlite:///{base / 'one.db'}", 1, False, overrides
            ),
            measure(base, "1 pipeline, server", server.uri, 1, False, overrides),
            measure(
                base, f"{n} pipelines one after another, server", server.uri, n, False, overrides
            ),
            measure(base, f"{n} pipelines at once, server", server.uri, n, True, overrides),
            measure(
                base,
                f"{n} pipelines at once, one sqlite file",
                f"sqlite:///{base / 'shared.db'}",
                n,
                True,
                overrides,
            ),
        ]
    finally:
        team_server.stop(base / "server")
        shutil.rmtree(base, ignore_errors=True)
    walls = {label: wall for label, wall, _ in rows}
    one_after = walls[f"{n} pipelines one after another, server"]
    at_once = walls[f"{n} pipelines at once, server"]
    lines = [
        f"\n## Team mode: many pipelines at once ({dt.date.today().isoformat()}, {args.sample}, "
        f"{os.cpu_count()} cores)\n",
        f"`.venv/bin/python benchmarks/team.py --pipelines {n}`\n",
        f"{code_state()}. Load average (1, 5, 15 min) at start: {load}. Each pipeline is a "
        "`python -m reprise run` with the cache off, its own state folder, the components as the "
        "local folder; the N of one row share one new experiment. The tracking server "
        f"(PostgreSQL + `mlflow server`, 2 workers) took {server_start:.1f} s to start.\n",
        "| pipelines | wall s | outcome |",
        "|---|---|---|",
        *(f"| {label} | {wall:.1f} | {outcome} |" for label, wall, outcome in rows),
        "",
        f"- {n} at once vs one after another on the server: {at_once:.1f} s vs {one_after:.1f} s "
        f"({one_after / at_once:.2f}x the throughput)",
        f"- 1 pipeline, server vs sqlite: {walls['1 pipeline, server']:.1f} s vs "
        f"{walls['1 pipeline, sqlite']:.1f} s",
    ]
    record(lines, append=not args.no_append)


if __name__ == "__main__":
    main()
