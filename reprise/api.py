"""The platform from Python: what `python -m reprise run` does, callable from a notebook or a
script. Called again in the same process, a run pays no start-up (MLflow, its store, Hydra are
loaded once), so a rerun of cached steps costs only their lookups.

    from reprise import api
    run_id = api.run(["model=random_forest", "model.n_estimators=100"])
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from reprise import graph, paths, tracking
from reprise.errors import RepriseError


class ConfigError(RepriseError):
    """The overrides do not compose into a valid configuration."""


class PipelineFailed(RepriseError):
    """The pipeline ran and failed: a step failed or the configuration was refused."""


def use_this_python() -> None:
    """Steps run with env manager "local" call `python` (and `uv`) from PATH: make them this
    interpreter's."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir, path])


def run(overrides: Sequence[str] = (), steps: str = "all", cache: bool = True) -> str:
    """Run the pipeline (the project's config with Hydra ``overrides``) in this process; the id
    of the pipeline run. A sweep (-m) is the command line's: `python -m reprise run -m ...`."""
    import mlflow

    from reprise.pipeline import run_pipeline
    from reprise.project_args import steps_override

    overrides = [*overrides, *([] if cache else ["main.cache=false"])]
    if {"-m", "--multirun"} & set(overrides):
        raise ConfigError(
            "A sweep (-m) cannot run in this process.", "run it as python -m reprise run -m ..."
        )
    experiment_id = tracking.use_defaults()
    use_this_python()
    # as main.py does: one orchestrator line per step instead of MLflow's command echo
    logging.getLogger("mlflow.projects.backend.local").setLevel(logging.WARNING)
    try:
        cfg = graph.project_config(paths.ROOT, [*overrides, steps_override(steps)])
    except RepriseError as err:
        raise ConfigError(err.cause, err.fix) from None
    mlflow.set_experiment(experiment_id=experiment_id)
    try:
        run_pipeline(cfg, run_name="pipeline", source=str(paths.PROJECT_DIR))
    except RepriseError as err:
        raise PipelineFailed(err.cause, err.fix) from None
    return mlflow.last_active_run().info.run_id
