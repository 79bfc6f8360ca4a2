"""Where a component's code comes from: a git repository at a tag (or a local folder), resolved
to a commit SHA and checked out once per SHA."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reprise import git
from reprise.credentials import redact, scrub, strip_credentials
from reprise.errors import RepriseError

log = logging.getLogger(__name__)

_SHA = re.compile(r"^[0-9a-f]{40}$")
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")  # user@host:path, git's short ssh form


@dataclass(frozen=True)
class ComponentSpec:
    """What the config asks for: a repository (URI or local path, ``#subdir`` allowed), a version
    (tag, branch or commit; none for a local folder used as it is) and an environment manager."""

    name: str
    repository: str
    version: str | None
    env_manager: str


@dataclass(frozen=True)
class ResolvedComponent:
    """Where the component's code is on this machine, and which commit it is."""

    name: str
    repository: str  # without credentials (strip_credentials)
    version: str | None
    sha: str | None
    path: Path
    env_manager: str
    dirty: bool = False


def split_subdirectory(repository: str) -> tuple[str, str]:
    """``uri#sub/dir`` -> (``uri``, ``sub/dir``); no ``#`` -> (``uri``, ``""``)."""
    base, _, subdir = repository.partition("#")
    return base, subdir.strip("/")


def is_remote(repository: str) -> bool:
    """True for a URI git must fetch from (any scheme, or user@host:path); False for a folder."""
    return "://" in repository or bool(_SCP_LIKE.match(repository))


def list_remote_refs(uri: str) -> dict[str, str]:
    """Refs of a remote repository (``refs/tags/x`` -> SHA), annotated tags peeled to commits."""
    try:
        out = git.run("ls-remote", "--tags", "--heads", uri, prompt=False)
    except git.GitError as err:
        if err.timed_out:
            raise RepriseError(
                f"Repository {redact(uri)} did not answer within {git.TIMEOUT_S} s.",
                "check that the git server is up and reachable, then run again.",
            ) from None
        detail = scrub(err.stderr or "", uri).strip().splitlines()
        raise RepriseError(
            f"Repository {redact(uri)} cannot be reached: {detail[-1] if detail else 'git failed'}.",
            "check components.repository (URI, server up, access rights).",
        ) from None
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, ref = line.partition("\t")
        if ref.endswith("^{}"):
            refs[ref[:-3]] = sha  # the peeled commit of an annotated tag wins
        else:
            refs.setdefault(ref, sha)
    return refs


def resolve_version(uri: str, version: str, known: dict[str, dict[str, str]] | None = None) -> str:
    """The commit SHA of a tag, branch or full SHA of a remote repository; ``known`` holds the
    refs of repositories already listed (by URI), so one pipeline lists each repository once."""
    if known is None:
        known = {}
    if uri not in known:
        known[uri] = list_remote_refs(uri)
    refs = known[uri]
    for ref in (f"refs/tags/{version}", f"refs/heads/{version}"):
        if ref in refs:
            return refs[ref]
    if _SHA.match(version):
        return version
    tags = sorted(r.removeprefix("refs/tags/") for r in refs if r.startswith("refs/tags/"))
    raise RepriseError(
        f"Version '{version}' is neither a tag nor a branch of {redact(uri)}; "
        f"its tags are: {', '.join(tags) or '(none)'}.",
        "set components.version (or the component's own version) to one of those tags.",
    )


def checkout(uri: str, version: str, sha: str, target: Path) -> Path:
    """A work tree of ``uri`` at ``sha`` in ``target``, made once and then reused."""
    if (target / ".git").is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=target.parent))
    try:
        git.run("init", "-q", str(staging), prompt=False)
        git.run("remote", "add", "origin", uri, cwd=staging, prompt=False)
        ref = sha if _SHA.match(version) else version
        git.run("fetch", "-q", "--depth", "1", "origin", ref, cwd=staging, prompt=False)
        git.run("checkout", "-q", "--detach", "FETCH_HEAD", cwd=staging, prompt=False)
        head = git.run("rev-parse", "HEAD", cwd=staging, prompt=False)
        if head != sha:
            raise RepriseError(
                f"{redact(uri)} at '{version}' fetched commit {head}, but it was resolved to {sha}.",
                "the ref moved while fetching; run again.",
            )
        # MLflow records this URL
        git.run("remote", "set-url", "origin", strip_credentials(uri), cwd=staging, prompt=False)
        os.replace(staging, target)  # atomic: a half-made checkout is never reused
    except git.GitError as err:
        # a timeout has no words of git's: its own line names the command
        said = err.stderr if not err.timed_out else err.cause
        raise RepriseError(
            f"Fetching {redact(uri)} at '{version}' failed: {scrub(said, uri).strip()}.",
            "check that the server allows fetching that ref, then run again.",
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _local_state(folder: Path) -> tuple[str | None, bool]:
    """(HEAD SHA, has uncommitted changes) of the git work tree holding folder, or (None, False)."""
    try:
        sha = git.run("rev-parse", "HEAD", cwd=folder, prompt=False)
        dirty = bool(git.run("status", "--porcelain", "--", ".", cwd=folder, prompt=False))
    except git.GitError:
        return None, False
    return sha, dirty


def resolve(
    spec: ComponentSpec,
    base_dir: Path,
    cache: Path,
    known_refs: dict[str, dict[str, str]] | None = None,
) -> ResolvedComponent:
    """Find the code of one component; every failure is a RepriseError naming cause and fix.
    ``known_refs``: see resolve_version."""
    repository, subdir = split_subdirectory(spec.repository)
    remote = is_remote(repository)
    if not remote:
        folder = (base_dir / repository).resolve()
        if not folder.is_dir():
            raise RepriseError(
                f"Components repository '{repository}' is not a folder (looked at {folder}).",
                "set components.repository to a git URI or to an existing local folder.",
            )
        if spec.version is None:
            path = folder / subdir / spec.name
            sha, dirty = _local_state(path) if path.is_dir() else (None, False)
            return _found(spec, str(folder), None, sha, path, dirty)
        # A local repository with a version (a bare one, too) is fetched like a remote one,
        # never handed to MLflow as a path: MLflow would check the tag out in place.
        repository = folder.as_uri()
    elif spec.version is None:
        raise RepriseError(
            f"Component {spec.name} comes from the remote repository {redact(repository)} "
            "but has no version.",
            "set components.version to a tag of that repository.",
        )
    sha = resolve_version(repository, spec.version, known_refs)
    work_tree = checkout(repository, spec.version, sha, cache / "checkouts" / sha)
    return _found(
        spec,
        strip_credentials(repository),
        spec.version,
        sha,
        work_tree / subdir / spec.name,
        False,
    )


def require_release_pin(spec: ComponentSpec) -> str:
    """The commit of a pin fit for a release: a tag of a remote repository, nothing else.
    A local folder, a branch or a bare commit is refused, naming the step and the fix."""
    repository, _ = split_subdirectory(spec.repository)
    if not is_remote(repository):
        raise RepriseError(
            f"Step {spec.name} uses the local folder '{repository}': a release cannot be rerun "
            "from a folder on this machine.",
            "pin components.repository to a git URI and components.version to one of its tags.",
        )
    if not spec.version:
        raise RepriseError(f"Step {spec.name} has no version.", "pin it to a tag.")
    refs = list_remote_refs(repository)
    if f"refs/tags/{spec.version}" in refs:
        return refs[f"refs/tags/{spec.version}"]
    kind = "a branch" if f"refs/heads/{spec.version}" in refs else "not a tag"
    raise RepriseError(
        f"Step {spec.name} is pinned to '{spec.version}', which is {kind} of "
        f"{redact(repository)}: a release needs an immutable tag.",
        "tag the components (make release-components) and pin components.version to that tag.",
    )


def resolve_pinned(
    name: str,
    repository: str,
    tag: str,
    sha: str,
    env_manager: str,
    cache: Path,
    component: str = "",
) -> ResolvedComponent:
    """The component (folder ``component``, else ``name``) a release manifest pins for step
    ``name``, at exactly its recorded commit. A tag that has moved since the release is refused,
    naming both commits."""
    base, subdir = split_subdirectory(repository)
    now = list_remote_refs(base).get(f"refs/tags/{tag}")
    if now is None:
        raise RepriseError(
            f"Tag '{tag}' of {redact(base)}, pinned by this release for step {name}, is gone.",
            f"restore the tag on the components repository; it must point to {sha}.",
        )
    if now != sha:
        raise RepriseError(
            f"Tag '{tag}' of {redact(base)} now points to {now}, but this release was cut with "
            f"{sha} (step {name}); the rerun would not be the release.",
            f"put the tag back on {sha}; a published tag must never move.",
        )
    work_tree = checkout(base, tag, sha, cache / "checkouts" / sha)
    folder = component or name
    spec = ComponentSpec(folder, repository, tag, env_manager)
    return _found(spec, strip_credentials(base), tag, sha, work_tree / subdir / folder, False)


def _found(
    spec: ComponentSpec,
    repository: str,
    version: str | None,
    sha: str | None,
    path: Path,
    dirty: bool,
) -> ResolvedComponent:
    if not (path / "MLproject").is_file():
        where = f"{repository}" + (f" at {version}" if version else "")
        raise RepriseError(
            f"Component {spec.name} is not in {where} (no {path.name}/MLproject there).",
            "check components.repository (add '#subdir' if the components sit in a subfolder) "
            "and the version.",
        )
    env_manager = spec.env_manager
    if env_manager == "auto":  # a fetched component gets its own locked environment
        env_manager = "uv" if version else "local"
    return ResolvedComponent(spec.name, repository, version, sha, path, env_manager, dirty)
