"""One component run: its MLflow run, its W&B mirror, its inputs, outputs and failure handling."""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from step_kit.errors import StepError
from step_kit.tables import frame_digest, read_table, sha256_file

import mlflow
import pandas as pd

log = logging.getLogger(__name__)

# Tags through which a step tells the orchestrator where its outputs are.
OUTPUT_TAG = "reprise.output.{name}"
OUTPUT_DIGEST_TAG = "reprise.output.{name}.sha256"
# A digest of what an output holds, not of its bytes: a table's rows, values and dtypes, a
# model's predictions. Releases are verified by these.
OUTPUT_CONTENT_TAG = "reprise.output.{name}.digest"
STEP_TAG = "reprise.step"
# The one-line cause of a failed step, for the orchestrator to repeat.
ERROR_TAG = "reprise.error"
# Set by the orchestrator so every step of one pipeline run lands in one W&B group.
GROUP_ENV = "REPRISE_PIPELINE_RUN_ID"
# The version the running code's own repository declares (its VERSION file): which release's
# code ran, as the code itself says, beside the tag the orchestrator asked for.
CODE_VERSION_TAG = "reprise.component.code_version"


def code_version() -> str | None:
    """The VERSION of the components repository this step_kit belongs to; None without one."""
    # each component reaches step_kit through a link; the repository is the real folder's parent
    version = Path(__file__).resolve().parent.parent / "VERSION"
    try:
        return version.read_text(encoding="utf-8").strip()[:250] or None
    except (OSError, UnicodeDecodeError):  # missing, a folder, unreadable, not text: no record
        return None


def configure_logging() -> None:
    """Log lines with time, level and logger name; called once per process, at the entry point."""
    logging.basicConfig(
        level=os.environ.get("REPRISE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("alembic", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def wandb_mode() -> str:
    """W&B mode: WANDB_MODE if set, else online with an API key and offline without one."""
    return os.environ.get("WANDB_MODE") or (
        "online" if os.environ.get("WANDB_API_KEY") else "offline"
    )


class Step:
    """Context of one component run. Use as ``with Step("name", params) as step: ...``.

    A StepError inside the block ends the run FAILED with a one-line message and exit code 1; an
    interrupt (Ctrl-C) ends it KILLED with one line and exit code 130.
    """

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        self.name = name
        self.params = params
        self.run_id = ""
        self._wandb: Any = None
        self._tmp = tempfile.TemporaryDirectory(prefix=f"reprise-{name}-")
        self.workdir = Path(self._tmp.name)

    def __enter__(self) -> Step:
        configure_logging()
        run = mlflow.start_run()  # resumes the run that `mlflow run` made (MLFLOW_RUN_ID)
        self.run_id = run.info.run_id
        mlflow.set_tag(STEP_TAG, self.name)
        mlflow.set_tag("reprise.python", sys.executable)
        version = code_version()
        if version is not None:
            mlflow.set_tag(CODE_VERSION_TAG, version)
        self._wandb = self._start_wandb()
        log.info("step %s: MLflow run %s", self.name, self.run_id)
        # what started the run (its store, the step's imports) is set aside: see startup.py
        gc.freeze()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        failed = exc_type is not None
        # Ctrl-C in a terminal reaches the step too (same process group): one line, run KILLED
        stopped = isinstance(exc, KeyboardInterrupt)
        if stopped:
            log.error("step %s stopped by an interrupt (Ctrl-C); its run ends KILLED", self.name)
            mlflow.set_tag(ERROR_TAG, "stopped by an interrupt")
        elif isinstance(exc, StepError):
            log.error("step %s failed: %s", self.name, exc)
            mlflow.set_tag(ERROR_TAG, str(exc)[:5000])
        elif failed and not isinstance(exc, SystemExit):
            log.exception(
                "step %s failed with an unexpected error (a bug: please report it)", self.name
            )
            mlflow.set_tag(ERROR_TAG, f"unexpected {type(exc).__name__}: {exc}"[:5000])
        if self._wandb is not None:
            self._wandb.finish(exit_code=1 if failed else 0)
        mlflow.end_run("KILLED" if stopped else "FAILED" if failed else "FINISHED")
        self._tmp.cleanup()
        if stopped:
            sys.exit(130)  # the shell's code for SIGINT; no stack trace
        if isinstance(exc, StepError):
            sys.exit(1)  # the message above is the whole story; no stack trace
        return False

    # --- W&B -----------------------------------------------------------------------------------
    def _start_wandb(self) -> Any:
        mode = wandb_mode()
        if mode == "disabled":
            return None
        try:
            import wandb

            wandb_dir = Path(os.environ.get("WANDB_DIR") or self.workdir)
            wandb_dir.mkdir(parents=True, exist_ok=True)
            return wandb.init(
                project=os.environ.get("WANDB_PROJECT", "reprise"),
                group=os.environ.get(GROUP_ENV, self.run_id),
                job_type=self.name,
                name=f"{self.name}-{self.run_id[:8]}",
                config={**self.params, "mlflow_run_id": self.run_id},
                mode=mode,
                dir=str(wandb_dir),
                settings=wandb.Settings(
                    silent=True,
                    console="off",
                    init_timeout=30,
                    disable_git=True,
                    save_code=False,
                    x_disable_stats=True,
                    x_disable_machine_info=True,
                ),
            )
        except Exception as err:  # W&B is a mirror: it must never stop a step
            log.warning("W&B mirror off for step %s: %s", self.name, err)
            return None

    # --- inputs --------------------------------------------------------------------------------
    def input_file(self, uri: str, sha256: str = "") -> Path:
        """Download an artifact of an earlier step and check its digest when one is given."""
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(self.workdir / "inputs")
            )
        except Exception as err:
            raise StepError(
                f"Input artifact {uri} cannot be downloaded: {err}",
                "pass the artifact URI that the earlier step logged (its run tag reprise.output.*).",
            ) from None
        if sha256:
            actual = sha256_file(local)
            if actual != sha256:
                raise StepError(
                    f"Input artifact {uri} has sha256 {actual}, expected {sha256}.",
                    "rerun the step that produced it; the stored file changed since it was logged.",
                )
        return Path(local)

    def input_table(self, uri: str, sha256: str = "") -> pd.DataFrame:
        """Download, check and read a table artifact."""
        return read_table(self.input_file(uri, sha256))

    # --- outputs -------------------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Log numbers to MLflow and W&B."""
        mlflow.log_metrics(metrics)
        if self._wandb is not None:
            self._wandb.log(metrics)
        for key, value in metrics.items():
            log.debug("%s: %s = %s", self.name, key, value)
        log.info("%s: logged %d metrics", self.name, len(metrics))

    def log_figure(self, figure: Any, filename: str) -> None:
        """Log a matplotlib figure as a PNG under plots/ in MLflow, and as an image in W&B."""
        import matplotlib.pyplot as plt

        mlflow.log_figure(figure, f"plots/{filename}")
        if self._wandb is not None:
            import wandb

            self._wandb.log({f"plots/{Path(filename).stem}": wandb.Image(figure)})
        plt.close(figure)

    def log_report(self, name: str, report: Any) -> str:
        """Write ``report`` as JSON and log it as output ``name``."""
        path = self.workdir / f"{name}.json"
        path.write_text(json.dumps(report, indent=2, default=str))
        return self.output_file(name, path, artifact_type="report")

    def output_file(
        self, name: str, path: Path, artifact_type: str = "data", content_digest: str = ""
    ) -> str:
        """Log a file as this run's output ``name``; returns its ``runs:/`` URI."""
        digest = sha256_file(path)
        mlflow.log_artifact(str(path))
        uri = f"runs:/{self.run_id}/{path.name}"
        self.record_output(name, uri, digest, content_digest)
        if self._wandb is not None:
            import wandb

            artifact = wandb.Artifact(name, type=artifact_type, metadata={"sha256": digest})
            artifact.add_file(str(path))
            self._wandb.log_artifact(artifact)
        log.info("%s: output %s = %s (sha256 %s)", self.name, name, uri, digest)
        return uri

    def output_table(self, name: str, frame: pd.DataFrame, filename: str) -> str:
        """Write a table as Parquet and log it as output ``name``."""
        path = self.workdir / filename
        frame.to_parquet(path, index=False)
        return self.output_file(name, path, content_digest=frame_digest(frame))

    def record_output(
        self, name: str, uri: str, sha256: str = "", content_digest: str = ""
    ) -> None:
        """Tell the orchestrator where output ``name`` is, with the sha256 of its bytes and the
        digest of its content, through run tags."""
        mlflow.set_tag(OUTPUT_TAG.format(name=name), uri)
        if sha256:
            mlflow.set_tag(OUTPUT_DIGEST_TAG.format(name=name), sha256)
        if content_digest:
            mlflow.set_tag(OUTPUT_CONTENT_TAG.format(name=name), content_digest)
