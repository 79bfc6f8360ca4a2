"""Hydra multirun sweeps: one sweep run, each point a pipeline run nested under it, and a summary
that names the best point by a validation metric, never by a test metric.

The points run one after another in this process (Hydra's basic launcher), or in parallel in
other processes (hydra/launcher=joblib) or on a Ray cluster (hydra/launcher=ray). Whatever the
launcher, ``SweepCallback`` (registered in the project's hydra.callbacks) opens the sweep run in
the driver before any point starts and writes the final summary after the last; each point
creates its own run under the sweep run without ever resuming or ending it.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from reprise import owners, tags
from reprise.errors import RepriseError
from reprise.plain_config import plain_dict

log = logging.getLogger(__name__)

POINT_TAG = tags.SWEEP_POINT_TAG
SWEEP_TAG = tags.SWEEP_TAG
# The sweep run, for points in processes that do not share this module's state.
SWEEP_RUN_ENV = "REPRISE_SWEEP_RUN_ID"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
# What a point needs from the driver's environment where workers do not inherit it (Ray): the
# tracking server (and its credentials), the experiment, Reprise's folders, the W&B mirror.
CARRIED_PREFIXES = ("MLFLOW_", "REPRISE_", "WANDB_")
# Ray's own default for a cluster it starts, which the Ray launcher sets when it starts Ray.
RAY_OBJECT_STORE_BYTES = 78643200
RAY_CONNECT_TIMEOUT_S = 10
# The sweep run of this process; whether this process made it (then it also ends it); whether a
# point opened it (a project without the callback, points in this process: each point ends it).
_sweep_run_id: str | None = None
_sweep_made_here = False
_opened_by_point = False


def is_multirun() -> bool:
    """True inside a point of a Hydra multirun (``-m``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def selection_metric(cfg: DictConfig) -> str:
    """The metric a sweep chooses by; it must be a validation metric."""
    metric = str(cfg.main.sweep.metric)
    if not metric.startswith("val."):
        raise RepriseError(
            f"main.sweep.metric is '{metric}': a sweep must choose by a validation metric.",
            "name a val.* metric (e.g. val.roc_auc); the test table is for the chosen model only.",
        )
    return metric


def launcher_of(hydra: DictConfig) -> str:
    """The class path of the launcher of a Hydra config's ``hydra`` node."""
    return str(OmegaConf.select(hydra, "launcher._target_", default=BASIC_LAUNCHER))


def _hydra_node() -> DictConfig:
    """This run's ``hydra`` node, which Hydra annotates as its HydraConf dataclass although it
    hands out the DictConfig built from it."""
    node = HydraConfig.get()
    if not isinstance(node, DictConfig):
        raise TypeError(f"HydraConfig.get() returned a {type(node).__name__}, not a DictConfig")
    return node


def is_ray(launcher: str) -> bool:
    """Whether ``launcher`` is the Hydra Ray launcher (local or a cluster's address)."""
    return launcher.startswith("hydra_plugins.hydra_ray_launcher.")


def launcher_given(overrides: Sequence[str]) -> str | None:
    """The launcher a command line picks (hydra/launcher=NAME, with or without + or ++), unless
    it is Hydra's basic one, which runs the points one after another."""
    for item in overrides:
        key, _, name = item.lstrip("+").partition("=")
        if key == "hydra/launcher" and name != "basic":
            return name
    return None


def refuse_local_store(launcher: str) -> None:
    """Refuse a parallel launcher on a store that is a local file (sqlite, a folder): points in
    several processes would write it at once, and a Ray cluster's workers cannot reach it."""
    uri = mlflow.get_tracking_uri()
    scheme = uri.split(":", 1)[0] if "://" in uri else "file"
    if scheme not in ("sqlite", "file"):
        return
    raise RepriseError(
        f"A parallel sweep (hydra/launcher={launcher}) needs a tracking server, and the MLflow "
        f"store {uri} is a local {scheme} store that its points' processes would write at once "
        "(and that a Ray cluster's workers cannot reach).",
        "start one with make server and export MLFLOW_TRACKING_URI=<the URI it prints>, or drop "
        "hydra/launcher to run the points one after another.",
    )


def _experiment_id(client: MlflowClient) -> str:
    """The experiment a new sweep run goes in: MLflow's environment variables, else Default."""
    if experiment_id := os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return experiment_id
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    experiment = client.get_experiment_by_name(name) if name else None
    if experiment is None and name:
        return client.create_experiment(name)
    return experiment.experiment_id if experiment else "0"


def open_sweep() -> str:
    """The sweep run of this multirun, made before any point starts: the run `mlflow run` made
    for this process (MLFLOW_RUN_ID), else a new one. Its id goes to the points in
    REPRISE_SWEEP_RUN_ID; MLFLOW_RUN_ID is dropped, or a point's start_run would resume it."""
    global _sweep_run_id, _sweep_made_here
    client = MlflowClient()
    run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    _sweep_made_here = run_id is None
    if run_id is None:
        run_id = client.create_run(_experiment_id(client), run_name="sweep").info.run_id
    # the sweep run has an owner like any pipeline run: a kill -9 leaves it for doctor to end
    for key, value in {SWEEP_TAG: "true", **owners.this_process().tags()}.items():
        client.set_tag(run_id, key, value)
    _sweep_run_id = run_id
    os.environ[SWEEP_RUN_ENV] = run_id
    return run_id


def close_sweep(cfg: DictConfig) -> None:
    """After the last point: the final summary (points finishing at once may have overwritten
    each other's), and a sweep run this process made ended FINISHED (check_points may fail it)."""
    if _sweep_run_id is None:
        return
    summarize(_sweep_run_id, selection_metric(cfg), cfg.main.sweep.mode)
    if _sweep_made_here:
        MlflowClient().set_terminated(_sweep_run_id, "FINISHED")


def carried_environment() -> dict[str, str]:
    """The environment a point needs, for workers that do not inherit this process's (Ray)."""
    carried = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(CARRIED_PREFIXES) and k != "MLFLOW_RUN_ID"
    }
    # the URI as MLflow resolved it here (it may have been set in code, or be relative)
    carried["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    if _sweep_run_id:
        carried[SWEEP_RUN_ENV] = _sweep_run_id
        carried["MLFLOW_EXPERIMENT_ID"] = MlflowClient().get_run(_sweep_run_id).info.experiment_id
        carried.pop("MLFLOW_EXPERIMENT_NAME", None)
    return carried


def start_ray(cfg: DictConfig) -> None:
    """Start (or join, at hydra.launcher.ray.init.address) Ray before the Ray launcher does, with
    the environment its workers need: they do not inherit this process's. The launcher then
    finds Ray initialized and uses it."""
    import ray

    init = plain_dict(cfg.hydra.launcher.ray.init, "hydra.launcher.ray.init")
    if init.get("address") is None:  # as the launcher would: a small store for a local Ray
        init.setdefault("object_store_memory", RAY_OBJECT_STORE_BYTES)
    runtime_env = dict(init.pop("runtime_env", None) or {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **carried_environment()}
    where = f"the Ray cluster at {init['address']}" if init.get("address") else "Ray"
    fix = (
        "start the cluster (ray start --head on its head node) or correct "
        "hydra.launcher.ray.init.address, and rerun."
    )
    # Ray retries an address where nothing listens for minutes: ask the head's port first
    if (host_port := _host_port(init.get("address"))) is not None:
        try:
            socket.create_connection(host_port, timeout=RAY_CONNECT_TIMEOUT_S).close()
        except OSError as err:
            raise RepriseError(f"Nothing answers at {where} ({err.strerror or err}).", fix) from err
    try:
        ray.init(**init, runtime_env=runtime_env)
    except (ConnectionError, RuntimeError, ValueError) as err:  # Ray's ways to say it cannot
        raise RepriseError(
            f"The sweep could not start {where}: {err}".splitlines()[0], fix
        ) from err


def _host_port(address: str | None) -> tuple[str, int] | None:
    """(host, port) of a Ray address "host:port" or "ray://host:port"; None for none or "auto"."""
    host, _, port = str(address or "").removeprefix("ray://").rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


class SweepCallback(Callback):
    """Hydra callback (hydra.callbacks): the sweep run exists before any point starts, in the
    driver, whatever the launcher; the final summary is written after the last point."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = launcher_of(config.hydra)
        try:
            selection_metric(config)
            if launcher != BASIC_LAUNCHER:
                refuse_local_store(config.hydra.runtime.choices.get("hydra/launcher", launcher))
            open_sweep()
            if is_ray(launcher):
                start_ray(config)
        except RepriseError as err:
            _refuse(err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        close_sweep(config)


def _refuse(err: RepriseError) -> None:
    """End the multirun before any point starts: the one line in the log and on the run that
    `mlflow run` made (tag reprise.error), exit 1."""
    from reprise.pipeline import ERROR_TAG  # pipeline imports this module

    log.error("sweep refused: %s", err)
    if run_id := _sweep_run_id or os.environ.get("MLFLOW_RUN_ID"):
        MlflowClient().set_tag(run_id, ERROR_TAG, str(err)[:5000])
        if _sweep_made_here:  # else `mlflow run` ends its run FAILED when this process exits 1
            MlflowClient().set_terminated(run_id, "FAILED")
    sys.exit(1)


@contextmanager
def pipeline_run(cfg: DictConfig, run_name: str = "") -> Iterator[mlflow.ActiveRun]:
    """The MLflow run of one pipeline: the active (or a new) run, or in a multirun a point nested
    under the sweep run. A failed point fails only itself; the summary is updated after each."""
    global _opened_by_point
    if not is_multirun():
        with mlflow.start_run(run_name=run_name or None) as run:
            yield run
        return
    metric = selection_metric(cfg)
    sweep_run_id = _sweep_run_id or os.environ.get(SWEEP_RUN_ENV)
    launcher = launcher_of(_hydra_node())
    if sweep_run_id is None and launcher != BASIC_LAUNCHER:
        raise RepriseError(
            "This parallel sweep has no sweep run: the project does not register Reprise's "
            "sweep callback, so each point would make a sweep run of its own.",
            "add hydra.callbacks.sweep._target_: reprise.sweep.SweepCallback to the project's "
            "config.yaml (as project/config/config.yaml does).",
        )
    if sweep_run_id is None:  # a project without the callback: points in this process
        _opened_by_point = True
        sweep_run_id = open_sweep()
    if launcher != BASIC_LAUNCHER:
        from reprise.api import use_this_python

        use_this_python()  # a Ray worker's PATH is the cluster's, not the driver's
    # a worker started inside another MLflow run would else resume that run instead
    os.environ.pop("MLFLOW_RUN_ID", None)
    client = MlflowClient()
    hydra = HydraConfig.get()
    try:
        with mlflow.start_run(
            experiment_id=client.get_run(sweep_run_id).info.experiment_id,
            parent_run_id=sweep_run_id,
            nested=True,
            run_name=f"point-{hydra.job.num}",
            tags={POINT_TAG: " ".join(hydra.overrides.task), tags.PIPELINE_TAG: "true"},
        ) as point:
            yield point
    finally:
        # points that finish at once may overwrite each other's; the driver writes the last one
        summarize(sweep_run_id, metric, cfg.main.sweep.mode)
        if _opened_by_point:
            client.set_terminated(sweep_run_id, "FINISHED")  # until check_points finds a failure


def _points(client: MlflowClient, sweep_run_id: str) -> list[Run]:
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
        client.set_tag(sweep_run_id, tags.SWEEP_BEST_RUN_TAG, best["run_id"])
        client.set_tag(sweep_run_id, tags.SWEEP_BEST_OVERRIDES_TAG, best["overrides"])
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
    sweep_run_id = _sweep_run_id
    if not sweep_run_id:
        return
    from reprise.pipeline import ERROR_TAG  # pipeline imports this module

    client = MlflowClient()
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
