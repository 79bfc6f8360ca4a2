"""Release manifests (releases/X.Y.Z.yaml): where they are, and which one a checkout is at."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml

from reprise import git, paths
from reprise.credentials import redact, without_credentials
from reprise.errors import RepriseError
from reprise.tags import OUTPUT_CONTENT_TAG, REGISTERED_MODEL_TAG
from reprise.versioning import current_version, tag_name

log = logging.getLogger(__name__)

BUMPVERSION_CFG = ".bumpversion.cfg"
RELEASES = "releases"
# Tags of the origin, fetched by `releases --remote` into refs of their own: never over local tags.
ORIGIN_TAGS = "refs/reprise/origin-tags"
# reading a manifest or a tag is local (or one tag's fetch): a minute is plenty
READ_TIMEOUT_S = 60


def manifest_path(version: str, root: Path = paths.ROOT) -> Path:
    return root / RELEASES / f"{version}.yaml"


def load(version: str, root: Path = paths.ROOT) -> dict[str, Any]:
    """The manifest of release ``version`` as its tag holds it (``git show TAG:releases/V.yaml``),
    so any release the repository knows can be named, whatever is checked out; a tag only the
    origin has is fetched first. Else an error listing the releases there are."""
    if not semver(version):
        raise RepriseError(f"'{version[:100]}' is not a release version.", "name one as X.Y.Z.")
    tag = release_tag(version, root)
    text = git.attempt(
        "show", f"refs/tags/{tag}:{RELEASES}/{version}.yaml", cwd=root, timeout=READ_TIMEOUT_S
    )
    if text is None and _fetch_tag(root, tag):
        log.info("release %s: tag %s fetched from origin", version, tag)
        text = git.attempt(
            "show", f"refs/tags/{tag}:{RELEASES}/{version}.yaml", cwd=root, timeout=READ_TIMEOUT_S
        )
    if text is None:
        path = manifest_path(version, root)
        if not path.is_file():
            known = sorted(known_releases(root), key=semver)
            raise RepriseError(
                f"There is no release {version}: no tag {tag} holding {RELEASES}/{version}.yaml, "
                "here or on origin.",
                f"name one of: {', '.join(known) or '(none yet: make release PART=...)'} "
                "(make releases ORIGIN=1 lists the origin's too).",
            )
        text = path.read_text()  # a manifest not yet tagged: the release being cut
    record: dict[str, Any] = yaml.safe_load(text)
    return record


def release_tag(version: str, root: Path = paths.ROOT) -> str:
    """The tag of release ``version``: .bumpversion.cfg's tag_name, else the version itself."""
    config = root / BUMPVERSION_CFG
    return tag_name(config, version) if config.is_file() else version


def known_releases(root: Path = paths.ROOT, ref_prefix: str = "refs/tags") -> dict[str, str]:
    """Version -> tag ref of every tag under ``ref_prefix`` that holds its release's manifest."""
    refs = (
        git.attempt(
            "for-each-ref", "--format=%(refname)", ref_prefix, cwd=root, timeout=READ_TIMEOUT_S
        )
        or ""
    )
    before, _, after = release_tag("{new_version}", root).partition("{new_version}")
    pattern = re.compile(re.escape(before) + r"(\d+\.\d+\.\d+)" + re.escape(after))
    found = {}
    for ref in refs.splitlines():
        match = pattern.fullmatch(ref.removeprefix(ref_prefix + "/"))
        manifest = f"{ref}:{RELEASES}/{match.group(1)}.yaml" if match else ""
        if (
            match
            and git.attempt("cat-file", "-e", manifest, cwd=root, timeout=READ_TIMEOUT_S)
            is not None
        ):
            found[match.group(1)] = ref
    return found


def fetch_origin_tags(root: Path = paths.ROOT) -> None:
    """Copy the origin's tags under ORIGIN_TAGS (local tags stay as they are)."""
    try:
        git.run(
            "fetch",
            "--quiet",
            "--no-tags",
            "origin",
            f"+refs/tags/*:{ORIGIN_TAGS}/*",
            cwd=root,
            timeout=300,
        )
    except git.GitError as err:
        if err.timed_out:
            raise
        said = " ".join(err.stderr.split())[-300:]
        raise RepriseError(
            f"Cannot fetch the tags of origin: {redact(said).rstrip('.')}.",
            "check `git remote get-url origin` and that it answers (git ls-remote origin).",
        ) from None


def read_manifest(ref: str, version: str, root: Path = paths.ROOT) -> dict[str, Any]:
    """The manifest of ``version`` as the tag ref ``ref`` holds it."""
    record: dict[str, Any] = yaml.safe_load(
        git.attempt("show", f"{ref}:{RELEASES}/{version}.yaml", cwd=root, timeout=READ_TIMEOUT_S)
        or "{}"
    )
    return record


def semver(text: str) -> tuple[int, ...]:
    """(major, minor, patch) of "X.Y.Z", else () for anything else."""
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return ()
    return tuple(int(p) for p in parts)


def _fetch_tag(root: Path, tag: str) -> bool:
    """Fetch one tag from origin; False when there is no origin or it lacks the tag."""
    if "origin" not in (git.attempt("remote", cwd=root, timeout=READ_TIMEOUT_S) or "").split():
        return False
    return (
        git.attempt(
            "fetch",
            "--quiet",
            "--no-tags",
            "origin",
            f"refs/tags/{tag}:refs/tags/{tag}",
            cwd=root,
            timeout=READ_TIMEOUT_S,
        )
        is not None
    )


def dump(manifest: dict[str, Any], path: Path) -> None:
    """Write ``manifest`` to ``path``, every URI in it stripped of its credentials: a manifest is
    committed and pushed, and a rerun takes credentials from git (helper, GIT_ASKPASS, netrc)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = without_credentials(manifest)
    path.write_text(yaml.dump(clean, Dumper=_PlainDumper, sort_keys=False, width=100))


class _PlainDumper(yaml.SafeDumper):
    """Plain YAML for people to read: a value met twice is written twice, never as an anchor
    (``&id001``) and an alias (``*id001``)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def tracking_record(uri: str) -> str:
    """The tracking store as a manifest records it: a server's URI without credentials; for a store
    on the cutting machine's disk (sqlite, a folder) only its kind, as its path means nothing
    on another machine."""
    scheme = uri.partition("://")[0] if "://" in uri else "file"
    if scheme in ("http", "https"):
        return str(without_credentials(uri))
    return f"{scheme} store of the machine that cut the release"


def current_release(root: Path = paths.ROOT) -> dict[str, Any] | None:
    """The manifest of the release this checkout is, or None: HEAD must carry the tag of the
    version in .bumpversion.cfg, that version's manifest must exist, and the tree be clean."""
    config = root / BUMPVERSION_CFG
    if not config.is_file():
        return None
    version = current_version(config)
    if not manifest_path(version, root).is_file():
        return None
    tags = (
        git.attempt("tag", "--points-at", "HEAD", cwd=root, timeout=READ_TIMEOUT_S) or ""
    ).split()
    if release_tag(version, root) not in tags:
        return None
    if git.attempt(
        "status", "--porcelain", "--untracked-files=no", cwd=root, timeout=READ_TIMEOUT_S
    ):
        log.warning("release %s: the work tree has changes, so this is not a rerun of it", version)
        return None
    return load(version, root)


def registered_version(client: Any, record: dict[str, Any]) -> str:
    """The version of this store's registry that is release ``record``'s model: the one the
    manifest names when the release's run made it, else the newest whose predictions are the
    release's (a rerun in this store). Refused, naming both, when none is: in another store
    the manifest's version number may be another model."""
    model, version = record["mlflow"]["model"], record["version"]
    matching = _versions_of_release(client, record)
    if str(model["version"]) in matching:
        return str(model["version"])
    if matching:
        chosen = max(matching, key=int)
        log.info(
            "release %s: its model is version %s of %s in this store (version %s here is %s)",
            version,
            chosen,
            model["name"],
            model["version"],
            _described(client, model["name"], str(model["version"])),
        )
        return chosen
    import mlflow

    raise RepriseError(
        f"No version of model {model['name']} in the tracking store "
        f"{redact(mlflow.get_tracking_uri())} comes from release {version} (pipeline run "
        f"{record['mlflow']['run_id']}, predictions digest {_predictions_digest(record)[:12]}); "
        f"version {model['version']} here is "
        f"{_described(client, model['name'], str(model['version']))}.",
        "set MLFLOW_TRACKING_URI to the store the release was cut with, or rerun the release in "
        f"this store (git checkout {release_tag(version)} && make run, or mlflow run "
        f"<repository URI>#project -v {version}), then try again.",
    )


def _predictions_digest(record: dict[str, Any]) -> str:
    """The content digest of the release model's predictions on its test table."""
    return next(
        (
            d.get("digest", "")
            for name, d in record["outputs"].items()
            if name.endswith(".predictions")
        ),
        "",
    )


def _versions_of_release(client: Any, record: dict[str, Any]) -> set[str]:
    """Versions of the release's model in this store made by the release's pipeline run, or by
    any run whose model predicts exactly what the release's did (its predictions digest)."""
    from mlflow.exceptions import MlflowException

    name, run_id = record["mlflow"]["model"]["name"], record["mlflow"]["run_id"]
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return set()
    found = set()
    if digest := _predictions_digest(record):
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(
            experiments,
            filter_string=f"tags.`{OUTPUT_CONTENT_TAG.format(name='predictions')}` = '{digest}'",
        )
        for run in runs:
            registered = run.data.tags.get(REGISTERED_MODEL_TAG, "")
            model_name, _, number = registered.removeprefix("models:/").rpartition("/")
            if model_name == name and number:
                found.add(number)
    for version in versions:
        try:
            parent = client.get_run(version.run_id).data.tags.get("mlflow.parentRunId")
        except MlflowException:
            continue
        if parent == run_id:
            found.add(str(version.version))
    return found


def _described(client: Any, name: str, number: str) -> str:
    """ "the model of run R (pipeline run P)", or "absent"."""
    from mlflow.exceptions import MlflowException

    try:
        run_id = client.get_model_version(name, number).run_id
        parent = client.get_run(run_id).data.tags.get("mlflow.parentRunId", "?")
    except MlflowException:
        return "absent"
    return f"the model of run {run_id} (pipeline run {parent})"
