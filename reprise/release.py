"""Releases of the project: cut one (pipeline at its pins, manifest, CHANGELOG, version, tag),
verify a rerun against its manifest, restore it, promote its model, list them."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import yaml

from reprise import api, git, graph, manifest, owners, paths, tracking, versioning
from reprise.components import checkout, require_release_pin, split_subdirectory
from reprise.credentials import redact
from reprise.errors import RepriseError
from reprise.report import Comparison, ReleaseLine, ReleaseListing, Verification
from reprise.serving.reference import PROD_ALIAS
from reprise.tags import (
    COMPONENT_ENV_MANAGER_TAG,
    COMPONENT_PATH_TAG,
    COMPONENT_REPOSITORY_TAG,
    COMPONENT_SHA_TAG,
    COMPONENT_VERSION_TAG,
    OUTPUT_PREFIX,
    REGISTERED_MODEL_TAG,
    STEP_TAG,
)

log = logging.getLogger(__name__)

# Scores a manifest keeps: every validation and test score of the model, and its threshold.
METRIC_PREFIXES = ("val.", "test.")
METRIC_NAMES = ("threshold",)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_pipeline(project_dir: Path, options: str, failed: str, again: str) -> str:
    """Run the whole pipeline project in this environment with Hydra ``options``; the pipeline
    run's id. A failure is one RepriseError: the recorded cause, what ``failed`` means for the
    command, and the cause's fix followed by ``again``."""
    experiment_id = tracking.use_defaults()
    try:
        return api.run_project(
            project_dir, {"steps": "all", "hydra_options": options}, experiment_id
        )
    except api.ProjectRunFailed as err:
        raise RepriseError(
            f"The pipeline failed, {failed}: {err.cause.rstrip('. ')}.",
            f"{err.fix.rstrip('. ')}; then {again}" if err.fix else again,
        ) from None


def observe(run_id: str) -> dict[str, Any]:
    """What a pipeline run produced, as a manifest records it: components, digests, metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = client.get_run(run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'"
    )
    steps = {c.data.tags[STEP_TAG]: c for c in children if STEP_TAG in c.data.tags}
    with tempfile.TemporaryDirectory(prefix="reprise-observe-") as folder:
        config = yaml.safe_load(
            Path(client.download_artifacts(run_id, "config.yaml", folder)).read_text()
        )
    pipeline = _declared(config)
    model_steps = pipeline.model_steps() if pipeline else set(steps)
    components: dict[str, dict[str, str]] = {}
    outputs: dict[str, dict[str, str]] = {}
    environments: dict[str, dict[str, Any]] = {}
    metrics: dict[str, float] = {}
    model: dict[str, Any] = {}
    for step, run in steps.items():
        tags = run.data.tags
        components[step] = {
            "component": Path(tags.get(COMPONENT_PATH_TAG, step)).name,
            "repository": tags.get(COMPONENT_REPOSITORY_TAG, ""),
            "tag": tags.get(COMPONENT_VERSION_TAG, ""),
            "sha": tags.get(COMPONENT_SHA_TAG, ""),
            "env_manager": tags.get(COMPONENT_ENV_MANAGER_TAG, ""),
        }
        lock = Path(tags.get(COMPONENT_PATH_TAG, "")) / "requirements.txt"
        if lock.is_file():
            environments[step] = {
                "sha256": _sha256(lock),
                "requirements": [ln for ln in lock.read_text().splitlines() if ln.strip()],
            }
        for key, value in tags.items():
            if key.startswith(OUTPUT_PREFIX) and key.endswith((".sha256", ".digest")):
                name, kind = key.removeprefix(OUTPUT_PREFIX).rsplit(".", 1)
                outputs.setdefault(f"{step}.{name}", {})[kind] = value
        # the model's own scores by their names; another branch's (a second model) by step
        prefix = "" if step in model_steps else f"{step}."
        metrics |= {
            f"{prefix}{k}": v
            for k, v in run.data.metrics.items()
            if k.startswith(METRIC_PREFIXES) or k in METRIC_NAMES
        }
        if registered := tags.get(REGISTERED_MODEL_TAG):
            name, version = registered.removeprefix("models:/").rsplit("/", 1)
            model = {"name": name, "version": int(version), "uri": registered}
    return {
        "components": components,
        "config": config,
        # what the pipeline reads: the outputs of its steps that take no input
        "data": {
            name: digests
            for name, digests in outputs.items()
            if pipeline and name.partition(".")[0] in pipeline.sources()
        },
        "outputs": dict(sorted(outputs.items())),
        "environments": environments,
        "metrics": dict(sorted(metrics.items())),
        "mlflow": {
            "tracking_uri": manifest.tracking_record(mlflow.get_tracking_uri()),
            "experiment_id": parent.info.experiment_id,
            "run_id": run_id,
            "model": model,
        },
    }


def _declared(config: dict[str, Any]) -> graph.Pipeline | None:
    """The pipeline a run's recorded config declares; None for a run from before declarations."""
    if not (config.get("pipeline") or {}).get("steps"):
        return None
    from omegaconf import OmegaConf

    return graph.declared(OmegaConf.create(config))


def cut(part: str) -> None:
    """Cut a release: refuse unless everything is pinned and committed, run the pipeline at the
    pins (gate included), write the manifest, date the CHANGELOG, bump, commit, tag. Atomic."""
    started = time.monotonic()
    root = paths.ROOT
    config_file = root / manifest.BUMPVERSION_CFG
    versioning.require_clean(root)
    versioning.require_unreleased_entries(root / "CHANGELOG.md")
    versioning.require_current_lock(root)
    version = versioning.next_version(config_file, part)
    tag = versioning.tag_name(config_file, version)
    if git.run("tag", "--list", tag, cwd=root):
        raise RepriseError(f"Tag {tag} exists already.", "bump another part, or delete the tag.")
    cfg = graph.project_config(root)
    from reprise.pipeline import component_specs

    pipeline = graph.declared(cfg)
    for spec in component_specs(cfg, pipeline, pipeline.names).values():
        require_release_pin(spec)
    commit = git.run("rev-parse", "HEAD", cwd=root)
    log.info("release %s: running the pipeline at commit %s and its pins", version, commit[:12])
    run_id = _run_pipeline(
        paths.PROJECT_DIR,
        # a release proves the whole pipeline runs: nothing is taken from the step cache
        "main.cache=false",
        "so nothing was released",
        "release again (the tree, the CHANGELOG and the tags are unchanged).",
    )
    observed = observe(run_id)
    if not observed["mlflow"]["model"]:
        raise RepriseError(
            "The pipeline registered no model (main.registered_model_name is empty).",
            "name the registered model in project/config/config.yaml.",
        )
    record = {
        "version": version,
        "date": dt.date.today().isoformat(),
        "project": {
            "commit": commit,
            "repository": redact(
                git.run("config", "--get", "remote.origin.url", cwd=root)
                if _has_origin(root)
                else ""
            ),
        },
        **observed,
    }
    path = manifest.manifest_path(version, root)
    with versioning.atomic(root, tag):
        versioning.date_changelog(root / "CHANGELOG.md", version, dt.date.today())
        # every file .bumpversion.cfg names, uv.lock included: the tag's lock stays consistent
        bumped = versioning.bump(config_file, part)
        versioning.require_current_lock(root)
        record["environments"]["project"] = {"uv.lock sha256": _sha256(root / "uv.lock")}
        manifest.dump(record, path)
        release_commit = versioning.commit_and_tag(
            root,
            [str(path.relative_to(root)), "CHANGELOG.md", manifest.BUMPVERSION_CFG, *bumped],
            version,
            tag,
            f"Release {version}",
        )
    log.info(
        "release %s: tag %s on commit %s, manifest %s, model %s version %s (%.0f s). "
        "Publish it with: git push --follow-tags",
        version,
        tag,
        release_commit[:12],
        path.relative_to(root),
        record["mlflow"]["model"]["name"],
        record["mlflow"]["model"]["version"],
        time.monotonic() - started,
    )


def _has_origin(root: Path) -> bool:
    return "origin" in git.run("remote", cwd=root).split()


def rerun(version: str) -> str:
    """Rerun release ``version`` from a clean clone of this repository at its tag, registering
    nothing: the registry is left as it was found."""
    root = paths.ROOT
    workdir = owners.make_scratch()  # owned: after a kill -9, doctor removes it
    try:
        clone = workdir / "repo"
        git.run("clone", "--quiet", "--no-checkout", str(root), str(clone), cwd=root)
        git.run("checkout", "--quiet", "--detach", manifest.release_tag(version), cwd=clone)
        return _run_pipeline(
            clone / "project",
            "main.cache=false ++main.register=false",
            f"so release {version} was not verified",
            "verify again (the rerun registered no model and moved no alias).",
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# Scores of the model that was prod when a run ran: a fact of that store at that time, not of the
# release, so a verify shows them but does not compare them.
UNCOMPARED_METRICS = ("test.prod.",)


def compare(record: dict[str, Any], observed: dict[str, Any]) -> list[Comparison]:
    """Expected against actual for every commit, digest and metric of the manifest."""
    rows = []
    for step, pin in record["components"].items():
        got = observed["components"].get(step, {}).get("sha", "")
        rows.append(Comparison(f"commit {step}", pin["sha"], got, pin["sha"] == got))
    for name, digests in record["outputs"].items():
        for kind, expected in digests.items():
            got = observed["outputs"].get(name, {}).get(kind, "")
            rows.append(Comparison(f"{kind} {name}", expected, got, expected == got))
    for name, expected in record["metrics"].items():
        if not name.startswith(UNCOMPARED_METRICS):
            got = observed["metrics"].get(name)
            rows.append(Comparison(f"metric {name}", repr(expected), repr(got), expected == got))
    return rows


def verify(version: str, run_id: str = "") -> Verification:
    """Rerun release ``version`` (or take pipeline run ``run_id``) and compare it with the
    manifest, digest by digest and metric by metric. The rerun registers no model and moves no
    alias."""
    record = manifest.load(version)
    started = time.monotonic()
    tracking.use_defaults()
    name = record["mlflow"]["model"].get("name", "")
    if run_id:
        registry = None
    else:
        registry = _registry_state(name)
        run_id = rerun(version)
    rows = compare(record, observe(run_id))
    return Verification(
        version=version,
        run_id=run_id,
        seconds=time.monotonic() - started,
        rows=rows,
        model_name=name,
        registry_unchanged=None if registry is None else _registry_state(name) == registry,
    )


def _registry_state(name: str) -> tuple[list[str], dict[str, str]]:
    """The versions of registered model ``name`` and its aliases (empty when it is not there)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        aliases = dict(client.get_registered_model(name).aliases or {})
    except MlflowException:
        return [], {}
    versions = sorted(v.version for v in client.search_model_versions(f"name = '{name}'"))
    return versions, aliases


def restore(version: str, dest: str) -> None:
    """A working copy of the project at release ``version`` in ``dest``, and beside it each
    component repository at its pinned commit."""
    root = paths.ROOT
    record = manifest.load(version, root)
    target = Path(dest).resolve()
    if target.exists() and any(target.iterdir()):
        raise RepriseError(f"{target} is not empty.", "name an empty or absent folder.")
    target.mkdir(parents=True, exist_ok=True)
    project = target / "project-repo"
    git.run("clone", "--quiet", str(root), str(project), cwd=root)
    git.run(
        "checkout",
        "--quiet",
        "-B",
        f"release-{version}",
        manifest.release_tag(version),
        cwd=project,
    )
    lines = [f"# Release {version}", "", f"- project: `project-repo/` at tag {version}"]
    seen: dict[tuple[str, str], Path] = {}
    for step, pin in record["components"].items():
        base, subdir = split_subdirectory(pin["repository"])
        key = (base, pin["sha"])
        if key not in seen:
            seen[key] = checkout(base, pin["tag"], pin["sha"], target / "components" / pin["sha"])
        folder = (seen[key] / subdir / step).relative_to(target)
        lines.append(f"- {step}: `{folder}/` = {pin['repository']} at {pin['tag']} ({pin['sha']})")
    (target / "RELEASE.md").write_text("\n".join(lines) + "\n")
    log.info("release %s restored in %s (see its RELEASE.md)", version, target)


def promote(version: str) -> None:
    """Alias the model version of release ``version`` prod; promoting an older one rolls back.
    The version aliased must come from the release (manifest.registered_version)."""
    from mlflow.tracking import MlflowClient

    record = manifest.load(version)
    model = record["mlflow"]["model"]
    tracking.use_defaults()
    client = MlflowClient()
    chosen = manifest.registered_version(client, record)
    client.set_registered_model_alias(model["name"], PROD_ALIAS, chosen)
    log.info("%s@%s is now version %s (release %s)", model["name"], PROD_ALIAS, chosen, version)
    _compile_for_serving(version)


def _compile_for_serving(version: str) -> None:
    """Load (and so compile into the cache folder) the release's model now, so the first
    `make predict` or `make serve` of it starts in a second. A model that cannot be compiled is
    served by scikit-learn's path; that is no reason to fail the promotion."""
    from reprise.serving import model as served_model
    from reprise.serving.reference import resolve

    try:
        served = served_model.load(*resolve(release=version))
    except RepriseError as err:
        log.warning("the model of release %s was not compiled for serving: %s", version, err)
        return
    if served.scorer is not None and served.scorer.trees is not None:
        log.info("model of release %s compiled for serving (trees as arrays)", version)
    else:
        log.info("model of release %s is served by scikit-learn (only trees compile)", version)


def list_releases(remote: bool = False) -> ReleaseListing:
    """One line per release tag the repository knows (with ``remote``, the origin's too), each
    read from its tag: version, date, key metrics, model version, which is prod, and where."""
    root = paths.ROOT
    local = manifest.known_releases(root)
    origin = {}
    if remote:
        manifest.fetch_origin_tags(root)
        origin = manifest.known_releases(root, manifest.ORIGIN_TAGS)
    versions = sorted(local.keys() | origin.keys(), key=manifest.semver)
    if not versions:
        return ReleaseListing([], [], remote, origin_only=False)
    prod = _prod_versions()
    # the scores the project wants to compare releases by (main.release_metrics)
    shown = [str(name) for name in graph.project_config(root).main.get("release_metrics") or []]
    lines = []
    for version in versions:
        record = manifest.read_manifest(local.get(version) or origin[version], version, root)
        model = record["mlflow"]["model"]
        lines.append(
            ReleaseLine(
                version=str(record["version"]),
                date=str(record["date"]),
                metrics=record.get("metrics", {}),
                model_name=model["name"],
                model_version=str(model["version"]),
                is_prod=prod.get(model["name"]) == str(model["version"]),
                where=_where(root, local.get(version), origin.get(version)) if remote else "",
            )
        )
    return ReleaseListing(shown, lines, remote, origin_only=bool(origin.keys() - local.keys()))


def _where(root: Path, local: str | None, origin: str | None) -> str:
    """local, origin, both, or "MOVED on origin" when the two tags name different commits."""
    if not (local and origin):
        return "local" if local else "origin"
    here, there = (git.run("rev-parse", f"{ref}^{{commit}}", cwd=root) for ref in (local, origin))
    return "local, origin" if here == there else "MOVED on origin"


def _prod_versions() -> dict[str, str]:
    """Registered model name -> version aliased prod, in the current tracking store."""
    from mlflow.tracking import MlflowClient

    tracking.use_defaults()
    found = {}
    try:
        for model in MlflowClient().search_registered_models():
            if PROD_ALIAS in (model.aliases or {}):
                found[model.name] = str(model.aliases[PROD_ALIAS])
    except Exception as err:  # a listing must not fail for want of a store
        log.warning("cannot read the model registry: %s", err)
    return found
