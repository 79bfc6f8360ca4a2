"""Hydra multirun sweeps: one sweep run, each point a nested pipeline run under it, and a summary
that names the best point by a validation metric, never by a test metric."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from reprise import owners
from reprise.errors import RepriseError

log = logging.getLogger(__name__)

POINT_TAG = "reprise.sweep.point"
# The sweep run of this process: Hydra runs every point of a multirun in the same process.
_sweep_run_id: str | None = None


def is_multirun() -> bool:
    """True inside a point of a Hydra multirun (``-m``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def selection_metric(cfg: DictConfig) -> str:
    """The metric a sweep chooses by; it must be a validation metric."""
    metric = cfg.main.sweep.metric
    if not str(metric).startswith("val."):
        raise RepriseError(
            f"main.sweep.metric is '{metric}': a sweep must choose by a validation metric.",
            "name a val.* metric (e.g. val.roc_auc); the test table is for the chosen model only.",
        )
    return metric


@contextmanager
def pipeline_run(cfg: DictConfig, run_name: str = "") -> Iterator[Any]:
    """The MLflow run of one pipeline: the active (or a new) run, or in a multirun a point nested
    under the sweep run. A failed point fails only itself; the summary is updated after each."""
    global _sweep_run_id
    if not is_multirun():
        with mlflow.start_run(run_name=run_name or None) as run:
            yield run
        return
    metric = selection_metric(cfg)
    sweep = mlflow.start_run(run_id=_sweep_run_id)  # MLFLOW_RUN_ID, if set, at the first point
    _sweep_run_id = sweep.info.run_id
    # the sweep run has an owner like any pipeline run: a kill -9 leaves it for doctor to end
    mlflow.set_tags({"reprise.sweep": "true", **owners.this_process().tags()})
    overrides = " ".join(HydraConfig.get().overrides.task)
    try:
        with mlflow.start_run(nested=True, run_name=f"point-{HydraConfig.get().job.num}") as point:
            mlflow.set_tags({POINT_TAG: overrides, "reprise.pipeline": "true"})
            yield point
    finally:
        summarize(_sweep_run_id, metric, cfg.main.sweep.mode)
        mlflow.end_run()  # the sweep run: FINISHED, until check_points finds a failed point


def _points(client: MlflowClient, sweep_run_id: str) -> list[Any]:
    """The point runs of a sweep, oldest first."""
    sweep = client.get_run(sweep_run_id)
    return client.search_runs(
        [sweep.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{sweep_run_id}'",
        order_by=["attributes.start_time ASC"],
    )


def summarize(sweep_run_id: str, metric: str, mode: str) -> list[dict[str, Any]]:
    """Log the table of the sweep's points (best first) and name the best on the sweep run."""
    client = MlflowClient()
    points = _points(client, sweep_run_id)
    rows = [
        {
            "run_id": p.info.run_id,
            "overrides": p.data.tags.get(POINT_TAG, ""),
            "status": p.info.status,
            metric: p.data.metrics.get(metric),
            "test.roc_auc": p.data.metrics.get("test.roc_auc"),
            "test.f1": p.data.metrics.get("test.f1"),
        }
        for p in points
    ]
    sign = 1 if mode == "max" else -1
    scored = [r for r in rows if r["status"] == "FINISHED" and r[metric] is not None]
    rows.sort(key=lambda r: (r in scored, sign * (r[metric] or 0)), reverse=True)
    if scored:
        best = rows[0]
        client.set_tag(sweep_run_id, "reprise.sweep.best_run", best["run_id"])
        client.set_tag(sweep_run_id, "reprise.sweep.best_overrides", best["overrides"])
        client.log_metric(sweep_run_id, f"best.{metric}", best[metric])
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["run_id"])
    writer.writeheader()
    writer.writerows(rows)
    client.log_text(sweep_run_id, text.getvalue(), "sweep_summary.csv")
    log.info("sweep %s: %d points, best by %s (%s) first", sweep_run_id, len(rows), metric, mode)
    for r in rows:
        value = "-" if r[metric] is None else f"{r[metric]:.4f}"
        log.info(
            "  %-9s %s=%s  %s  run %s", r["status"], metric, value, r["overrides"], r["run_id"]
        )
    return rows


def check_points() -> None:
    """After a multirun: when any point of this process's sweep did not finish, mark the sweep run
    FAILED and raise an error naming those points, so that the sweep exits non-zero (1) although
    its other points ran and its summary names the best of them."""
    # with a launcher that runs points in other processes, MLflow's run id names the sweep run
    sweep_run_id = _sweep_run_id or os.environ.get("MLFLOW_RUN_ID")
    if not sweep_run_id:
        return
    from reprise.pipeline import ERROR_TAG  # pipeline imports this module

    client = MlflowClient()
    if client.get_run(sweep_run_id).data.tags.get("reprise.sweep") != "true":
        return
    points = _points(client, sweep_run_id)
    failed = [p for p in points if p.info.status != "FINISHED"]
    if not failed:
        return
    named = "; ".join(
        f"{p.info.run_name} ({p.data.tags.get(POINT_TAG) or 'no overrides'}, "
        f"{p.info.status}, run {p.info.run_id})"
        for p in failed
    )
    error = RepriseError(
        f"{len(failed)} of {len(points)} sweep points failed: {named}.",
        "see each failed point's run (tag reprise.error) for its cause; the sweep summary "
        "ranks the points that finished.",
    )
    client.set_tag(sweep_run_id, ERROR_TAG, str(error)[:5000])
    client.set_terminated(sweep_run_id, "FAILED")
    raise error
