"""Run main.py in an environment holding every pin of requirements.txt: this interpreter when it
holds them, else a venv made once and cached. A missing piece is one line and a FAILED run.

It runs in the interpreter that `mlflow run` found (on a fresh machine: Python and mlflow only),
so it imports the standard library and reprise's paths and owners (which need nothing more), and
mlflow only to record a failure on the run. What needs Python 3.9 is imported after the check of
the version, so that an older Python meets the one line too (3.7 and newer).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("reprise.bootstrap")

HERE = Path(__file__).resolve().parent
MAIN = HERE / "main.py"
REQUIREMENTS = HERE / "requirements.txt"
PYTHON_ENV = HERE / "python_env.yaml"
ERROR_TAG = "reprise.error"  # reprise.pipeline.ERROR_TAG: that module needs the locked packages
INSTALL_TIMEOUT_S = 1800


class BootstrapError(Exception):
    """A missing piece: its cause and fix, shown as one line (reprise.errors.RepriseError's form)."""

    def __init__(self, cause: str, fix: str) -> None:
        super().__init__(f"{cause} Fix: {fix}")


def needed_python() -> str:
    """The Python major.minor of the lock (python_env.yaml's ``python``)."""
    match = re.search(r"^python:\s*[\"']?(\d+\.\d+)", PYTHON_ENV.read_text(), re.MULTILINE)
    if match is None:
        raise BootstrapError(f"{PYTHON_ENV} names no python version.", "restore it from git.")
    return match.group(1)


def check_python() -> None:
    """Refuse an interpreter of another Python than the lock's: its pins would not install."""
    needed = needed_python()
    found = f"{sys.version_info.major}.{sys.version_info.minor}"
    if found != needed:
        raise BootstrapError(
            f"The project needs Python {needed}; mlflow runs it with Python {found} "
            f"({sys.executable}).",
            f"make a venv with Python {needed} (python{needed} -m venv .venv), activate it, "
            f"pip install mlflow=={pins().get('mlflow', '')}, and rerun.",
        )


def pins() -> dict[str, str]:
    """Each package of requirements.txt and its pinned version."""
    found = {}
    for line in REQUIREMENTS.read_text().splitlines():
        requirement = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==", 1)
            found[name.strip()] = version.strip()
    return found


def make_folder(folder: Path, what: str, variable: str) -> None:
    """Make ``folder`` (and its parents), or one line naming it and the variable that moves it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BootstrapError(
            f"Cannot make {what} {folder} ({err.strerror}).",
            f"set {variable} to a folder you can write, and rerun.",
        ) from err


def missing_pins() -> list[str]:
    """The pins this interpreter does not hold, as ``name==version``."""
    import importlib.metadata

    missing = []
    for name, version in pins().items():
        try:
            held = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            held = None
        if held != version:
            missing.append(f"{name}=={version}")
    return missing


def env_key() -> str:
    """The cached environment's name: this Python's version and the lock's digest."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    version = ".".join(map(str, sys.version_info[:3]))
    return f"{sys.implementation.name}{version}-{digest}"


def cached_env() -> Path:
    """The venv holding every pin: made once under the cache folder, reused after.

    It is built in a folder of its own and published by creating a symlink, which is atomic: two
    bootstraps at once each build, the first link wins and the other uses it; a bootstrap killed
    midway leaves a build folder that no link names, removed by the next build on this host.
    """
    from reprise import owners, paths

    envs = paths.cache_dir() / "envs"
    make_folder(envs, "the folder of the project's environments", "REPRISE_CACHE_DIR")
    link = envs / env_key()
    if link.is_symlink() and (link / "bin" / "python").exists():
        return link
    if link.exists() or link.is_symlink():
        raise BootstrapError(
            f"The cached environment {link} is broken (no bin/python in it).",
            f"remove it (rm -rf {link}) and rerun; it is made again.",
        )
    _remove_abandoned_builds(envs, link)
    try:
        build = Path(tempfile.mkdtemp(prefix=f".{link.name}.", dir=envs)) / "venv"
        build.parent.chmod(0o755)  # mkdtemp's 0700 would hide it from the other users of the cache
        (build.parent / owners.OWNER_FILE).write_text(json.dumps(owners.this_process().tags()))
    except OSError as err:
        raise BootstrapError(
            f"Cannot write in the folder of the project's environments {envs} ({err.strerror}).",
            "set REPRISE_CACHE_DIR to a folder you can write, and rerun.",
        ) from err
    started = time.monotonic()
    installer = _install(build, envs / f"{link.name}.log")
    try:
        os.symlink(build, link, target_is_directory=True)
    except FileExistsError:  # another bootstrap published the same environment first
        shutil.rmtree(build.parent, ignore_errors=True)
    log.info(
        "made the environment %s with %s in %.0f s", link, installer, time.monotonic() - started
    )
    return link


def _install(venv: Path, failed_log: Path) -> str:
    """Make ``venv`` with every pin; which tool did it. uv installs (4x faster than pip, 19 s
    against 58 s here): the one on PATH, else the pinned one, put in the new venv by pip. On a
    failure the installers' output is kept as ``failed_log``."""
    found = shutil.which("uv")
    python = str(venv / "bin" / "python")
    uv = found or str(venv / "bin" / "uv")
    if found:
        commands = [("uv venv", [uv, "venv", "--quiet", "--python", sys.executable, str(venv)])]
    else:
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
        commands = [
            ("python -m venv", [sys.executable, "-m", "venv", str(venv)]),
            ("pip install uv", [*pip, f"uv=={pins().get('uv', '')}".rstrip("=")]),
        ]
    # bytecode once now, or every step's `import mlflow` compiles for seconds (where Python may
    # not write it: PYTHONDONTWRITEBYTECODE); UV_COMPILE_BYTECODE=0 in the environment skips it
    install = [uv, "pip", "install", "--python", python]
    commands.append(("uv pip install", [*install, "-r", str(REQUIREMENTS)]))
    log_file = venv.parent / "install.log"
    log.info(
        "making the project's environment (once) in %s with %s; output in %s",
        venv.parent,
        "uv" if found else "pip and uv",
        log_file,
    )
    with log_file.open("w") as output:
        for label, command in commands:
            output.write(f"$ {' '.join(command)}\n")
            output.flush()
            try:
                status: int | str = subprocess.run(
                    command,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=INSTALL_TIMEOUT_S,
                    env={"UV_COMPILE_BYTECODE": "1", **os.environ},
                ).returncode
            except (OSError, subprocess.TimeoutExpired) as err:
                status = str(err)
            if status != 0:
                cause = _last_error(log_file, status)
                os.replace(log_file, failed_log)  # the build folder goes, its output stays
                shutil.rmtree(venv.parent, ignore_errors=True)
                raise BootstrapError(
                    f"Could not make the project's environment ({label}: {cause}; its output "
                    f"is in {failed_log}).",
                    "let this machine reach PyPI (or your index: PIP_INDEX_URL, UV_INDEX_URL) "
                    f"and rerun, or run in a Python {needed_python()} venv that holds "
                    f"{REQUIREMENTS.name} (pip install -r {REQUIREMENTS}).",
                )
    return "uv" if found else "pip and uv"


def _last_error(log_file: Path, status: int | str) -> str:
    """The installer's own error line, else its exit status."""
    lines = [line.strip() for line in log_file.read_text(errors="replace").splitlines()]
    errors = [line for line in lines if line.lower().startswith(("error", "×", "╰─▶"))]
    return (errors or [f"exit status {status}"])[-1][:300]


def _remove_abandoned_builds(envs: Path, link: Path) -> None:
    """Remove the build folders of ``link``'s environment whose builder is gone (killed midway):
    never the linked one, never one whose builder runs or is on another host."""
    from reprise import owners

    published = link.resolve().parent if link.is_symlink() else None
    for build in envs.glob(f".{link.name}.*"):
        try:
            owner = owners.owner_from(json.loads((build / owners.OWNER_FILE).read_text()))
        except (OSError, ValueError):
            continue  # no owner file (yet, or removed by another bootstrap): leave it
        if owner is not None and build != published and owners.is_gone(owner):
            shutil.rmtree(build, ignore_errors=True)


def record_failure(message: str) -> None:
    """End the MLflow run that started this (MLFLOW_RUN_ID) FAILED, with the cause as a tag."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.set_tag(run_id, ERROR_TAG, message[:5000])
    client.set_terminated(run_id, "FAILED")


def main(argv: list[str]) -> None:
    """Check Python, find or make the environment, and exec main.py in it with ``argv``."""
    # the platform's level (python -m reprise --log-level), as the steps take it; INFO otherwise
    level = os.environ.get("REPRISE_LOG_LEVEL", "").upper()
    logging.basicConfig(
        level=level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else logging.INFO,
        format="[%(asctime)s][%(name)s] %(message)s",
    )
    env = dict(os.environ)
    try:
        check_python()
        from reprise import paths

        if paths.in_mlflow_clone():
            # a git URI's checkout is a temp folder: W&B, Hydra outputs and the like go elsewhere
            state = paths.state_dir()
            env["REPRISE_STATE_DIR"] = str(state)
            make_folder(state, "the state folder", "REPRISE_STATE_DIR")
        if not missing_pins():
            python = sys.executable
        else:
            venv = cached_env()
            python = str(venv / "bin" / "python")
            # the env's tools (uv for the components, python) come first, as in an activated venv
            env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
            env["VIRTUAL_ENV"] = str(venv)
            env.pop("PYTHONHOME", None)
    except BootstrapError as err:
        try:
            record_failure(str(err))
        except Exception as record_err:  # noqa: BLE001 - the cause matters more than the record
            sys.exit(f"bootstrap.py: {err} (not recorded on the run: {record_err})")
        sys.exit(f"bootstrap.py: {err}")
    os.execve(python, [python, str(MAIN), *argv], env)


if __name__ == "__main__":
    main(sys.argv[1:])
