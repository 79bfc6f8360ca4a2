"""End to end: the project reruns on a fresh machine (issue 11, item 1). A venv holding mlflow and
nothing else, with no uv anywhere on PATH, runs `mlflow run <git URI>#project -v TAG --env-manager
local` from an empty folder: the project makes its own environment and the pipeline finishes, its
W&B files where the log says; and each missing piece fails in one line, the run FAILED, none left
RUNNING. The project is this work tree, served by a git daemon on 127.0.0.1 and tagged."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from reprise.pipeline import ERROR_TAG
from support import ROOT, ComponentsRemote, GitServer, copy_work_tree, free_port, git

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fresh_machine")]

TAG = "fresh-1"  # a plain tag, no release manifest: the checkout runs its config like any other
EXPERIMENT = "fresh"
RUN_TIMEOUT_S = 600


def locked_mlflow() -> str:
    """The mlflow version of uv.lock: what the README tells a fresh machine to install."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == "mlflow")


def load_bootstrap():
    """project/bootstrap.py as a module (its env_key names the cached environment)."""
    spec = importlib.util.spec_from_file_location("bootstrap", ROOT / "project" / "bootstrap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class FreshMachine:
    """A venv with only mlflow, an environment without uv, and the served project's URI."""

    base: Path
    env: dict[str, str]
    uri: str

    def mlflow_run(self, folder: Path, **env: str) -> subprocess.CompletedProcess:
        """`mlflow run URI -v TAG --env-manager local --experiment-name fresh` in ``folder``."""
        folder.mkdir(parents=True)
        command = ["mlflow", "run", self.uri, "-v", TAG, "--env-manager", "local"]
        return subprocess.run(
            [*command, "--experiment-name", EXPERIMENT],
            cwd=folder,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )


@pytest.fixture(scope="module")
def fresh(
    git_server: GitServer, components_remote: ComponentsRemote, tmp_path_factory
) -> FreshMachine:
    base = tmp_path_factory.mktemp("fresh")
    work = base / "project-work"
    copy_work_tree(work)
    config_file = work / "project" / "config" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["components"].update(repository=components_remote.url, version="0.1.0")
    config["components"]["env_manager"] = "local"  # the steps run in the project's environment
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    etl_file = work / "project" / "config" / "etl" / "default.yaml"
    etl_file.write_text(etl_file.read_text().replace("sample2.parquet", "sample1.parquet"))
    git("commit", "-qam", "Pin the served components", cwd=work)
    git("tag", TAG, cwd=work)
    git("clone", "-q", "--bare", str(work), str(git_server.base / "fresh-reprise.git"))

    venv = base / "venv"
    uv = str(ROOT / ".venv" / "bin" / "uv")
    python = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    subprocess.run([uv, "venv", "-q", "--python", str(python), str(venv)], check=True, timeout=120)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
         f"mlflow=={locked_mlflow()}"],
        check=True,
        timeout=600,
    )  # fmt: skip
    # the system's PATH without any uv, and this venv's bin first, as if activated
    system = [d for d in os.environ["PATH"].split(os.pathsep) if d and not Path(d, "uv").exists()]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "WANDB_", "REPRISE_", "HYDRA_", "UV_", "VIRTUAL_ENV"))
    }
    (base / "tmp").mkdir()
    env.update(
        PATH=os.pathsep.join([str(venv / "bin"), *system]),
        VIRTUAL_ENV=str(venv),
        TMPDIR=str(base / "tmp"),  # MLflow's clones, so that the test can look inside them
        XDG_STATE_HOME=str(base / "state"),
        REPRISE_CACHE_DIR=str(base / "cache"),
        UV_COMPILE_BYTECODE="0",  # as for the whole session (conftest.py)
    )
    return FreshMachine(base, env, f"{git_server.url}/fresh-reprise.git#project")


def runs_of(folder: Path) -> list:
    """The runs of experiment "fresh" in the sqlite store MLflow made in ``folder``."""
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id])


def test_the_project_makes_its_environment_and_says_where_the_runs_go(fresh: FreshMachine):
    folder = fresh.base / "run"
    result = fresh.mlflow_run(folder)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "making the project's environment (once)" in output
    # every run of the pipeline, finished, in the named experiment of the store in the folder
    runs = runs_of(folder)
    assert len(runs) == 7, [r.data.tags.get("mlflow.runName") for r in runs]
    assert {r.info.status for r in runs} == {"FINISHED"}
    wandb = folder / "wandb"
    assert f"runs go to the MLflow store sqlite:///{folder / 'mlflow.db'}" in output
    assert f"experiment '{EXPERIMENT}'" in output and "--experiment-name" not in output
    assert f"W&B offline runs to {wandb} (upload them with: wandb sync {wandb}/offline-run-*)" in (
        output
    )
    assert len(list(wandb.glob("offline-run-*"))) == 6  # one per step
    # nothing of the run is left in MLflow's temporary clone
    (clone,) = (fresh.base / "tmp").glob("tmp*/project")
    assert not list(clone.parent.rglob("wandb")) and not (clone / "outputs").exists()
    assert (folder / "outputs").is_dir()  # Hydra's run folder, beside the store


def broken_cache(fresh: FreshMachine, name: str) -> dict[str, str]:
    """A cache folder whose cached environment is a link to nothing (its build was removed)."""
    envs = fresh.base / name / "envs"
    envs.mkdir(parents=True)
    (envs / load_bootstrap().env_key()).symlink_to(envs / ".removed-build" / "venv")
    return {"REPRISE_CACHE_DIR": str(envs.parent)}


def cache_is_a_file(fresh: FreshMachine, name: str) -> dict[str, str]:
    """A cache folder that is a file."""
    (fresh.base / name).write_text("not a folder\n")
    return {"REPRISE_CACHE_DIR": str(fresh.base / name)}


def index_unreachable(fresh: FreshMachine, name: str) -> dict[str, str]:
    """No package index to reach: pip's points at a closed port on 127.0.0.1."""
    return {
        "REPRISE_CACHE_DIR": str(fresh.base / name),
        "PIP_CONFIG_FILE": os.devnull,  # no other index from a config file
        "PIP_INDEX_URL": f"http://127.0.0.1:{free_port()}/simple",
        "PIP_RETRIES": "0",
        "PIP_NO_CACHE_DIR": "1",
    }


@pytest.mark.parametrize(
    ("make", "cause", "fix"),
    [
        (
            cache_is_a_file,
            "Cannot make the folder of the project's environments",
            "set REPRISE_CACHE_DIR to a folder you can write",
        ),
        (broken_cache, "is broken (no bin/python in it)", "remove it (rm -rf"),
        (
            index_unreachable,
            "Could not make the project's environment (pip install uv: ERROR: ",
            "let this machine reach PyPI",
        ),
    ],
    ids=["cache-is-a-file", "broken-cached-env", "index-unreachable"],
)
def test_a_missing_piece_fails_in_one_line_and_leaves_no_run_running(
    fresh: FreshMachine, make, cause: str, fix: str
):
    name = make.__name__
    folder = fresh.base / f"fail-{name}"
    result = fresh.mlflow_run(folder, **make(fresh, name))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    (line,) = [line for line in output.splitlines() if line.startswith("bootstrap.py: ")]
    assert cause in line and f"Fix: {fix}" in line, line
    (run,) = runs_of(folder)
    assert run.info.status == "FAILED"
    assert run.data.tags[ERROR_TAG] == line.removeprefix("bootstrap.py: ")


def test_bootstraps_at_once_after_a_killed_one_make_one_environment(fresh: FreshMachine):
    env = {**fresh.env, "REPRISE_CACHE_DIR": str(fresh.base / "shared-cache")}
    envs = fresh.base / "shared-cache" / "envs"
    python = str(fresh.base / "venv" / "bin" / "python")
    command = [python, "bootstrap.py", "--steps=get_data", "--hydra_options=--cfg job"]
    project = fresh.base / "project-work" / "project"
    killed = subprocess.Popen(
        command,
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its installers too
    )
    deadline = time.monotonic() + 120
    while not list(envs.glob(".*/venv/bin/pip")):  # midway: the venv is made, the pins are not
        assert killed.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=10)
    (abandoned,) = envs.glob(".*")
    together = [
        subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for process in together:
        out, _ = process.communicate(timeout=RUN_TIMEOUT_S)
        assert process.returncode == 0
        assert "steps: get_data" in out  # main.py ran, in the environment, with the arguments
    (link,) = [path for path in envs.iterdir() if path.is_symlink()]
    # the killed build and the build that lost the race are gone; the linked one is complete
    assert [path for path in envs.glob(".*")] == [link.resolve().parent] != [abandoned]
    assert (link / "bin" / "uv").is_file()  # the components' `--env-manager uv` finds it
