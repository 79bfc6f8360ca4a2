"""The pipeline's entry point: a Hydra app that runs the selected steps as MLflow child runs."""

import logging
import sys

from reprise.startup import imports_paused

with imports_paused():  # Hydra, MLflow, pandas: see reprise/startup.py
    import hydra
    from omegaconf import DictConfig

    from reprise import owners
    from reprise.errors import RepriseError
    from reprise.pipeline import StepFailed, run_pipeline
    from reprise.project_args import hydra_arguments
    from reprise.sweep import check_points, is_multirun
    from reprise.tracking import refuse_credentials_in_arguments

log = logging.getLogger("reprise")


@hydra.main(config_path="config", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # MLflow echoes each step's whole command line (JSON parameters included); the orchestrator
    # logs one line per step instead, and every parameter is on the step's run.
    logging.getLogger("mlflow.projects.backend.local").setLevel(logging.WARNING)
    try:
        with owners.signals_stop():
            run_pipeline(cfg)
    except owners.Stopped as stop:
        log.error("%s", stop.summary())
        sys.exit(stop.exit_code)
    except RepriseError as err:
        log.error("pipeline failed: %s", err)
        if not (is_multirun() and isinstance(err, StepFailed)):
            sys.exit(1)  # in a sweep, a point whose step failed fails alone; the summary shows it


if __name__ == "__main__":
    # The MLproject passes each parameter as one word; the overrides are split here, not by a shell
    try:
        # before Hydra reads them: it would echo them, and they are recorded in clear
        refuse_credentials_in_arguments(sys.argv[1:])
        sys.argv[1:] = hydra_arguments(sys.argv[1:])
    except RepriseError as err:
        sys.exit(f"main.py: {err}")
    main()
    try:
        check_points()  # a sweep with failed points exits 1, after every point and its summary
    except RepriseError as err:
        log.error("sweep failed: %s", err)
        sys.exit(1)
