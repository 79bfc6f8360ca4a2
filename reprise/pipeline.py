"""The orchestrator: one parent MLflow run, one child run per step, artifact URIs and digests
passed from step to step."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlflow
from mlflow.projects import ExecutionException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from reprise import cache, manifest, owners, paths, sweep, tracking
from reprise.components import (
    ComponentSpec,
    ResolvedComponent,
    redact,
    refuse_credentials,
    resolve,
    resolve_pinned,
    without_credentials,
)
from reprise.errors import RepriseError

log = logging.getLogger(__name__)

STEPS = (
    "get_data",
    "basic_cleaning",
    "data_check",
    "train_val_test_split",
    "train_model",
    "test_model",
)
ENV_MANAGERS = ("auto", "local", "uv", "virtualenv")
# Tags a component sets on its run for each output (see step_kit/step.py).
OUTPUT_TAG = "reprise.output.{name}"
OUTPUT_DIGEST_TAG = "reprise.output.{name}.sha256"
OUTPUT_CONTENT_TAG = "reprise.output.{name}.digest"
STEP_TAG = "reprise.step"
ERROR_TAG = "reprise.error"


class StepFailed(RepriseError):
    """A step of the pipeline failed (as opposed to the pipeline's own configuration)."""


def select_steps(spec: str) -> list[str]:
    """``all`` or a comma-separated list of step names, in pipeline order."""
    wanted = [s.strip() for s in str(spec).split(",") if s.strip()]
    if not wanted or wanted == ["all"]:
        return list(STEPS)
    unknown = [s for s in wanted if s not in STEPS]
    if unknown:
        raise RepriseError(
            f"Unknown step(s) {', '.join(unknown)}.",
            f"choose from: all, {', '.join(STEPS)} (comma-separated).",
        )
    return [s for s in STEPS if s in wanted]


def component_specs(cfg: DictConfig, steps: list[str]) -> dict[str, ComponentSpec]:
    """Repository, version and environment manager of each step: the shared values, except where
    ``components.overrides.<step>`` sets its own (null inherits)."""
    shared = cfg.components
    overrides = shared.get("overrides") or {}
    unknown = sorted(set(overrides) - set(STEPS))
    if unknown:
        raise RepriseError(
            f"components.overrides names unknown step(s) {unknown}.",
            f"override only {', '.join(STEPS)}.",
        )
    specs = {}
    for step in steps:
        own = {k: v for k, v in (overrides.get(step) or {}).items() if v is not None}
        version = own.get("version", shared.version)
        env_manager = own.get("env_manager", shared.env_manager)
        if env_manager not in ENV_MANAGERS:
            raise RepriseError(
                f"Environment manager '{env_manager}' of step {step} is not known.",
                f"use one of {', '.join(ENV_MANAGERS)}.",
            )
        specs[step] = ComponentSpec(
            name=step,
            repository=str(own.get("repository", shared.repository)),
            version=None if version is None else str(version),
            env_manager=env_manager,
        )
    return specs


@dataclass
class Outputs:
    """Outputs (URI, sha256) of the steps, from this pipeline run or, for a step not selected,
    from its latest finished run in the experiment."""

    experiment_id: str
    client: MlflowClient
    produced: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    # what identifies each output's content: its content digest, else its sha256, else the
    # cache key of the run that made it (a model)
    digests: dict[str, dict[str, str]] = field(default_factory=dict)
    # the (step, output) pairs asked for since the last clear: one step's inputs
    requested: list[tuple[str, str]] = field(default_factory=list)

    def add(self, step: str, run_id: str) -> None:
        tags = self.client.get_run(run_id).data.tags
        self.produced[step] = _outputs_from_tags(tags)
        self.produced[step]["_run_id"] = (run_id, "")
        self.digests[step] = {
            name: tags.get(OUTPUT_CONTENT_TAG.format(name=name))
            or sha
            or tags.get(cache.KEY_TAG, run_id)
            for name, (_, sha) in self.produced[step].items()
        }

    def inputs(self) -> tuple[dict[str, str], set[str]]:
        """Digests of the outputs asked for since the last clear, and their URIs and sha256s."""
        digests = {f"{s}.{n}": self.digests.get(s, {}).get(n, "") for s, n in self.requested}
        references = {v for s, n in self.requested for v in self.produced[s].get(n, ()) if v}
        return digests, references

    def get(self, step: str, name: str, optional: bool = False) -> tuple[str, str]:
        if step not in self.produced:
            self._load_latest(step)
        self.requested.append((step, name))
        found = self.produced[step].get(name)
        if found is None:
            if optional:
                return "", ""
            raise RepriseError(
                f"Step {step} (run {self.produced[step]['_run_id'][0]}) has no output '{name}'.",
                f"run {step} again with the current components.",
            )
        return found

    def params(self, prefix: str, step: str, name: str, optional: bool = False) -> dict[str, str]:
        """``{prefix}_artifact`` and ``{prefix}_sha256`` parameters for output ``name`` of step."""
        uri, sha = self.get(step, name, optional)
        return {f"{prefix}_artifact": uri, f"{prefix}_sha256": sha}

    def _load_latest(self, step: str) -> None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STEP_TAG}` = '{step}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            raise RepriseError(
                f"The selected steps need the outputs of step {step}, which has no finished run "
                f"in experiment {self.experiment_id}.",
                f"add {step} to main.steps (or run the whole pipeline once).",
            )
        log.info("outputs of %s taken from its latest finished run %s", step, runs[0].info.run_id)
        self.add(step, runs[0].info.run_id)


def _outputs_from_tags(tags: dict[str, str]) -> dict[str, tuple[str, str]]:
    prefix = OUTPUT_TAG.format(name="")
    outputs = {}
    for key, value in tags.items():
        if key.startswith(prefix) and not key.endswith((".sha256", ".digest")):
            name = key.removeprefix(prefix)
            outputs[name] = (value, tags.get(OUTPUT_DIGEST_TAG.format(name=name), ""))
    return outputs


def _json(node: Any) -> str:
    return json.dumps(OmegaConf.to_container(node, resolve=True), sort_keys=True)


# Each step's parameters: only its own slice of the config, plus the outputs it consumes.
ParamBuilder = Callable[[DictConfig, Outputs], dict[str, Any]]


def _get_data(cfg: DictConfig, out: Outputs) -> dict[str, Any]:
    return {
        "sample": cfg.etl.sample,
        "reference": cfg.etl.reference or "",
        "timeout": cfg.etl.timeout,
    }


def _basic_cleaning(cfg: DictConfig, out: Outputs) -> dict[str, Any]:
    return {
        **out.params("input", "get_data", "raw_data"),
        "schema": _json(cfg.data),
        "missing_token": cfg.etl.missing_token,
        "ranges": _json(cfg.etl.ranges),
    }


def _data_check(cfg: DictConfig, out: Outputs) -> dict[str, Any]:
    return {
        **out.params("input", "basic_cleaning", "clean_data"),
        **out.params("reference", "get_data", "reference_data", optional=True),
        "schema": _json(cfg.data),
        "checks": _json(cfg.data_check),
        "missing_token": cfg.etl.missing_token,
    }


def _split(cfg: DictConfig, out: Outputs) -> dict[str, Any]:
    out.get("data_check", "data_check_report")  # a split only follows a passed data check
    return {
        **out.params("input", "basic_cleaning", "clean_data"),
        "target": cfg.data.target,
        "val_size": cfg.split.val_size,
        "test_size": cfg.split.test_size,
        "random_seed": cfg.split.random_seed,
    }


def _train_model(cfg: DictConfig, out: Outputs) -> dict[str, Any]:
    return {
        **out.params("train", "train_val_test_split", "train_data"),
        **out.params("val", "train_val_test_split", "val_data"),
        "schema": _json(cfg.data),
        "model_name": cfg.model.name,
        "hyperparameters": json.dumps(
            {k: v for k, v in OmegaConf.to_container(cfg.model).items() if k != "name"},
            sort_keys=True,
        ),
        "evaluation": _json(cfg.evaluation),
    }


def _test_model(cfg: DictConfig, out: Outputs) -> dict[str, Any]:
    return {
        "model": out.get("train_model", "model")[0],
        "baselines": out.get("train_model", "baselines", optional=True)[0],
        **out.params("test", "train_val_test_split", "test_data"),
        "schema": _json(cfg.data),
        "evaluation": _json(cfg.evaluation),
        # a verify reruns with main.register=false: it leaves the registry as it found it
        "registered_model_name": (cfg.main.registered_model_name or "")
        if cfg.main.get("register", True)
        else "",
    }


PARAMS: dict[str, ParamBuilder] = {
    "get_data": _get_data,
    "basic_cleaning": _basic_cleaning,
    "data_check": _data_check,
    "train_val_test_split": _split,
    "train_model": _train_model,
    "test_model": _test_model,
}


# Settings of how a run is made, not of what it makes: a release rerun takes them from its command
# line. Every other setting, and the steps, come from the release's manifest.
RUN_MODE_KEYS = ("main.release", "main.cache", "main.register", "main.wandb")


def release_config(cfg: DictConfig, release: dict[str, Any]) -> DictConfig:
    """The config of a rerun of ``release``: its manifest's, with this run's run-mode settings.
    Other steps or settings than the release's are refused, naming them, never dropped."""
    given = _flatten(without_credentials(OmegaConf.to_container(cfg, resolve=True)))
    recorded = _flatten(release["config"])
    changed = sorted(
        key
        for key in given.keys() | recorded.keys()
        if not _is_run_mode(key) and given.get(key) != recorded.get(key)
    )
    if changed:
        version = release["version"]
        shown = ", ".join(f"{k}={given.get(k, '(absent)')}" for k in changed[:5])
        raise RepriseError(
            f"This checkout is release {version}, which reruns exactly as releases/{version}.yaml "
            f"records it, so it takes no other steps or settings (given: {shown}"
            f"{', ...' if len(changed) > 5 else ''}).",
            "to rerun the release, run without steps and overrides; to experiment on this "
            "checkout, add main.release=off (make run OVERRIDES='main.release=off ...').",
        )
    merged = OmegaConf.create(release["config"])
    for key in RUN_MODE_KEYS:
        if (value := OmegaConf.select(cfg, key)) is not None:
            OmegaConf.update(merged, key, value, force_add=True)
    return merged


def _is_run_mode(key: str) -> bool:
    return any(key == mode or key.startswith(f"{mode}.") for mode in RUN_MODE_KEYS)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} for every leaf of nested mappings."""
    if not isinstance(tree, dict) or not tree:
        return {prefix[:-1]: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= _flatten(value, f"{prefix}{key}.")
    return flat


def check_tracking_uri() -> None:
    """Refuse a relative sqlite URI: each step runs in its own folder and would open another file."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        raise RepriseError(
            f"The MLflow tracking URI {uri} is a relative path, which every step would resolve "
            "in its own folder.",
            "export MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db (an absolute path), or use make run.",
        )


def configure_child_environment(cfg: DictConfig, pipeline_run_id: str) -> None:
    """Environment every step inherits: W&B mode, folder, project and group; bytecode for uv."""
    mode = cfg.main.wandb.mode
    if mode == "auto":
        os.environ.setdefault(
            "WANDB_MODE", "online" if os.environ.get("WANDB_API_KEY") else "offline"
        )
    else:
        os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_DIR", str(paths.state_dir()))
    os.environ["WANDB_PROJECT"] = cfg.main.wandb.project
    os.environ["REPRISE_PIPELINE_RUN_ID"] = pipeline_run_id
    os.environ.setdefault("WANDB_SILENT", "true")
    # Without bytecode an uv environment spends seconds compiling at every import of mlflow.
    os.environ.setdefault("UV_COMPILE_BYTECODE", "1")


@dataclass
class StepResult:
    step: str
    run_id: str
    status: str
    seconds: float
    component: ResolvedComponent
    error: str = ""
    cached_from: str = ""


def run_pipeline(cfg: DictConfig, run_name: str = "", source: str = "") -> list[StepResult]:
    """Check everything that can be checked up front, then run the selected steps in order.

    Every failure is a RepriseError, also recorded on the pipeline run (tag reprise.error).
    """
    check_tracking_uri()
    client = MlflowClient()
    results: list[StepResult] = []
    release = manifest.current_release() if cfg.main.release == "auto" else None
    if release is not None:
        # before any run starts: other steps or settings are refused, not silently dropped
        cfg = release_config(cfg, release)
    # the steps' temporary files go in a folder this process owns, removed when it is gone
    with sweep.pipeline_run(cfg, run_name) as parent, owners.scratch_for_children():
        mlflow.set_tags(owners.this_process().tags())
        if source:  # run in process (not by `mlflow run`): say where it came from
            mlflow.set_tag("mlflow.source.name", source)
        try:
            # a rerun of a release is there to reproduce it: every step runs
            use_cache = bool(cfg.main.cache) and release is None
            if release is not None:
                # A rerun of a release: its config and its components at their recorded commits.
                log.info("rerunning release %s as its manifest pins it", release["version"])
                steps = list(STEPS)
                components = {
                    s: resolve_pinned(
                        s,
                        pin["repository"],
                        pin["tag"],
                        pin["sha"],
                        pin["env_manager"],
                        paths.cache_dir(),
                    )
                    for s, pin in release["components"].items()
                }
                mlflow.set_tag("reprise.release", release["version"])
            else:
                refuse_credentials(OmegaConf.to_container(cfg, resolve=True))
                steps = select_steps(cfg.main.steps)
                specs = component_specs(cfg, steps)
                # Resolve every component before any step runs: a bad tag fails in seconds.
                # Each repository is listed once: its steps agree on what a tag means.
                refs: dict[str, dict[str, str]] = {}
                components = {
                    s: resolve(specs[s], paths.ROOT, paths.cache_dir(), refs) for s in steps
                }
            mlflow.set_tags({"reprise.pipeline": "true", "reprise.steps": ",".join(steps)})
            settings = without_credentials(OmegaConf.to_container(cfg, resolve=True))
            mlflow.log_text(OmegaConf.to_yaml(settings), "config.yaml")
            configure_child_environment(cfg, parent.info.run_id)
            experiment = client.get_experiment(parent.info.experiment_id).name
            store = redact(mlflow.get_tracking_uri())
            log.info("%s", paths.where_runs_go(store, experiment, os.environ["WANDB_MODE"]))
            outputs = Outputs(parent.info.experiment_id, client)
            for step in steps:
                outputs.requested.clear()
                params = PARAMS[step](cfg, outputs)
                key = cache.step_key(step, components[step], params, *outputs.inputs())
                result = _cached_or_run(
                    step, components[step], params, key, use_cache, parent, client
                )
                results.append(result)
                if result.status != "FINISHED":
                    raise StepFailed(
                        f"Step {step} failed (MLflow run {result.run_id}); no later step ran. "
                        f"Its cause: {result.error or 'see the step log above.'}"
                    )
                outputs.add(step, result.run_id)
                _copy_headline(client, result.run_id)
        except RepriseError as err:
            mlflow.set_tag(ERROR_TAG, str(err)[:5000])
            raise
        except (KeyboardInterrupt, owners.Stopped) as stop:
            owners.stop_run(client, parent, stop)
            mlflow.end_run("KILLED")  # else leaving the run's context would end it FAILED
            raise
        finally:
            _fail_running_children(client, parent.info.experiment_id, parent.info.run_id)
            _log_summary(results)
    return results


def _cached_or_run(
    step: str,
    component: ResolvedComponent,
    params: dict[str, Any],
    key: cache.StepKey,
    use_cache: bool,
    parent: Any,
    client: MlflowClient,
) -> StepResult:
    """Reuse a finished run with the same key, or run the step and remember its key."""
    experiment_id = parent.info.experiment_id
    if use_cache and (origin := cache.find(client, experiment_id, key)) is not None:
        run_id = cache.record_hit(client, experiment_id, parent.info.run_id, step, origin, key)
        source = origin.data.tags.get(cache.CACHED_FROM_TAG, origin.info.run_id)
        log.info("step %s: cached from run %s (key %s)", step, source, key.key[:12])
        return StepResult(step, run_id, "FINISHED", 0.0, component, cached_from=source)
    reason = cache.why_not_cached(client, experiment_id, step, key) if use_cache else "cache off"
    log.info("step %s: runs (%s)", step, reason)
    result = _run_step(step, component, params, parent, client)
    if result.status == "FINISHED":
        cache.remember(client, result.run_id, key)
    return result


def _run_step(
    step: str,
    component: ResolvedComponent,
    params: dict[str, Any],
    parent: Any,
    client: MlflowClient,
) -> StepResult:
    where = component.repository + (f"@{component.version}" if component.version else " (local)")
    log.info("step %s: %s (commit %s, env %s)", step, where, component.sha, component.env_manager)
    start = time.monotonic()
    run_id, status = "", "FAILED"
    try:
        submitted = tracking.run_project(
            str(component.path),
            entry_point="main",
            parameters=params,
            experiment_id=parent.info.experiment_id,
            env_manager=component.env_manager,
            run_name=step,
            synchronous=True,
        )
        run_id, status = submitted.run_id, "FINISHED"
    except ExecutionException as err:
        log.error("step %s: %s", step, str(err).splitlines()[0])
        run_id = _latest_child(client, parent, step)
    except Exception as err:  # e.g. the environment could not be made: MLflow leaves it RUNNING
        cause = (
            f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        )
        log.error("step %s could not start: %s", step, cause)
        run_id = _latest_child(client, parent, step)
        if run_id:
            client.set_tag(run_id, ERROR_TAG, f"the step could not start: {cause}"[:5000])
            client.set_terminated(run_id, "FAILED")
    seconds = time.monotonic() - start
    if run_id:
        for key, value in {
            "repository": component.repository,
            "version": component.version or "",
            "sha": component.sha or "",
            "dirty": str(component.dirty).lower(),
            "env_manager": component.env_manager,
            "path": str(component.path),
        }.items():
            client.set_tag(run_id, f"reprise.component.{key}", value)
    mlflow.set_tag(f"reprise.component.{step}.sha", component.sha or "")
    mlflow.log_metric(f"seconds.{step}", seconds)
    error = client.get_run(run_id).data.tags.get(ERROR_TAG, "") if run_id else ""
    return StepResult(step, run_id, status, seconds, component, error)


# Scores shown on the pipeline run itself, copied from its steps, so runs and sweep points compare
# on one page.
HEADLINE = ("roc_auc", "average_precision", "f1", "precision", "recall", "accuracy")


def _copy_headline(client: MlflowClient, run_id: str) -> None:
    metrics = client.get_run(run_id).data.metrics
    keep = {f"{split}.{name}" for split in ("val", "test") for name in HEADLINE} | {"threshold"}
    headline = {k: v for k, v in metrics.items() if k in keep}
    if headline:
        mlflow.log_metrics(headline)


def _latest_child(client: MlflowClient, parent: Any, step: str) -> str:
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' "
        f"and tags.`mlflow.runName` = '{step}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else ""


def _fail_running_children(client: MlflowClient, experiment_id: str, parent_id: str) -> None:
    """MLflow leaves a run RUNNING when its environment cannot be made; end those as FAILED."""
    for run in client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'",
    ):
        log.warning("run %s was left RUNNING by MLflow; marked FAILED", run.info.run_id)
        client.set_terminated(run.info.run_id, "FAILED")


def _log_summary(results: list[StepResult]) -> None:
    for r in results:
        if r.cached_from:
            log.info("%-22s CACHED   from run %s", r.step, r.cached_from)
            continue
        log.info(
            "%-22s %-8s %6.1f s  run %s  commit %s",
            r.step,
            r.status,
            r.seconds,
            r.run_id,
            (r.component.sha or "-")[:12],
        )
