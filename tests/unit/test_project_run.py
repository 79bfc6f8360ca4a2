"""A failed `mlflow run` of the pipeline project, as the commands that ran it report it."""

from __future__ import annotations

from reprise import tracking
from reprise.api import PipelineFailed, ProjectRunFailed

MLFLOW_SAYS = "Run (ID '0123abcd') failed"


def test_the_failed_run_is_read_from_mlflows_message() -> None:
    assert tracking.failed_run_id(MLFLOW_SAYS) == "0123abcd"
    assert tracking.failed_run_id("Could not find main among entry points") == ""


def test_the_recorded_cause_splits_into_cause_and_fix() -> None:
    err = ProjectRunFailed(MLFLOW_SAYS, "0123abcd", "Step data_check failed. Fix: look at it.")
    assert isinstance(err, PipelineFailed)
    assert (err.cause, err.fix, err.run_id) == (
        "Step data_check failed.",
        "look at it.",
        "0123abcd",
    )
    assert str(err) == "Step data_check failed. Fix: look at it."


def test_without_a_recorded_cause_mlflows_message_is_the_cause() -> None:
    err = ProjectRunFailed(MLFLOW_SAYS, "0123abcd", "")
    assert (err.cause, err.fix, err.message) == (MLFLOW_SAYS, "", MLFLOW_SAYS)
