"""The step cache: a step whose key matches a finished run is not run again; its outputs are
reused and a run records where they came from.

Key of a step = its code (the commit of a component fetched at a version; the content of the
files of a local folder) + its path + entry point + its parameters (artifact references left
out) + the digests of its inputs + the digest of its environment.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from reprise.components import ResolvedComponent
from reprise.tags import CACHE_KEY_TAG as KEY_TAG
from reprise.tags import CACHE_PARTS_TAG as PARTS_TAG
from reprise.tags import CACHED_FROM_TAG, COMPONENT_PREFIX, OUTPUT_PREFIX, STEP_TAG

log = logging.getLogger(__name__)

ENTRY_POINT = "main"
# Files of a component folder that do not change what it computes.
IGNORED = {"__pycache__", "tests", ".pytest_cache"}


@dataclass(frozen=True)
class StepKey:
    key: str
    parts: dict[str, Any]


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _files_digest(folder: Path) -> str:
    """sha256 over every file a component folder runs (links followed, so step_kit counts)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if IGNORED & set(relative.parts) or not path.is_file():
            continue
        digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def _this_environment() -> str:
    """Digest of the packages installed in this interpreter (for env_manager local)."""
    # only the interpreter's site-packages (the working folder may hold a stray *.egg-info); an
    # installed distribution's folder is named <name>-<version>.dist-info: the names say it all,
    # without reading a hundred metadata files
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    packages = sorted(
        entry.name
        for path in paths
        if os.path.isdir(path)
        for entry in os.scandir(path)
        if entry.name.endswith((".dist-info", ".egg-info"))
    )
    return _hash(packages)


def code_digest(component: ResolvedComponent) -> str:
    if component.version and component.sha and not component.dirty:
        return f"commit:{component.sha}"
    return f"files:{_files_digest(component.path)}"


def environment_digest(component: ResolvedComponent) -> str:
    if component.env_manager == "local":
        return f"local:{_this_environment()}"
    lock = component.path / "requirements.txt"
    env_file = component.path / "python_env.yaml"
    texts = [p.read_text() if p.is_file() else "" for p in (lock, env_file)]
    return f"{component.env_manager}:{_hash(texts)}"


def step_key(
    step: str,
    component: ResolvedComponent,
    params: dict[str, Any],
    inputs: dict[str, str],
    references: set[str],
) -> StepKey:
    """The cache key of one step; ``references`` are parameter values that name artifacts
    (their digests are in ``inputs`` instead)."""
    parts = {
        "code": code_digest(component),
        "path": f"{component.path.parent.name}/{component.path.name}",
        "entry_point": ENTRY_POINT,
        # long values (JSON config slices) by digest: the parts must fit in a run tag
        "parameters": {
            k: v if len(str(v)) <= 200 else f"sha256:{_hash(v)}"
            for k, v in params.items()
            if str(v) not in references
        },
        "inputs": inputs,
        "environment": environment_digest(component),
    }
    return StepKey(_hash({"step": step, **parts}), parts)


def find(client: MlflowClient, experiment_id: str, key: StepKey) -> Any | None:
    """The latest FINISHED run with this key, or None. Failed, killed and running runs never count."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{KEY_TAG}` = '{key.key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def why_not_cached(client: MlflowClient, experiment_id: str, step: str, key: StepKey) -> str:
    """Which parts of the key differ from the step's latest finished run."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`reprise.step` = '{step}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs or PARTS_TAG not in runs[0].data.tags:
        return "no earlier finished run"
    before = json.loads(runs[0].data.tags[PARTS_TAG])
    changed = [name for name in key.parts if before.get(name) != key.parts[name]]
    if "parameters" in changed:
        old, new = before.get("parameters", {}), key.parts["parameters"]
        names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        changed[changed.index("parameters")] = f"parameters ({', '.join(names)})"
    return f"changed since run {runs[0].info.run_id}: {', '.join(changed) or 'nothing'}"


def record_hit(
    client: MlflowClient, experiment_id: str, parent_id: str, step: str, origin: Any, key: StepKey
) -> str:
    """A FINISHED child run that stands for ``origin``: its outputs, metrics and lineage."""
    source = origin.data.tags.get(CACHED_FROM_TAG, origin.info.run_id)
    tags = {
        k: v
        for k, v in origin.data.tags.items()
        if k.startswith((OUTPUT_PREFIX, COMPONENT_PREFIX)) or k == STEP_TAG
    }
    tags |= {
        "mlflow.parentRunId": parent_id,
        "mlflow.runName": step,
        CACHED_FROM_TAG: source,
        KEY_TAG: key.key,
        PARTS_TAG: json.dumps(key.parts, sort_keys=True),
        "mlflow.note.content": f"cached from run {source}",
    }
    run = client.create_run(experiment_id, tags=tags, run_name=step)
    metrics = [Metric(k, v, 0, 0) for k, v in origin.data.metrics.items()]
    client.log_batch(run.info.run_id, metrics=metrics, tags=[RunTag(CACHED_FROM_TAG, source)])
    client.set_terminated(run.info.run_id, "FINISHED")
    return str(run.info.run_id)


def remember(client: MlflowClient, run_id: str, key: StepKey) -> None:
    """Put the key on a run that finished, so later runs can reuse it."""
    client.set_tag(run_id, KEY_TAG, key.key)
    client.set_tag(run_id, PARTS_TAG, json.dumps(key.parts, sort_keys=True))
