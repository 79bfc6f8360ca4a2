"""How fast a pipeline's processes start, side by side: the same pipeline run by the tree at a
baseline commit (a git worktree) and by this tree, in turns, each run in a new sqlite store with
the cache off. Wall time, the CPU of every process of the run, and each step's seconds (the
pipeline run's ``seconds.<step>`` metrics); every run must exit 0 with its pipeline FINISHED.
Appends its table to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/startup.py [--baseline REV] [--rounds 3] [--no-append] [-- OVERRIDES]

The baseline defaults to the commit before step_kit paused the collector for its imports
(components-repo/step_kit/startup.py). The components are each tree's own folder (env manager
local), so the steps of each run are that tree's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import ROOT, code_state, git, python, record, run_env

EXPERIMENT = "startup-bench"
TIMEOUT_S = 1800


def default_baseline() -> str:
    """The parent of the commit that added components-repo/step_kit/startup.py."""
    added = git(
        "log", "--diff-filter=A", "--format=%H", "--", "components-repo/step_kit/startup.py"
    ).split()
    if not added:
        raise SystemExit("components-repo/step_kit/startup.py is not committed: pass --baseline")
    return git("rev-parse", "--short", f"{added[-1]}^")


@dataclass
class Run:
    wall: float
    cpu: float
    steps: dict[str, float] = field(default_factory=dict)


def one_run(tree: Path, base: Path, overrides: list[str]) -> Run:
    """`python -m reprise run main.cache=false OVERRIDES` in ``tree``, in a new store."""
    from mlflow.tracking import MlflowClient

    base.mkdir(parents=True)
    uri = f"sqlite:///{base / 'mlflow.db'}"
    env = run_env(base, uri, EXPERIMENT)
    client = MlflowClient(tracking_uri=uri)
    # artifacts in the temporary folder too, not in the tree's mlruns/
    client.create_experiment(EXPERIMENT, artifact_location=(base / "mlartifacts").as_uri())
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    python("-m", "reprise", "run", "main.cache=false", *overrides, env=env, timeout=TIMEOUT_S,
           cwd=tree)  # fmt: skip
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`reprise.pipeline` = 'true'")
    if parent.info.status != "FINISHED":
        raise SystemExit(f"{tree}: pipeline run {parent.info.run_id} is {parent.info.status}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    steps = {
        key.removeprefix("seconds."): value
        for key, value in parent.data.metrics.items()
        if key.startswith("seconds.")
    }
    return Run(wall, cpu, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="", help="git revision (default: before the pause)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tree, in turns")
    parser.add_argument("--no-append", action="store_true", help="print, do not record")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of every run")
    args = parser.parse_args()
    baseline = args.baseline or default_baseline()
    try:  # a revision, never an option of git's
        git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{baseline}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"--baseline {baseline!r} is not a commit of this repository") from None
    git("worktree", "prune")  # the worktree of a run killed halfway, its folder gone
    load = os.getloadavg()
    runs: dict[str, list[Run]] = {"baseline": [], "this tree": []}
    with tempfile.TemporaryDirectory(prefix="reprise-startup-") as temp:
        worktree = Path(temp) / "baseline"
        git("worktree", "add", "--detach", str(worktree), f"{baseline}^{{commit}}")
        try:
            trees = {"baseline": worktree, "this tree": ROOT}
            for round_ in range(args.rounds):
                # in turns, the first of each round alternating: neither always runs on a warm cache
                order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
                for label in order:
                    base = Path(temp) / f"{label.replace(' ', '-')}-{round_}"
                    run = one_run(trees[label], base, args.overrides)
                    runs[label].append(run)
                    sys.stderr.write(
                        f"{label} round {round_ + 1}: {run.wall:.1f} s wall, {run.cpu:.1f} s CPU\n"
                    )
        finally:
            git("worktree", "remove", "--force", str(worktree))

    def median(label: str, value) -> float:
        return statistics.median(value(run) for run in runs[label])

    steps = list(runs["this tree"][0].steps)
    lines = [
        "",
        f"## Pipeline start-up, side by side ({dt.date.today().isoformat()}, "
        f"{os.cpu_count()} cores)",
        "",
        f"`.venv/bin/python benchmarks/startup.py --baseline {baseline} --rounds {args.rounds}"
        + (f" {' '.join(args.overrides)}" if args.overrides else "")
        + "`",
        "",
        f"{code_state()}; baseline {baseline} (a git worktree). Load average (1, 5, 15 min) at "
        f"start: {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}. Each run: `python -m reprise run "
        "main.cache=false` in its tree, a new sqlite store, the tree's own components (env "
        f"manager local); {args.rounds} run(s) of each tree in turns, medians. Every run exited 0 "
        "with its pipeline run FINISHED.",
        "",
        "| | baseline | this tree | this tree vs baseline |",
        "|---|---|---|---|",
    ]
    rows = [("wall s", lambda r: r.wall), ("CPU s (every process)", lambda r: r.cpu)]
    rows += [(f"step {s} s", lambda r, s=s: r.steps.get(s, float("nan"))) for s in steps]
    for name, value in rows:
        old, new = median("baseline", value), median("this tree", value)
        lines.append(f"| {name} | {old:.1f} | {new:.1f} | {new / old:.2f}x |")
    record(lines, append=not args.no_append)


if __name__ == "__main__":
    main()
