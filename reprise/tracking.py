"""The tracking store: MLFLOW_TRACKING_URI when set, else the embedded sqlite store."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from reprise import paths

# MLflow is imported where it is used: a second or more of start-up that some commands skip.

DEFAULT_EXPERIMENT = "reprise"


def store_uri() -> str:
    """The tracking store's URI: MLFLOW_TRACKING_URI when set (a shared server, say), else
    sqlite in the state folder, as an absolute path since each step runs in a folder of its own.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.state_dir() / 'mlflow.db'}"


def use_defaults() -> str:
    """Point MLflow (and every process started from here) at the store, with artifacts beside a
    sqlite store's file; return the experiment id."""
    import mlflow
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("REPRISE_STATE_DIR", str(paths.state_dir()))
    os.environ["MLFLOW_TRACKING_URI"] = store_uri()
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=_artifact_location())


def _artifact_location() -> str | None:
    """Artifacts of a new experiment: beside a sqlite store's file (MLflow would otherwise use
    ./mlruns of whatever folder the command ran in); a server's own default otherwise."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///")).resolve()
    return (database.parent / "mlartifacts").as_uri()


def ui_command() -> str:
    """The command that shows this store in the MLflow UI."""
    import mlflow

    return f"mlflow ui --backend-store-uri {mlflow.get_tracking_uri()}"


def run_project(uri: str, **kwargs: Any) -> Any:
    """``mlflow.projects.run`` that leaves no folder behind: MLflow makes a temporary folder per
    run for downloads of 'path' parameters and never removes it."""
    import mlflow.projects

    storage = tempfile.mkdtemp(prefix="reprise-mlflow-")
    try:
        return mlflow.projects.run(uri, storage_dir=storage, **kwargs)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
