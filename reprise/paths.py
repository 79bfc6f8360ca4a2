"""Every path of the platform, derived from one root and two environment variables."""

from __future__ import annotations

import os
import shlex
import tempfile
import urllib.parse
from pathlib import Path

# The repository root: the folder that holds project/, components-repo/ and reprise/.
ROOT = Path(__file__).resolve().parent.parent
PROJECT_DIR = ROOT / "project"
COMPONENTS_DIR = ROOT / "components-repo"
RELEASES_DIR = ROOT / "releases"


def state_dir() -> Path:
    """Where local run state goes (sqlite store, artifacts, W&B offline runs, Hydra outputs):
    REPRISE_STATE_DIR, else the repository root; in MLflow's temporary clone of a git URI, the
    folder of a local tracking store, else ~/.local/state/reprise."""
    if given := os.environ.get("REPRISE_STATE_DIR"):
        return Path(given).resolve()
    if not in_mlflow_clone():
        return ROOT
    # the clone is a temp folder nobody looks in and MLflow never deletes: keep state beside the
    # runs the user asked for, or in the user's state folder when the store is a server
    store = local_store_folder(os.environ.get("MLFLOW_TRACKING_URI", ""))
    default = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "reprise"
    return (store or default).resolve()


def in_mlflow_clone(root: Path = ROOT) -> bool:
    """Whether ``root`` is a checkout `mlflow run <git URI>` made: tmpXXXXXXXX in the temp folder."""
    return root.parent == Path(tempfile.gettempdir()).resolve() and root.name.startswith("tmp")


def local_store_folder(tracking_uri: str) -> Path | None:
    """The folder holding a local tracking store (a sqlite file, a file store), else None."""
    if tracking_uri.startswith("sqlite:///"):  # SQLAlchemy's form: an absolute path has 4 /
        path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
    else:
        parts = urllib.parse.urlsplit(tracking_uri)
        if parts.scheme not in {"file", ""} or parts.netloc:
            return None
        path = parts.path
    path = urllib.parse.unquote(path)
    return Path(path).parent if path.startswith("/") else None


def wandb_dir() -> Path:
    """The folder of W&B's offline runs: wandb/ inside WANDB_DIR, else inside the state folder."""
    return Path(os.environ.get("WANDB_DIR") or state_dir()) / "wandb"


def where_runs_go(store: str, experiment: str, wandb_mode: str) -> str:
    """One line naming where a pipeline's runs go: the tracking store (``store`` with its
    credentials already stripped), the experiment, and W&B's folder with its upload command."""
    line = f"runs go to the MLflow store {store}, experiment {experiment!r}"
    if experiment == "Default":
        line += (
            " (MLflow's default: name one with --experiment-name NAME or MLFLOW_EXPERIMENT_NAME)"
        )
    if wandb_mode == "offline":
        runs = wandb_dir()
        line += (
            f"; W&B offline runs to {runs} (upload them with: "
            f"wandb sync {shlex.quote(str(runs))}/offline-run-*)"
        )
    elif wandb_mode == "online":
        line += f"; W&B online, project {os.environ.get('WANDB_PROJECT', '?')}"
    return line


def cache_dir() -> Path:
    """Where fetched component checkouts are kept: REPRISE_CACHE_DIR, else ~/.cache/reprise."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reprise"
    return Path(os.environ.get("REPRISE_CACHE_DIR") or default).resolve()
