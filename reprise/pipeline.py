"""The orchestrator: one parent MLflow run, one child run per step, artifact URIs and digests
passed from step to step."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import mlflow
from mlflow.projects import ExecutionException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from reprise import cache, graph, manifest, owners, paths, sweep, tracking
from reprise.components import ComponentSpec, ResolvedComponent, resolve, resolve_pinned
from reprise.credentials import redact, refuse_credentials, without_credentials
from reprise.errors import RepriseError
from reprise.plain_config import plain_dict
from reprise.tags import (
    CACHE_KEY_TAG,
    CACHED_FROM_TAG,
    COMPONENT_TAG,
    ERROR_TAG,
    OUTPUT_CONTENT_TAG,
    OUTPUT_DIGEST_TAG,
    OUTPUT_PREFIX,
    PIPELINE_TAG,
    RELEASE_TAG,
    STEP_TAG,
    STEPS_TAG,
)

log = logging.getLogger(__name__)

ENV_MANAGERS = ("auto", "local", "uv", "virtualenv")


class StepFailed(RepriseError):
    """A step of the pipeline failed (as opposed to the pipeline's own configuration)."""


def component_specs(
    cfg: DictConfig, pipeline: graph.Pipeline, steps: list[str]
) -> dict[str, ComponentSpec]:
    """Repository, version and environment manager of each step's component: the shared values,
    except where ``components.overrides.<step>`` sets its own (null inherits)."""
    shared = cfg.components
    overrides = shared.get("overrides") or {}
    unknown = sorted(set(overrides) - set(pipeline.names))
    if unknown:
        raise RepriseError(
            f"components.overrides names step(s) {unknown} that the pipeline does not declare.",
            f"override only {', '.join(pipeline.names)}.",
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
            name=pipeline.steps[step].component,
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

    def add(self, step: str, run_id: str) -> None:
        tags = self.client.get_run(run_id).data.tags
        self.produced[step] = _outputs_from_tags(tags)
        self.produced[step][RUN_ID] = (run_id, "")
        self.digests[step] = {
            name: tags.get(OUTPUT_CONTENT_TAG.format(name=name))
            or sha
            or tags.get(CACHE_KEY_TAG, run_id)
            for name, (_, sha) in self.produced[step].items()
        }

    def of(self, step: graph.Step) -> tuple[dict[str, Any], dict[str, str], set[str]]:
        """What ``step`` takes from the others: its input parameters, the digests of those
        inputs and of the runs it follows (its cache key's inputs), and the URIs among them."""
        params: dict[str, Any] = {}
        digests: dict[str, str] = {}
        references: set[str] = set()
        for given in step.inputs:
            uri, sha = self._get(given.step, given.output, given.optional)
            params |= given.parameters(uri, sha)
            digests[given.reference] = self.digests.get(given.step, {}).get(given.output, "")
            references |= {v for v in (uri, sha) if v}
        for other in step.after:  # followed, not read: the run's identity is its cache key
            self._get(other, RUN_ID)
            digests[f"{other}.{RUN_ID}"] = self.digests[other][RUN_ID]
        return params, digests, references

    def _get(self, step: str, name: str, optional: bool = False) -> tuple[str, str]:
        if step not in self.produced:
            self.load_latest(step)
        found = self.produced[step].get(name)
        if found is None:
            if optional:
                return "", ""
            raise RepriseError(
                f"Step {step} (run {self.produced[step][RUN_ID][0]}) has no output '{name}'.",
                f"run {step} again with the current components.",
            )
        return found

    def load_latest(self, step: str) -> None:
        """The outputs of ``step``'s latest finished run in the experiment."""
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


# The pseudo-output naming the run that made a step's outputs.
RUN_ID = "_run_id"


def _outputs_from_tags(tags: dict[str, str]) -> dict[str, tuple[str, str]]:
    outputs = {}
    for key, value in tags.items():
        if key.startswith(OUTPUT_PREFIX) and not key.endswith((".sha256", ".digest")):
            name = key.removeprefix(OUTPUT_PREFIX)
            outputs[name] = (value, tags.get(OUTPUT_DIGEST_TAG.format(name=name), ""))
    return outputs


def step_parameters(
    cfg: DictConfig, pipeline: graph.Pipeline, step: graph.Step, outputs: Outputs
) -> tuple[dict[str, Any], dict[str, str], set[str]]:
    """A step's parameters (declared values, then its inputs; the model-registering step also
    gets the registered model's name, empty when main.register is false), the digests of its
    inputs, and which parameter values are references to artifacts."""
    params, digests, references = outputs.of(step)
    params = {**step.parameter_values(), **params}
    if step.name == pipeline.registered_by:
        name = (cfg.main.registered_model_name or "") if cfg.main.get("register", True) else ""
        params[graph.REGISTERED_MODEL_PARAMETER] = name
    return params, digests, references


# Settings of how a run is made, not of what it makes: a release rerun takes them from its command
# line. Every other setting, and the steps, come from the release's manifest.
RUN_MODE_KEYS = ("main.release", "main.cache", "main.register", "main.jobs", "main.wandb")


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
    merged: DictConfig = OmegaConf.create(release["config"])
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
    # a wrong declaration, step selection or job count is refused before any run starts
    jobs = _jobs(cfg.main.get("jobs", 1))
    pipeline = graph.declared(cfg)
    steps = pipeline.names if release is not None else pipeline.select(cfg.main.steps)
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
                components = {
                    s: resolve_pinned(
                        s,
                        pin["repository"],
                        pin["tag"],
                        pin["sha"],
                        pin["env_manager"],
                        paths.cache_dir(),
                        pin.get("component", s),
                    )
                    for s, pin in release["components"].items()
                }
                mlflow.set_tag(RELEASE_TAG, release["version"])
            else:
                # the declaration's ${...} repeat other settings: name the setting a user wrote
                given = plain_dict(cfg, "the config")
                declaration = given.pop("pipeline", None)
                refuse_credentials(given)
                refuse_credentials({"pipeline": declaration})
                specs = component_specs(cfg, pipeline, steps)
                # Resolve every component before any step runs: a bad tag fails in seconds.
                # Each repository is listed once: its steps agree on what a tag means.
                refs: dict[str, dict[str, str]] = {}
                components = {
                    s: resolve(specs[s], paths.ROOT, paths.cache_dir(), refs) for s in steps
                }
            for s in steps:  # a missing or unknown parameter fails now, not after an hour
                graph.check_parameters(
                    pipeline.steps[s],
                    components[s].path / "MLproject",
                    pipeline.steps[s].parameter_names(s == pipeline.registered_by),
                )
            mlflow.set_tags({PIPELINE_TAG: "true", STEPS_TAG: ",".join(steps)})
            settings = without_credentials(OmegaConf.to_container(cfg, resolve=True))
            mlflow.log_text(OmegaConf.to_yaml(settings), "config.yaml")
            configure_child_environment(cfg, parent.info.run_id)
            experiment = client.get_experiment(parent.info.experiment_id).name
            store = redact(mlflow.get_tracking_uri())
            log.info("%s", paths.where_runs_go(store, experiment, os.environ["WANDB_MODE"]))
            outputs = Outputs(parent.info.experiment_id, client)
            for other in pipeline.needed_from_earlier_runs(steps):
                outputs.load_latest(other)  # before any step runs: a missing one fails now
            for wave in pipeline.waves(steps) if jobs > 1 else [[s] for s in steps]:
                planned = [
                    _plan(cfg, pipeline, pipeline.steps[s], components[s], outputs) for s in wave
                ]
                for result in _run_wave(planned, use_cache, parent, client, jobs):
                    results.append(result)
                    if result.status == "FINISHED":
                        outputs.add(result.step, result.run_id)
                        if result.step in pipeline.model_steps():  # not a second branch's
                            _copy_headline(client, result.run_id)
                failed = [r for r in results if r.status != "FINISHED"]
                if failed:
                    first = failed[0]
                    raise StepFailed(
                        f"Step {first.step} failed (MLflow run {first.run_id}); no later step ran. "
                        f"Its cause: {first.error or 'see the step log above.'}"
                    )
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


def _jobs(value: Any) -> int:
    """main.jobs as a count of steps at once: a whole number from 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RepriseError(
            f"main.jobs is {str(value)[:50]!r}, not a count of steps to run at once.",
            "give a whole number from 1 (1: one step after another).",
        )
    return value


@dataclass
class Planned:
    """A step ready to run: its component, parameters and cache key."""

    step: graph.Step
    component: ResolvedComponent
    params: dict[str, Any]
    key: cache.StepKey


def _plan(
    cfg: DictConfig,
    pipeline: graph.Pipeline,
    step: graph.Step,
    component: ResolvedComponent,
    outputs: Outputs,
) -> Planned:
    params, digests, references = step_parameters(cfg, pipeline, step, outputs)
    return Planned(
        step, component, params, cache.step_key(step.name, component, params, digests, references)
    )


def _run_wave(
    planned: list[Planned], use_cache: bool, parent: Any, client: MlflowClient, jobs: int
) -> list[StepResult]:
    """Run (or take from the cache) the steps of one wave; with ``jobs`` > 1 at the same time.
    Each child run is made here, in the pipeline run's thread, so it is that run's child."""
    experiment_id = parent.info.experiment_id
    results: dict[str, StepResult] = {}
    to_run = []
    for plan in planned:
        name = plan.step.name
        if use_cache and (origin := cache.find(client, experiment_id, plan.key)) is not None:
            run_id = cache.record_hit(
                client, experiment_id, parent.info.run_id, name, origin, plan.key
            )
            source = origin.data.tags.get(CACHED_FROM_TAG, origin.info.run_id)
            log.info("step %s: cached from run %s (key %s)", name, source, plan.key.key[:12])
            results[name] = StepResult(
                name, run_id, "FINISHED", 0.0, plan.component, cached_from=source
            )
            continue
        reason = (
            cache.why_not_cached(client, experiment_id, name, plan.key)
            if use_cache
            else "cache off"
        )
        log.info("step %s: runs (%s)", name, reason)
        to_run.append((plan, _child_run(plan, experiment_id)))
    if len(to_run) > 1 and jobs > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(jobs, len(to_run))) as pool:
            done = list(pool.map(lambda job: _run_step(job[0], job[1], parent, client), to_run))
    else:
        done = [_run_step(plan, run_id, parent, client) for plan, run_id in to_run]
    for (plan, _), result in zip(to_run, done, strict=True):
        if result.status == "FINISHED":
            cache.remember(client, result.run_id, plan.key)
        results[plan.step.name] = result
    return [results[p.step.name] for p in planned]


def _child_run(plan: Planned, experiment_id: str) -> str:
    """Make the step's run as `mlflow run` would (source, entry point, parameters), a child of
    the active pipeline run, tagged with the step's declared name."""
    from mlflow.projects.utils import _create_run

    path = str(plan.component.path)
    run = _create_run(path, experiment_id, path, None, plan.step.entry_point, plan.params)
    MlflowClient().set_tag(run.info.run_id, "mlflow.runName", plan.step.name)
    MlflowClient().set_tag(run.info.run_id, STEP_TAG, plan.step.name)
    return str(run.info.run_id)


def _run_step(plan: Planned, run_id: str, parent: Any, client: MlflowClient) -> StepResult:
    from mlflow.projects.utils import MLFLOW_LOCAL_BACKEND_RUN_ID_CONFIG

    step, component = plan.step.name, plan.component
    where = component.repository + (f"@{component.version}" if component.version else " (local)")
    log.info("step %s: %s (commit %s, env %s)", step, where, component.sha, component.env_manager)
    start = time.monotonic()
    status = "FAILED"
    try:
        tracking.run_project(
            str(component.path),
            entry_point=plan.step.entry_point,
            parameters=plan.params,
            experiment_id=parent.info.experiment_id,
            env_manager=component.env_manager,
            backend_config={MLFLOW_LOCAL_BACKEND_RUN_ID_CONFIG: run_id},
            synchronous=True,
        )
        status = "FINISHED"
    except ExecutionException as err:
        log.error("step %s: %s", step, str(err).splitlines()[0])
    except Exception as err:  # e.g. the environment could not be made: MLflow leaves it RUNNING
        cause = (
            f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        )
        log.error("step %s could not start: %s", step, cause)
        client.set_tag(run_id, ERROR_TAG, f"the step could not start: {cause}"[:5000])
        client.set_terminated(run_id, "FAILED")
    seconds = time.monotonic() - start
    for key, value in {
        "repository": component.repository,
        "version": component.version or "",
        "sha": component.sha or "",
        "dirty": str(component.dirty).lower(),
        "env_manager": component.env_manager,
        "path": str(component.path),
    }.items():
        client.set_tag(run_id, COMPONENT_TAG.format(key=key), value)
    # the step's declared name, whatever the component calls itself (one component may serve
    # several steps)
    client.set_tag(run_id, STEP_TAG, step)
    client.set_tag(parent.info.run_id, COMPONENT_TAG.format(key=f"{step}.sha"), component.sha or "")
    client.log_metric(parent.info.run_id, f"seconds.{step}", seconds)
    error = client.get_run(run_id).data.tags.get(ERROR_TAG, "")
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
