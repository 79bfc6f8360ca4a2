"""The tracking store: MLFLOW_TRACKING_URI when set, else the embedded sqlite store."""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reprise import owners, paths, tags
from reprise.credentials import (
    has_credentials,
    redact,
    refuse_credentials,
    scrub,
    strip_credentials,
)
from reprise.errors import RepriseError

# MLflow is imported where it is used: a second or more of start-up that some commands skip.

DEFAULT_EXPERIMENT = "reprise"
CREDENTIALS_FIX = (
    "take them out of the URI and let git supply them: a credential helper "
    "(git config credential.helper store), GIT_ASKPASS or ~/.netrc."
)


def store_uri() -> str:
    """The tracking store's URI: MLFLOW_TRACKING_URI when set (a shared server, say), else
    sqlite in the state folder, as an absolute path since each step runs in a folder of its own.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.state_dir() / 'mlflow.db'}"


def use_defaults() -> str:
    """Point MLflow (and every process started from here) at the store, with artifacts beside a
    sqlite store's file; end KILLED its runs whose owner process is gone (reprise.owners); return
    the experiment id."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("REPRISE_STATE_DIR", str(paths.state_dir()))
    os.environ["MLFLOW_TRACKING_URI"] = store_uri()
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    with _opening_store(os.environ["MLFLOW_TRACKING_URI"]):
        client = MlflowClient()  # it opens the store
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(name, artifact_location=_artifact_location())
            except MlflowException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            # another pipeline started at the same moment made it: use that one
            experiment = client.get_experiment_by_name(name)
            if experiment is None:  # made and deleted again by another process in between
                raise RepriseError(
                    f"The experiment '{name}' was made by another process and is gone again.",
                    "run the command again (or name another experiment: MLFLOW_EXPERIMENT_NAME).",
                )
    owners.reap(client, [experiment.experiment_id])
    return experiment.experiment_id


@contextmanager
def _opening_store(uri: str) -> Iterator[None]:
    """One process of this machine at a time opens a sqlite store: MLflow makes a new file's
    tables at its first open, and two processes doing it at once break each other's migration."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    folder = Path(uri.removeprefix("sqlite:///")).resolve().parent
    folder.mkdir(parents=True, exist_ok=True)
    # a lock on the folder, not on a file of its own: nothing is left beside the store
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def busy_store(err: BaseException) -> RepriseError | None:
    """The one line for a sqlite store that other processes kept locked longer than MLflow
    waits for it, else None."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith("sqlite:") or "database is locked" not in str(err):
        return None
    return RepriseError(
        f"The sqlite store {uri.removeprefix('sqlite:///')} is busy with other pipelines "
        "(database is locked longer than MLflow waits).",
        "to run many pipelines at once use a tracking server: make server, then export "
        "MLFLOW_TRACKING_URI=http://127.0.0.1:5000 (a run left RUNNING is ended KILLED by the "
        "next command).",
    )


def _artifact_location() -> str | None:
    """Artifacts of a new experiment: beside a sqlite store's file (MLflow would otherwise use
    ./mlruns of whatever folder the command ran in); a server's own default otherwise."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///")).resolve()
    return (database.parent / "mlartifacts").as_uri()


def server_url(uri: str) -> str:
    """A tracking server's URL without its credentials (the server serves the UI itself: the
    browser asks for the login), or empty when ``uri`` is a store the UI must be started on."""
    return strip_credentials(uri) if uri.lower().startswith(("http://", "https://")) else ""


def ui_arguments(uri: str) -> list[str]:
    """The `mlflow` arguments that start the MLflow UI on the store ``uri``."""
    return ["ui", "--backend-store-uri", uri]


def ui_command() -> str:
    """What shows this store in the MLflow UI: a tracking server's URL (it serves the UI
    itself), else the `mlflow ui` command that opens the store."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if url := server_url(uri):
        return f"open {url} in a browser"
    return " ".join(["mlflow", *ui_arguments(redact(uri))])


def ui_hint() -> str:
    """How to open this store's MLflow UI, as printed after a run: `make ui` where the checkout
    has it (pinned to this store when it is not the default one), and the command with this
    interpreter's mlflow, which works without the venv on PATH."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if server_url(uri):
        return ui_command()
    by_python = f"{shlex.quote(sys.executable)} -m {ui_command()}"
    if not (paths.ROOT / "Makefile").is_file():
        return by_python
    default = uri == f"sqlite:///{paths.ROOT / 'mlflow.db'}"
    store = "" if default else f"MLFLOW_TRACKING_URI={shlex.quote(redact(uri))} "
    folder = "" if Path.cwd() == paths.ROOT else f" -C {shlex.quote(str(paths.ROOT))}"
    return f"{store}make{folder} ui (or: {by_python})"


def run_project(uri: str, **kwargs: Any) -> Any:
    """``mlflow.projects.run`` that leaves no folder behind (MLflow makes a temporary folder per
    run for downloads of 'path' parameters and never removes it) and refuses credentials in a
    parameter, which MLflow would record."""
    # MLflow records every parameter in clear before the project runs: refuse credentials first.
    refuse_credentials(
        {k: str(v) for k, v in (kwargs.get("parameters") or {}).items()},
        what="Parameter",
        consequence=", which MLflow would record in clear",
        fix=CREDENTIALS_FIX,
        allowed=lambda key: False,
    )
    import mlflow.projects

    # in a pipeline's own scratch folder when there is one (TMPDIR): a killed run's goes with it
    storage = tempfile.mkdtemp(prefix="reprise-mlflow-", dir=os.environ.get("TMPDIR"))
    try:
        return mlflow.projects.run(uri, storage_dir=storage, **kwargs)
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def refuse_credentials_in_arguments(args: Sequence[str]) -> None:
    """Refuse a command line (main.py's, from `mlflow run -P ...`) holding a URI with credentials:
    `mlflow run` has recorded it as a run parameter already, so say which run to delete."""
    leaked = [a for a in args if has_credentials(a)]
    if not leaked:
        return
    run_id = os.environ.get("MLFLOW_RUN_ID")
    recorded = (
        f"; `mlflow run` recorded it in clear as a parameter of run {run_id}: delete that run "
        f"(mlflow runs delete --run-id {run_id}, then mlflow gc)"
        if run_id
        else ""
    )
    raise RepriseError(
        f"Argument {scrub(leaked[0])[:200]} holds a URI with credentials, which a run would "
        f"record in clear{recorded}.",
        CREDENTIALS_FIX,
    )


def failed_run_id(message: str) -> str:
    """The run id in MLflow's "Run (ID '...') failed" (an ExecutionException), else empty."""
    match = re.search(r"Run \(ID '([0-9a-f]+)'\)", message)
    return match.group(1) if match else ""


def recorded_cause(message: str) -> str:
    """The cause a failed pipeline run recorded (tag reprise.error), found from MLflow's failure
    message; empty when there is none."""
    from mlflow.tracking import MlflowClient

    run_id = failed_run_id(message)
    return (MlflowClient().get_run(run_id).data.tags.get(tags.ERROR_TAG) or "") if run_id else ""
