"""The platform tests' shared code: a real git server on 127.0.0.1 serving the components
repository as a repository of its own, and an isolated tracking store per test."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = ROOT / "components-repo"
SERVER_START_TIMEOUT_S = 20
# The tag through which every step says which release of the components repository its code is
# (the repository's VERSION file, read by step_kit): the served tags differ by it, so a test can
# tell which tag's code ran.
CODE_VERSION_TAG = "reprise.component.code_version"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_listening(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    """Return once ``process`` accepts connections on 127.0.0.1:``port``; kill it and fail the
    test when it dies or does not listen within SERVER_START_TIMEOUT_S."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail(f"{what} did not listen on 127.0.0.1:{port}")
            time.sleep(0.1)


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()


@dataclass
class GitServer:
    """A git daemon serving the bare repositories under ``base`` at ``url``."""

    base: Path
    url: str
    pid: int


@pytest.fixture(scope="session")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """``git daemon`` on 127.0.0.1, stopped by PID at the end of the session."""
    base = tmp_path_factory.mktemp("git-server")
    port = free_port()
    process = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--enable=receive-pack",
            f"--base-path={base}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_until_listening(port, process, "git daemon")
    try:
        yield GitServer(base, f"git://127.0.0.1:{port}", process.pid)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


@dataclass
class ComponentsRemote:
    """The components repository on the git server, with tags whose code differs."""

    url: str
    bare: Path
    tags: dict[str, str]  # tag -> commit SHA; each tag's VERSION file holds the tag


def _copy_components(dest: Path) -> None:
    shutil.copytree(
        COMPONENTS,
        dest,
        symlinks=True,
        # a checkout's environments and caches are nobody's source (a fresh clone has none)
        ignore=shutil.ignore_patterns(
            "__pycache__", "tests", "*.pyc", "wandb", "mlruns", ".venv", ".tools", ".*_cache"
        ),
    )


def publish_components(server: GitServer, name: str, versions: list[str]) -> ComponentsRemote:
    """Push the components repository to ``server`` as ``name``.git, one commit and tag per
    entry of ``versions``, each tag's VERSION file holding that version: every step of that
    tag's code records it as its run tag CODE_VERSION_TAG."""
    work = server.base.parent / f"{name}-work"
    _copy_components(work)
    git("init", "-q", "-b", "main", cwd=work)
    git("config", "user.email", "test@reprise.invalid", cwd=work)
    git("config", "user.name", "Reprise tests", cwd=work)
    tags = {}
    for version in versions:
        (work / "VERSION").write_text(f"{version}\n")
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", f"components {version}", cwd=work)
        git("tag", "-a", version, "-m", f"components {version}", cwd=work)
        tags[version] = git("rev-parse", "HEAD", cwd=work)
    bare = server.base / f"{name}.git"
    git("clone", "-q", "--bare", str(work), str(bare))
    return ComponentsRemote(f"{server.url}/{name}.git", bare, tags)


@pytest.fixture(scope="session")
def components_remote(git_server: GitServer) -> ComponentsRemote:
    """components.git on the git server: tags 0.1.0 and 0.2.0, whose code says which it is."""
    return publish_components(git_server, "components", ["0.1.0", "0.2.0"])


@dataclass
class Workspace:
    """An isolated tracking store, state folder and checkout cache; ``env`` for subprocesses."""

    path: Path
    env: dict[str, str]

    @property
    def tracking_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]


def workspace_env(path: Path) -> dict[str, str]:
    """This process's environment, with the tracking store, state and caches under ``path``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "WANDB_", "REPRISE_", "HYDRA_"))
    }
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{path / 'mlflow.db'}",
        MLFLOW_EXPERIMENT_NAME="reprise-test",
        REPRISE_STATE_DIR=str(path),
        REPRISE_CACHE_DIR=str(path / "cache"),
        WANDB_MODE="disabled",  # the mirror is tested by make run in a fresh clone
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path, workspace_env(tmp_path))


def reprise(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """``python -m reprise ARGS`` as a user types it, in its own process, from ``cwd``: the
    reprise package of that checkout runs."""
    return subprocess.run(
        [sys.executable, "-m", "reprise", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_reprise(
    workspace: Workspace, *args: str, timeout: int = 900
) -> subprocess.CompletedProcess:
    """``python -m reprise run ARGS`` against ``workspace``'s store."""
    return reprise("run", *args, env=workspace.env, timeout=timeout)


def mlflow_run(
    env: dict[str, str], cwd: Path, uri: str, version: str, *args: str, experiment: str = "Default"
) -> subprocess.CompletedProcess:
    """``mlflow run URI -v VERSION --env-manager local ARGS`` as a user types it."""
    return subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "mlflow"),
            "run",
            uri,
            "-v",
            version,
            "--env-manager",
            "local",
            "--experiment-name",
            experiment,
            *args,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@dataclass
class ServedStore:
    """A tracking store holding one whole pipeline run on the full bundled data, its model
    version aliased prod, and that run's test table (the parity data of the serving tests)."""

    workspace: Workspace
    model_name: str
    model_version: str
    test_table: Path


@pytest.fixture(scope="session")
def served_store(tmp_path_factory: pytest.TempPathFactory) -> ServedStore:
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("served")
    workspace = Workspace(path, workspace_env(path))
    result = run_reprise(workspace)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    version = client.get_model_version_by_alias("adult_income", "candidate")
    client.set_registered_model_alias("adult_income", "prod", version.version)
    split = client.search_runs(
        [client.get_experiment_by_name("reprise-test").experiment_id],
        filter_string="tags.`reprise.step` = 'train_val_test_split'",
    )[0]
    test_table = Path(client.download_artifacts(split.info.run_id, "test.parquet", str(path)))
    return ServedStore(workspace, "adult_income", str(version.version), test_table)


def latest_steps(workspace: Workspace, parent_filter: str = "tags.`reprise.pipeline` = 'true'"):
    """(the latest pipeline run matching ``parent_filter``, its child runs by step name)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    experiment = client.get_experiment_by_name("reprise-test")
    (parent,) = client.search_runs(
        [experiment.experiment_id],
        filter_string=parent_filter,
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    steps = {c.data.tags["reprise.step"]: c for c in children if "reprise.step" in c.data.tags}
    return parent, steps


@dataclass
class GitHttpServer:
    """``git http-backend`` behind HTTP basic auth, serving the bare repositories under ``base``:
    ``url`` holds no credentials; only ``user`` with ``password`` may fetch."""

    url: str
    user: str
    password: str
    pid: int

    def url_with_credentials(self, path: str) -> str:
        return self.url.replace("http://", f"http://{self.user}:{self.password}@") + path


@contextmanager
def git_http_auth_server(
    base: Path, user: str, password: str, lifetime_s: int = 1800
) -> Iterator[GitHttpServer]:
    """A smart-HTTP git server on 127.0.0.1 requiring ``user``:``password`` (HTTP basic auth),
    in a process of its own that ends after ``lifetime_s`` or when this context ends (by PID)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "git_http_auth_server.py"), str(base),
         str(port), user, password, str(lifetime_s)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    wait_until_listening(port, process, "the git HTTP server")
    try:
        yield GitHttpServer(f"http://127.0.0.1:{port}", user, password, process.pid)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def sweep_and_points(workspace: Workspace) -> tuple[Any, list[Any]]:
    """(the one sweep run of the workspace's experiment, its point runs)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    experiment = client.get_experiment_by_name("reprise-test")
    (sweep,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`reprise.sweep` = 'true'"
    )
    points = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'",
    )
    return sweep, points


def copy_work_tree(dest: Path, folder: Path = ROOT) -> None:
    """This repository's work tree (or one ``folder`` of it) as it is, uncommitted changes
    included and ignored files left out, in ``dest``, as a new git repository of one commit:
    what a push of the current code would serve."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "."],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = folder / name
        if not source.is_symlink() and not source.exists():
            continue  # deleted in the work tree, not yet in the index
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    git("init", "-q", "-b", "main", cwd=dest)
    git("config", "user.email", "test@reprise.invalid", cwd=dest)
    git("config", "user.name", "Reprise tests", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "-m", "The work tree", cwd=dest)


def declared_steps() -> list[str]:
    """The step names the project's pipeline declares (project/config/pipeline/), in order."""
    from reprise.graph import declared, project_config

    return declared(project_config(ROOT)).names


def log_and_register(model: Any, example: Any, name: str) -> tuple[str, str]:
    """(run id, version): ``model`` logged as train_model logs it (skops, its trusted types, a
    signature and input example from ``example``) in a new run, and registered as ``name``."""
    from step_kit import persist

    import mlflow
    from mlflow.models import infer_signature

    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=persist.trusted_types(model),
            signature=infer_signature(example, model.predict(example)),
            input_example=example,
        )
    return run.info.run_id, str(mlflow.register_model(info.model_uri, name).version)


@contextmanager
def workspace_process(env: dict[str, str]) -> Iterator[None]:
    """This process on the store and state of ``env`` (a workspace_env): its MLflow and Reprise
    settings replaced by those, tracking set up as a command sets it up, all restored after."""
    from reprise import tracking

    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith(("MLFLOW_", "REPRISE_"))]:
            patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        tracking.use_defaults()
        yield


@dataclass
class TeamServer:
    """A tracking server as `make server` starts it: PostgreSQL and `mlflow server` with proxied
    artifacts, on free ports of 127.0.0.1, its data in a folder of the test session."""

    uri: str
    folder: Path
    mlflow_pid: int
    postgres_pid: int


@pytest.fixture(scope="session")
def team_server() -> Iterator[TeamServer]:
    """One tracking server for the session's tests marked xdist_group("team"); stopped by PID."""
    from reprise import team_server as team

    # not under pytest's folders: those are closed to other users, and PostgreSQL runs as
    # nobody when the tests run as root (team_server.closed_parent)
    folder = Path(tempfile.mkdtemp(prefix="reprise-team-server-"))
    try:
        state, _ = team.start(port=free_port(), workers=2, where=folder)
        yield TeamServer(state.uri, folder, state.mlflow_pid, state.postgres_pid)
    finally:
        team.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def team_workspace(tmp_path: Path, team_server: TeamServer) -> Workspace:
    """A workspace whose runs go to the session's tracking server, in an experiment of its own."""
    env = workspace_env(tmp_path)
    env.update(
        MLFLOW_TRACKING_URI=team_server.uri,
        MLFLOW_EXPERIMENT_NAME=f"team-{tmp_path.name}-{os.getpid()}",
    )
    return Workspace(tmp_path, env)


@contextmanager
def ray_head(num_cpus: int = 2) -> Iterator[str]:
    """A Ray head of its own on 127.0.0.1 (``ray start --head --block`` in a session of its own,
    with none of this process's MLflow, Reprise or W&B settings); its address while inside.
    Stopped by killing that process group by PID, never by `ray stop` (every Ray of the host)."""
    # Ray's sockets live under the temp dir, whose path must stay short (AF_UNIX paths: 107 bytes)
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    port = free_port()
    env = {k: os.environ[k] for k in ("LANG", "TMPDIR") if k in os.environ}
    env["PATH"] = "/usr/bin:/bin"  # the workers' PATH is the cluster's, not the driver's
    # a HOME of its own: with a ~/.ray/auth_token (which a local ray.init writes) the head would
    # require that token, which a driver sends only when it knows it must
    env["HOME"] = str(temp)
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
         "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={num_cpus}",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
         f"--ray-client-server-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_until_listening(port, process, "the Ray head")
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        # `ray start` takes ~30 s to stop its processes gracefully; the test needs none of that
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        with suppress(ProcessLookupError):  # whatever of the group outlived it
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        shutil.rmtree(temp, ignore_errors=True)
