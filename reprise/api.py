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


class ProjectRunFailed(PipelineFailed):
    """`mlflow run` of the pipeline project failed: MLflow's message, the run it names (empty
    when it names none) and the cause that run recorded (tag reprise.error; empty when none)."""

    def __init__(self, message: str, run_id: str, recorded: str) -> None:
        cause, _, fix = (recorded or message).partition(" Fix: ")
        super().__init__(cause, fix)
        self.message = message
        self.run_id = run_id
        self.recorded = recorded


def use_this_python() -> None:
    """Steps run with env manager "local" call `python` (and `uv`) from PATH: make them this
    interpreter's."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir, path])


def run_project(project_dir: Path, parameters: dict[str, str], experiment_id: str) -> str:
    """Run the pipeline project's main entry point through MLflow (in a process of its own, this
    environment's Python); the pipeline run's id. A failure is a ProjectRunFailed."""
    from mlflow.projects import ExecutionException

    use_this_python()
    try:
        submitted = tracking.run_project(
            str(project_dir),
            entry_point="main",
            parameters=parameters,
            experiment_id=experiment_id,
            env_manager="local",
            run_name="pipeline",
        )
    except ExecutionException as err:
        message = str(err)
        raise ProjectRunFailed(
            message, tracking.failed_run_id(message), tracking.recorded_cause(message)
        ) from None
    return str(submitted.run_id)


def run(overrides: Sequence[str] = (), steps: str = "all", cache: bool = True) -> str:
    """Run the pipeline (the project's config with Hydra ``overrides``) in this process; the id
    of the pipeline run. A sweep (-m) is the command line's: `python -m reprise run -m ...`."""
    import mlflow

    from reprise.pipeline import run_pipeline
    from reprise.project_args import steps_override

    overrides = [*overrides, *([] if cache else ["main.cache=false"])]
    if {"-m", "--multirun"} & set(overrides):
        raise ConfigError(
            "A sweep (-m) cannot run in this process: Hydra's multirun needs its own app.",
            "run it from a shell: python -m reprise run -m key=a,b (or make run "
            "OVERRIDES='-m key=a,b').",
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
    finished = mlflow.last_active_run()
    if finished is None:  # run_pipeline starts the run; only a changed MLflow would lose it
        raise PipelineFailed("MLflow kept no last active run after the pipeline.", "run again.")
    return str(finished.info.run_id)
