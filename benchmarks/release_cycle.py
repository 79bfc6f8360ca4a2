"""A release's whole cycle, timed: cut 1.0.0 from a clone of this repository whose components
are pinned to a tag of a components repository on a git daemon (127.0.0.1), rerun it from an
empty folder with `mlflow run <project URI>#project -v 1.0.0`, and verify the rerun against the
manifest. Appends the times and the verify table to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/release_cycle.py [--sample sample2.parquet]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, git, record, run_env, serve_components


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return time.monotonic() - started, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", default="sample2.parquet")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="reprise-bench-release-"))
    daemon, components_url = serve_components(base)
    project_url = components_url.replace("components.git", "reprise.git")
    env = run_env(base, f"sqlite:///{base / 'mlflow.db'}", "reprise")
    try:
        work = base / "work"
        git("clone", "-q", str(ROOT), str(work))
        config = work / "project" / "config" / "config.yaml"
        data = yaml.safe_load(config.read_text())
        data["components"].update(repository=components_url, version="bench-1", env_manager="local")
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        etl = work / "project" / "config" / "etl" / "default.yaml"
        etl.write_text(etl.read_text().replace("sample: sample2.parquet", f"sample: {args.sample}"))
        for key, value in (("user.email", "bench@reprise.invalid"), ("user.name", "bench")):
            git("config", key, value, cwd=work)
        git("commit", "-qam", "Pin the components", cwd=work)
        git("init", "-q", "--bare", str(base / "served" / "reprise.git"))
        git("push", "-q", project_url, "HEAD:refs/heads/main", cwd=work)

        cut, _ = timed([sys.executable, "-m", "reprise", "release", "--part", "major"], work, env)
        version = yaml.safe_load(
            (work / ".bumpversion.cfg")
            .read_text()
            .replace(" = ", ": ")
            .split("[bumpversion]")[1]
            .split("\n\n")[0]
        )["current_version"]
        git("push", "-q", "--follow-tags", project_url, "HEAD:refs/heads/main", cwd=work)
        empty = base / "empty"
        empty.mkdir()
        mlflow = str(Path(sys.executable).parent / "mlflow")
        rerun, _ = timed(
            [mlflow, "run", f"{project_url}#project", "-v", version, "--env-manager", "local"],
            empty,
            env,
        )
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        experiment = client.get_experiment_by_name("reprise")
        (run,) = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`reprise.release` = '{version}'",
            max_results=1,
        )
        verify, table = timed(
            [sys.executable, "-m", "reprise", "verify", version, "--run", run.info.run_id],
            work,
            env,
        )
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        shutil.rmtree(base, ignore_errors=True)
    lines = [
        f"\n## Release cycle ({dt.date.today().isoformat()}, {args.sample})\n",
        "`.venv/bin/python benchmarks/release_cycle.py`\n",
        "| what | wall s |",
        "|---|---|",
        f"| cut {version} (`make release PART=major`: checks, whole pipeline, manifest, tag) "
        f"| {cut:.1f} |",
        f"| rerun from an empty folder (`mlflow run <project URI>#project -v {version}`) "
        f"| {rerun:.1f} |",
        f"| verify the rerun against the manifest (`reprise verify {version} --run ...`) "
        f"| {verify:.1f} |",
        "",
        "```",
        table.strip(),
        "```",
    ]
    record(lines)


if __name__ == "__main__":
    main()
