"""What the benchmarks share: the repository root, recording results, and a git daemon on
127.0.0.1 serving the components repository."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def run_env(state: Path, tracking_uri: str, experiment: str | None = None) -> dict[str, str]:
    """This process's environment for a benchmark's pipelines: the store at ``tracking_uri``,
    state and checkout cache under ``state``, W&B off, this venv's bin first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "WANDB_", "REPRISE_", "HYDRA_"))
    }
    env |= {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "REPRISE_STATE_DIR": str(state),
        "REPRISE_CACHE_DIR": str(state / "cache"),
        "WANDB_MODE": "disabled",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    if experiment is not None:
        env["MLFLOW_EXPERIMENT_NAME"] = experiment
    return env


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def record(lines: list[str], append: bool = True) -> None:
    """Print a benchmark's section and, unless told not to, append it to RESULTS.md."""
    if append:
        with RESULTS.open("a") as out:
            out.write("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


def git(*args: str, cwd: Path = ROOT) -> str:
    """``git ARGS`` in ``cwd`` (the repository by default); its output. A failure raises."""
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=120
    ).stdout.strip()


def serve_components(base: Path) -> tuple[subprocess.Popen, str]:
    """The components repository as components.git, tag bench-1, on a git daemon."""
    work = base / "components"
    shutil.copytree(
        ROOT / "components-repo",
        work,
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "tests"),
    )
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git(
        "-c",
        "user.email=b@reprise.invalid",
        "-c",
        "user.name=bench",
        "commit",
        "-qm",
        "c",
        cwd=work,
    )
    git("tag", "bench-1", cwd=work)
    git("clone", "-q", "--bare", str(work), str(base / "served" / "components.git"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--enable=receive-pack",  # the release cycle pushes the project to it
            f"--base-path={base / 'served'}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base / "served"),
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return daemon, f"git://127.0.0.1:{port}/components.git"
        except OSError:
            time.sleep(0.1)
    daemon.kill()
    raise SystemExit("git daemon did not start")


def code_state() -> str:
    """The commit measured, and which files of reprise/ differ from it (others edit them)."""
    changed = git("diff", "--name-only", "HEAD", "--", "reprise").split()
    return f"Reprise at {git('rev-parse', '--short', 'HEAD')}" + (
        f" with uncommitted changes to {', '.join(changed)}" if changed else ""
    )


def python(
    *args: str, env: dict[str, str], timeout: float = 3600, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """``python ARGS`` (this virtual environment's) from ``cwd`` (the repository root by default);
    a failure stops the benchmark with the end of its output."""
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise SystemExit((result.stdout + result.stderr)[-4000:])
    return result
