"""Releases of the project: cut one (pipeline at its pins, manifest, CHANGELOG, version, tag),
verify a rerun against its manifest, restore it, promote its model, list them."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import yaml

from reprise import manifest, owners, paths, tracking, versioning
from reprise.cli import write_line
from reprise.components import checkout, redact, require_release_pin, split_subdirectory
from reprise.errors import RepriseError
from reprise.pipeline import STEP_TAG
from reprise.serving.model import PROD_ALIAS

log = logging.getLogger(__name__)

# Scores a manifest keeps: every validation and test score of the model, and its threshold.
METRIC_PREFIXES = ("val.", "test.")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compose_config(root: Path) -> Any:
    """The project's config as committed (no overrides), composed by Hydra."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(root / "project" / "config"), version_base="1.3"):
        return compose(config_name="config")


def _run_pipeline(project_dir: Path) -> str:
    """Run the pipeline project in this environment; the pipeline run's id, or a RepriseError."""
    from mlflow.projects import ExecutionException

    experiment_id = tracking.use_defaults()
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    try:
        submitted = tracking.run_project(
            str(project_dir),
            entry_point="main",
            # a release proves the whole pipeline runs: nothing is taken from the step cache
            parameters={"steps": "all", "hydra_options": "main.cache=false"},
            experiment_id=experiment_id,
            env_manager="local",
            run_name="pipeline",
        )
    except ExecutionException as err:
        from mlflow.tracking import MlflowClient

        run_id = str(err).split("'")[1] if "'" in str(err) else ""
        cause = MlflowClient().get_run(run_id).data.tags.get("reprise.error") if run_id else None
        raise RepriseError(
            f"The pipeline failed, so nothing was released: {cause or err}",
            "fix the cause and release again; the tree, the CHANGELOG and the tags are unchanged.",
        ) from None
    return submitted.run_id


def observe(run_id: str) -> dict[str, Any]:
    """What a pipeline run produced, as a manifest records it: components, digests, metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = client.get_run(run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'"
    )
    steps = {c.data.tags[STEP_TAG]: c for c in children if STEP_TAG in c.data.tags}
    components, outputs, environments, metrics = {}, {}, {}, {}
    model: dict[str, Any] = {}
    for step, run in steps.items():
        tags = run.data.tags
        components[step] = {
            "repository": tags.get("reprise.component.repository", ""),
            "tag": tags.get("reprise.component.version", ""),
            "sha": tags.get("reprise.component.sha", ""),
            "env_manager": tags.get("reprise.component.env_manager", ""),
        }
        lock = Path(tags.get("reprise.component.path", "")) / "requirements.txt"
        if lock.is_file():
            environments[step] = {
                "sha256": _sha256(lock),
                "requirements": [ln for ln in lock.read_text().splitlines() if ln.strip()],
            }
        for key, value in tags.items():
            if key.startswith("reprise.output.") and key.endswith((".sha256", ".digest")):
                name, kind = key.removeprefix("reprise.output.").rsplit(".", 1)
                outputs.setdefault(f"{step}.{name}", {})[kind] = value
        metrics |= {k: v for k, v in run.data.metrics.items() if k.startswith(METRIC_PREFIXES)}
        if step == "train_model":
            metrics["threshold"] = run.data.metrics.get("threshold")
        if registered := tags.get("reprise.output.registered_model"):
            name, version = registered.removeprefix("models:/").rsplit("/", 1)
            model = {"name": name, "version": int(version), "uri": registered}
    with tempfile.TemporaryDirectory(prefix="reprise-observe-") as folder:
        config = yaml.safe_load(
            Path(client.download_artifacts(run_id, "config.yaml", folder)).read_text()
        )
    return {
        "components": components,
        "config": config,
        "data": {"input": outputs.get("get_data.raw_data", {})},
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


def cut(part: str) -> None:
    """Cut a release: refuse unless everything is pinned and committed, run the pipeline at the
    pins (gate included), write the manifest, date the CHANGELOG, bump, commit, tag. Atomic."""
    started = time.monotonic()
    root = paths.ROOT
    config_file = root / manifest.BUMPVERSION_CFG
    versioning.require_clean(root)
    versioning.require_unreleased_entries(root / "CHANGELOG.md")
    version = versioning.next_version(config_file, part)
    tag = versioning.tag_name(config_file, version)
    if versioning.git(root, "tag", "--list", tag):
        raise RepriseError(f"Tag {tag} exists already.", "bump another part, or delete the tag.")
    cfg = compose_config(root)
    from reprise.pipeline import STEPS, component_specs

    for spec in component_specs(cfg, list(STEPS)).values():
        require_release_pin(spec)
    commit = versioning.git(root, "rev-parse", "HEAD")
    log.info("release %s: running the pipeline at commit %s and its pins", version, commit[:12])
    run_id = _run_pipeline(paths.PROJECT_DIR)
    observed = observe(run_id)
    if not observed["mlflow"]["model"]:
        raise RepriseError(
            "The pipeline registered no model (main.registered_model_name is empty).",
            "name the registered model in project/config/config.yaml.",
        )
    lock = root / "uv.lock"
    observed["environments"]["project"] = {"uv.lock sha256": _sha256(lock)}
    record = {
        "version": version,
        "date": dt.date.today().isoformat(),
        "project": {
            "commit": commit,
            "repository": redact(
                versioning.git(root, "config", "--get", "remote.origin.url")
                if _has_origin(root)
                else ""
            ),
        },
        **observed,
    }
    path = manifest.manifest_path(version, root)
    with versioning.atomic(root, tag):
        manifest.dump(record, path)
        versioning.date_changelog(root / "CHANGELOG.md", version, dt.date.today())
        versioning.bump(config_file, part)
        release_commit = versioning.commit_and_tag(
            root,
            [str(path.relative_to(root)), "CHANGELOG.md", ".bumpversion.cfg", "pyproject.toml"],
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
    return "origin" in versioning.git(root, "remote").split()


def rerun(version: str) -> str:
    """Rerun release ``version`` from a clean clone of this repository at its tag."""
    root = paths.ROOT
    record = manifest.load(version, root)
    workdir = owners.make_scratch()  # owned: after a kill -9, doctor removes it
    try:
        clone = workdir / "repo"
        versioning.git(root, "clone", "--quiet", "--no-checkout", str(root), str(clone))
        versioning.git(clone, "checkout", "--quiet", "--detach", record["version"])
        return _run_pipeline(clone / "project")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def compare(record: dict[str, Any], observed: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(what, expected, actual, same) for every commit, digest and metric of the manifest."""
    rows = []
    for step, pin in record["components"].items():
        got = observed["components"].get(step, {}).get("sha", "")
        rows.append((f"commit {step}", pin["sha"], got, pin["sha"] == got))
    for name, digests in record["outputs"].items():
        for kind, expected in digests.items():
            got = observed["outputs"].get(name, {}).get(kind, "")
            rows.append((f"{kind} {name}", expected, got, expected == got))
    for name, expected in record["metrics"].items():
        got = observed["metrics"].get(name)
        rows.append((f"metric {name}", repr(expected), repr(got), expected == got))
    return rows


def verify(version: str, run_id: str = "") -> int:
    """Rerun release ``version`` (or take pipeline run ``run_id``) and compare it with the
    manifest, digest by digest and metric by metric; 1 on any difference."""
    record = manifest.load(version)
    started = time.monotonic()
    if run_id:
        tracking.use_defaults()
    else:
        run_id = rerun(version)
    rows = compare(record, observe(run_id))
    width = max(len(r[0]) for r in rows)
    write_line(
        f"\nRelease {version} against pipeline run {run_id} ({time.monotonic() - started:.0f} s)"
    )
    write_line(f"{'what':<{width}}  {'same':<4}  expected -> actual")
    for what, expected, actual, same in rows:
        shown = expected if same else f"{expected} -> {actual}"
        write_line(f"{what:<{width}}  {'yes' if same else 'NO':<4}  {shown[:100]}")
    different = [r for r in rows if not r[3]]
    write_line(f"{len(rows) - len(different)} of {len(rows)} identical.")
    if different:
        log.error(
            "release %s is not reproduced: %d of %d differ (%s)",
            version,
            len(different),
            len(rows),
            ", ".join(r[0] for r in different[:5]),
        )
        return 1
    return 0


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
    versioning.git(root, "clone", "--quiet", str(root), str(project))
    versioning.git(project, "checkout", "--quiet", "-B", f"release-{version}", record["version"])
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
    """Alias the model version of release ``version`` prod; promoting an older one rolls back."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    model = manifest.load(version)["mlflow"]["model"]
    tracking.use_defaults()
    client = MlflowClient()
    try:
        client.get_model_version(model["name"], str(model["version"]))
    except MlflowException:
        raise RepriseError(
            f"Model {model['name']} version {model['version']} of release {version} is not in "
            f"the tracking store {redact(mlflow.get_tracking_uri())}.",
            "set MLFLOW_TRACKING_URI to the store the release was cut with, or rerun it there "
            "(make verify) and promote that model version.",
        ) from None
    client.set_registered_model_alias(model["name"], PROD_ALIAS, str(model["version"]))
    log.info(
        "%s@%s is now version %s (release %s)", model["name"], PROD_ALIAS, model["version"], version
    )
    _compile_for_serving(version)


def _compile_for_serving(version: str) -> None:
    """Load (and so compile into the cache folder) the release's model now, so the first
    `make predict` or `make serve` of it starts in a second. A model that cannot be compiled is
    served by scikit-learn's path; that is no reason to fail the promotion."""
    from reprise.serving import model as served_model

    try:
        served = served_model.load(*served_model.resolve(release=version))
    except RepriseError as err:
        log.warning("the model of release %s was not compiled for serving: %s", version, err)
        return
    if served.scorer is not None and served.scorer.trees is not None:
        log.info("model of release %s compiled for serving (trees as arrays)", version)


def list_releases() -> None:
    """One line per release: version, date, key metrics, model version, and which is prod."""
    files = sorted((paths.ROOT / "releases").glob("*.yaml"), key=lambda p: _semver(p.stem))
    if not files:
        write_line("No releases yet: make release PART=major")
        return
    prod = _prod_versions()
    write_line(
        f"{'version':<9} {'date':<10} {'test ROC AUC':>12} {'test F1':>8} {'model':>16}  prod"
    )
    for path in files:
        record = yaml.safe_load(path.read_text())
        metrics, model = record.get("metrics", {}), record["mlflow"]["model"]
        is_prod = prod.get(model["name"]) == str(model["version"])
        write_line(
            f"{record['version']:<9} {record['date']:<10} "
            f"{metrics.get('test.roc_auc', float('nan')):>12.4f} "
            f"{metrics.get('test.f1', float('nan')):>8.4f} "
            f"{model['name'] + ' v' + str(model['version']):>16}  {'yes' if is_prod else ''}"
        )


def _semver(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return (0,)


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
