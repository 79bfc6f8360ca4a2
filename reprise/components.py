"""Where a component's code comes from: a git repository at a tag (or a local folder), resolved
to a commit SHA and checked out once per SHA."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprise.errors import RepriseError

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 120
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


# Schemes whose user name is a login, not a secret: ssh needs it (git@host) to authenticate.
_SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")
# A URI anywhere in a text: a scheme, "://", then anything up to a space or a quote.
_URI_IN_TEXT = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"]+""")


def _secret_userinfo(parts: urllib.parse.SplitResult) -> bool:
    """True if the URI's user info holds a secret: a password, or (but for ssh) a user name,
    which many servers take as a token."""
    if parts.password is not None:
        return True
    return parts.username is not None and parts.scheme.lower() not in _SSH_SCHEMES


def _with_userinfo(uri: str, userinfo: str) -> str:
    """``uri`` with ``userinfo`` in place of its own; every other character as it was."""
    scheme, sep, rest = uri.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    host = rest[:end].rpartition("@")[2]
    return f"{scheme}{sep}{userinfo}{host}{rest[end:]}"


def redact(uri: str) -> str:
    """The URI without any password or token in it, ``***@`` showing where they were (for
    messages and logs)."""
    try:
        if not _secret_userinfo(urllib.parse.urlsplit(uri)):
            return uri
    except ValueError:  # not a URI urllib can read (a bad port, say): hide what looks like one
        return _CREDENTIALS.sub("://***@", uri)
    return _with_userinfo(uri, "***@")


def strip_credentials(uri: str) -> str:
    """The URI without its secret user info, as it is recorded (tags, config, manifests): git
    then takes the credentials from its helper, GIT_ASKPASS or ~/.netrc, so a rerun works."""
    try:
        parts = urllib.parse.urlsplit(uri)
        if not _secret_userinfo(parts):
            return uri
    except ValueError:
        return _CREDENTIALS.sub("://", uri)
    login = parts.username if parts.scheme.lower() in _SSH_SCHEMES else None
    return _with_userinfo(uri, f"{login}@" if login else "")


def has_credentials(text: str) -> bool:
    """True if a URI anywhere in ``text`` carries a password or token in its user info."""
    return any(strip_credentials(m.group()) != m.group() for m in _URI_IN_TEXT.finditer(text))


def without_credentials(value: Any) -> Any:
    """``value`` (plain data: a config, a manifest) with every URI in its strings stripped of
    its credentials; keys and other values as they are."""
    if isinstance(value, dict):
        return {k: without_credentials(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_credentials(v) for v in value]
    if isinstance(value, str) and has_credentials(value):
        return _URI_IN_TEXT.sub(lambda m: strip_credentials(m.group()), value)
    return value


def find_credentials(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, string) of every string in ``value`` (plain data) holding a URI with
    credentials."""
    if isinstance(value, dict):
        return [f for key, item in value.items() for f in find_credentials(item, f"{prefix}{key}.")]
    if isinstance(value, list):
        return [f for i, item in enumerate(value) for f in find_credentials(item, f"{prefix}{i}.")]
    if isinstance(value, str) and has_credentials(value):
        return [(prefix.rstrip("."), value)]
    return []


def _is_repository_key(key: str) -> bool:
    """components.repository or components.overrides.<step>.repository: URIs git fetches."""
    parts = key.split(".")
    return parts == ["components", "repository"] or (
        len(parts) == 4 and parts[:2] == ["components", "overrides"] and parts[3] == "repository"
    )


def refuse_credentials(
    settings: dict[str, Any],
    what: str = "Setting",
    consequence: str = ": its step would get it as a parameter, which MLflow and W&B record "
    "in clear",
    fix: str = "take them out of the URI: download the file and name its local path, or serve "
    "it where it needs none.",
    allowed: Callable[[str], bool] = _is_repository_key,
) -> None:
    """Refuse a URI with credentials in any of ``settings`` but the ``allowed`` keys (by default
    the components' repositories, which git fetches and which are recorded stripped)."""
    leaked = [(k, v) for k, v in find_credentials(settings) if not allowed(k)]
    if leaked:
        key, value = leaked[0]
        raise RepriseError(
            f"{what} {key} holds a URI with credentials ({scrub(value)[:200]}){consequence}.", fix
        )


_CREDENTIALS = re.compile(r"://[^/\s]*@")


def scrub(text: str, uri: str = "") -> str:
    """``text`` (git's or Hydra's message, say) without credentials: none of any URI in it, and
    none of ``uri``'s, however it was quoted."""
    if uri:
        text = text.replace(uri, redact(uri))
    text = _CREDENTIALS.sub("://***@", text)
    userinfo, at, _ = urllib.parse.urlsplit(uri).netloc.rpartition("@")
    if at and userinfo:
        text = text.replace(f"{userinfo}@", "***@")
        _, colon, secret = userinfo.partition(":")
        if colon and secret:
            text = text.replace(secret, "***")
    return text


def split_subdirectory(repository: str) -> tuple[str, str]:
    """``uri#sub/dir`` -> (``uri``, ``sub/dir``); no ``#`` -> (``uri``, ``""``)."""
    base, _, subdir = repository.partition("#")
    return base, subdir.strip("/")


def is_remote(repository: str) -> bool:
    """True for a URI git must fetch from (any scheme, or user@host:path); False for a folder."""
    return "://" in repository or bool(_SCP_LIKE.match(repository))


def _git(*args: str, cwd: Path | None = None, timeout: int = GIT_TIMEOUT_S) -> str:
    # Never prompt (a pipeline would hang); credentials come from git's credential helper, the
    # user's GIT_ASKPASS or ~/.netrc, and "true" answers empty when none is set.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    env.setdefault("GIT_ASKPASS", "true")
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, args, result.stdout, result.stderr)
    return result.stdout


def list_remote_refs(uri: str) -> dict[str, str]:
    """Refs of a remote repository (``refs/tags/x`` -> SHA), annotated tags peeled to commits."""
    try:
        out = _git("ls-remote", "--tags", "--heads", uri)
    except subprocess.TimeoutExpired:
        raise RepriseError(
            f"Repository {redact(uri)} did not answer within {GIT_TIMEOUT_S} s.",
            "check that the git server is up and reachable, then run again.",
        ) from None
    except subprocess.CalledProcessError as err:
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
        _git("init", "-q", str(staging))
        _git("remote", "add", "origin", uri, cwd=staging)
        ref = sha if _SHA.match(version) else version
        _git("fetch", "-q", "--depth", "1", "origin", ref, cwd=staging)
        _git("checkout", "-q", "--detach", "FETCH_HEAD", cwd=staging)
        head = _git("rev-parse", "HEAD", cwd=staging).strip()
        if head != sha:
            raise RepriseError(
                f"{redact(uri)} at '{version}' fetched commit {head}, but it was resolved to {sha}.",
                "the ref moved while fetching; run again.",
            )
        # MLflow records this URL
        _git("remote", "set-url", "origin", strip_credentials(uri), cwd=staging)
        os.replace(staging, target)  # atomic: a half-made checkout is never reused
    except subprocess.CalledProcessError as err:
        raise RepriseError(
            f"Fetching {redact(uri)} at '{version}' failed: {scrub(err.stderr or '', uri).strip()}.",
            "check that the server allows fetching that ref, then run again.",
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _local_state(folder: Path) -> tuple[str | None, bool]:
    """(HEAD SHA, has uncommitted changes) of the git work tree holding folder, or (None, False)."""
    try:
        sha = _git("rev-parse", "HEAD", cwd=folder).strip()
        dirty = bool(_git("status", "--porcelain", "--", ".", cwd=folder).strip())
    except (subprocess.CalledProcessError, FileNotFoundError):
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
