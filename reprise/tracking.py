"""The tracking store: MLFLOW_TRACKING_URI when set, else the embedded sqlite store."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.projects
from mlflow.tracking import MlflowClient

from reprise import paths

DEFAULT_EXPERIMENT = "reprise"


def use_defaults() -> str:
    """Point MLflow (and every process started from here) at the store; return the experiment id.

    MLFLOW_TRACKING_URI, when set, is used as it is (a shared server, say). Otherwise the store is
    sqlite in the state folder with artifacts beside it, both given as absolute paths, since each
    step runs in a folder of its own.
    """
    state = paths.state_dir()
    os.environ.setdefault("REPRISE_STATE_DIR", str(state))
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{state / 'mlflow.db'}"
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
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///")).resolve()
    return (database.parent / "mlartifacts").as_uri()


def ui_command() -> str:
    """The command that shows this store in the MLflow UI."""
    return f"mlflow ui --backend-store-uri {mlflow.get_tracking_uri()}"


def run_project(uri: str, **kwargs: Any) -> Any:
    """``mlflow.projects.run`` that leaves no folder behind: MLflow makes a temporary folder per
    run for downloads of 'path' parameters and never removes it."""
    storage = tempfile.mkdtemp(prefix="reprise-mlflow-")
    try:
        return mlflow.projects.run(uri, storage_dir=storage, **kwargs)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
