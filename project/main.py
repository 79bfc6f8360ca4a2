"""The pipeline's entry point: a Hydra app that runs the selected steps as MLflow child runs."""

import logging
import sys

import hydra
from omegaconf import DictConfig

from reprise.errors import RepriseError
from reprise.pipeline import StepFailed, run_pipeline
from reprise.sweep import is_multirun

log = logging.getLogger("reprise")


@hydra.main(config_path="config", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # MLflow echoes each step's whole command line (JSON parameters included); the orchestrator
    # logs one line per step instead, and every parameter is on the step's run.
    logging.getLogger("mlflow.projects.backend.local").setLevel(logging.WARNING)
    try:
        run_pipeline(cfg)
    except RepriseError as err:
        log.error("pipeline failed: %s", err)
        if not (is_multirun() and isinstance(err, StepFailed)):
            sys.exit(1)  # in a sweep, a point whose step failed fails alone; the summary shows it


if __name__ == "__main__":
    main()
