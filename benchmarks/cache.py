"""Fast reruns, side by side in one run: a cold full run (new uv environments), a warm full run
(environments exist, cache off), an unchanged rerun (cache on), a rerun after one hyperparameter
change, and the two steps that change needs run alone (cache off). Each as a command
(`python -m reprise run`, a process each) and, the reruns, as calls of reprise.api.run in one
Python process (a notebook's way: MLflow is loaded once). The components come from a git daemon
on 127.0.0.1 (uv environments are for fetched components). Appends its table to
benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/cache.py [--sample sample2.parquet] [--keep-envs]

Targets: unchanged rerun <= 10% of the warm full run; one-hyperparameter rerun <= the two steps
it needs + 10%, where "the two steps it needs" is both the two steps run alone (the command a
user would run instead) and, stricter, train_model + test_model's own seconds in the warm run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from common import code_state, python, record, run_env, serve_components


def run(env: dict[str, str], *args: str) -> tuple[float, dict[str, float], str]:
    """Wall seconds of one `python -m reprise run`, its per-step seconds, and ran/cached."""
    started = time.monotonic()
    result = python("-m", "reprise", "run", *args, env=env)
    wall = time.monotonic() - started
    steps, kinds = {}, []
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[1] in ("FINISHED",) and parts[3] == "s":
            steps[parts[0]] = float(parts[2])
    for line in (result.stdout + result.stderr).splitlines():
        if "reprise.pipeline" in line and (": runs (" in line or ": cached from" in line):
            kinds.append("cached" if "cached from" in line else "ran")
    return wall, steps, f"{kinds.count('ran')} ran, {kinds.count('cached')} cached"


SESSION = r"""
import json, sys, time
from mlflow.tracking import MlflowClient
from reprise import api

def call(*overrides, **options):
    started = time.monotonic()
    run_id = api.run([*json.loads(sys.argv[1]), *overrides], **options)
    wall = time.monotonic() - started
    client = MlflowClient()
    parent = client.get_run(run_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'"
    )
    ran = [c for c in children if "reprise.cached_from" not in c.data.tags]
    seconds = sum((c.info.end_time - c.info.start_time) / 1000 for c in ran)
    return [wall, f"{len(ran)} ran, {len(children) - len(ran)} cached", seconds]

print(json.dumps({
    "first call (pays the start)": call(),
    "unchanged rerun (cache on)": call(),
    "one hyperparameter changed (cache on)": call("model.max_depth=8"),
    "the two steps alone (cache off)": call(
        "model.max_depth=8", steps="train_model,test_model", cache=False
    ),
}))
"""


def session(env: dict[str, str], pins: list[str]) -> dict[str, tuple[float, str, float]]:
    """Wall seconds, ran/cached and the ran steps' seconds of reruns called in one process."""
    result = python("-c", SESSION, json.dumps(pins), env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", default="sample2.parquet")
    parser.add_argument(
        "--keep-envs",
        action="store_true",
        help="reuse existing uv environments (the cold run is then not cold)",
    )
    args = parser.parse_args()
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    base = Path(tempfile.mkdtemp(prefix="reprise-bench-cache-"))
    daemon, url = serve_components(base)
    env = run_env(base, f"sqlite:///{base / 'mlflow.db'}")
    if not args.keep_envs:
        env["MLFLOW_ENV_ROOT"] = str(base / "envs")  # new uv environments: a cold run
    pins = [
        f"etl.sample={args.sample}",
        f"components.repository={url}",
        "components.version=bench-1",
        "components.env_manager=uv",
    ]
    try:
        rows = []
        for label, extra in (
            ("cold full run (new uv envs, cache off)", ["--no-cache"]),
            ("warm full run (envs exist, cache off)", ["--no-cache"]),
            ("unchanged rerun (cache on)", []),
            ("one hyperparameter changed (cache on)", ["model.max_depth=9"]),
            (
                "the two steps alone (cache off)",
                ["--no-cache", "--steps", "train_model,test_model", "model.max_depth=9"],
            ),
        ):
            wall, steps, kinds = run(env, *extra, *pins)
            rows.append((label, wall, steps, kinds))
            sys.stderr.write(f"{label}: {wall:.1f} s ({kinds})\n")
        in_session = session(env, pins)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        shutil.rmtree(base, ignore_errors=True)
    warm, unchanged, changed, alone = (rows[i][1] for i in (1, 2, 3, 4))
    needed = rows[1][2].get("train_model", 0) + rows[1][2].get("test_model", 0)
    s_unchanged = in_session["unchanged rerun (cache on)"][0]
    # "the rest": the command's start, the cache's lookups, the summary
    s_changed = in_session["one hyperparameter changed (cache on)"][0]
    s_alone = in_session["the two steps alone (cache off)"][0]

    def verdict(value: float, limit: float) -> str:
        return "met" if value <= limit else "NOT met"

    lines = [
        f"\n## Step cache ({dt.date.today().isoformat()}, {args.sample}, uv environments)\n",
        "`.venv/bin/python benchmarks/cache.py`\n",
        f"{code_state()}. Load average (1, 5, 15 min) at start: {load}. Commands are "
        "`python -m reprise run ...`, a process each; calls are `reprise.api.run(...)` one after "
        "the other in one Python process, the first of which pays the start.\n",
        "| run | how | wall s | steps | seconds of the steps that ran | the rest |",
        "|---|---|---|---|---|---|",
        *(
            f"| {label} | command | {wall:.1f} | {kinds} | {sum(steps.values()):.1f} | "
            f"{wall - sum(steps.values()):.1f} |"
            for label, wall, steps, kinds in rows
        ),
        *(
            f"| {label} | call in one process | {wall:.1f} | {kinds} | {ran:.1f} | "
            f"{wall - ran:.1f} |"
            for label, (wall, kinds, ran) in in_session.items()
        ),
        "",
        f"- unchanged rerun / warm full run, command: {unchanged / warm:.1%} "
        f"(<= 10%: {verdict(unchanged, warm * 0.1)})",
        f"- unchanged rerun / warm full run, call: {s_unchanged / warm:.1%} "
        f"(<= 10%: {verdict(s_unchanged, warm * 0.1)})",
        f"- one-hyperparameter rerun vs the two steps alone +10%, command: {changed:.1f} s vs "
        f"{alone:.1f} s +10% = {alone * 1.1:.1f} s ({verdict(changed, alone * 1.1)})",
        f"- one-hyperparameter rerun vs the two steps alone +10%, call: {s_changed:.1f} s vs "
        f"{s_alone:.1f} s +10% = {s_alone * 1.1:.1f} s ({verdict(s_changed, s_alone * 1.1)})",
        f"- stricter, against train_model + test_model's own seconds in the warm run "
        f"({needed:.1f} s, +10% = {needed * 1.1:.1f} s): command {changed:.1f} s "
        f"({verdict(changed, needed * 1.1)}), call {s_changed:.1f} s "
        f"({verdict(s_changed, needed * 1.1)}); the difference is the start of a command "
        "(Python, importing MLflow, opening its store) and the cache's lookups",
        f"- per-step seconds of the warm run: {json.dumps(rows[1][2])}",
    ]
    record(lines)


if __name__ == "__main__":
    main()
