"""Release and publish the components repository: `make release-components` cuts a tagged,
tested release of components-repo/ (tag ``components-X.Y.Z``) with the components' own
release.py; `make publish-components` pushes components-repo/ and its release tags (unprefixed)
as a repository of its own."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from reprise import git, paths, versioning
from reprise.components import list_remote_refs
from reprise.credentials import redact, scrub
from reprise.errors import RepriseError

log = logging.getLogger(__name__)

# the components' unit tests may take up to 1800 s (release.py), then the commit and tag
RELEASE_TIMEOUT_S = 2400
PUSH_TIMEOUT_S = 300
SEMVER = r"\d+\.\d+\.\d+"


@dataclass(frozen=True)
class _Layout:
    """Where the components live: the git toplevel, their folder in it and their version config."""

    repo: Path
    prefix: str  # components-repo, relative to the toplevel, with forward slashes
    config: Path


def _layout() -> _Layout:
    """The components' folder inside its git repository; refuse when it is in none."""
    folder = paths.COMPONENTS_DIR.resolve()
    toplevel = git.attempt("rev-parse", "--show-toplevel", cwd=folder, timeout=60)
    if toplevel is None:
        raise RepriseError(
            f"{folder} is not inside a git repository.",
            "release and publish the components from a git checkout of the project.",
        )
    repo = Path(toplevel).resolve()
    prefix = folder.relative_to(repo).as_posix()
    if prefix == ".":
        raise RepriseError(
            f"{folder} is a repository of its own, not a folder of the project.",
            "release it there with `make release PART=<part>` and push its tags; publishing is "
            "for single-repo mode.",
        )
    return _Layout(repo=repo, prefix=prefix, config=folder / ".bumpversion.cfg")


def release(part: str) -> int:
    """Cut a release of the components with their own release.py (tag ``components-X.Y.Z``
    here): tests pass, CHANGELOG dated, version bumped, commit and tag - all or nothing. Returns
    its exit code; it logs its steps and its one-line refusal itself."""
    _layout()
    script = paths.COMPONENTS_DIR / "release.py"
    # This environment has what the components' release needs (pytest, bump-my-version, the
    # components' dependencies): one release, the same as `make release` in a clone of them.
    try:
        return subprocess.run(
            [sys.executable, str(script), part], cwd=script.parent, timeout=RELEASE_TIMEOUT_S
        ).returncode
    except subprocess.TimeoutExpired:
        raise RepriseError(
            f"The components' release did not finish within {RELEASE_TIMEOUT_S} s.",
            "run `make test` in components-repo/ and find the slow test.",
        ) from None


def publish(remote: str) -> None:
    """Push components-repo/ as a repository of its own: the current branch's history of the
    folder as ``main`` and every ``components-X.Y.Z`` tag as ``X.Y.Z``; never forced."""
    lay = _layout()
    _require_subtree(lay.repo)
    shown = redact(remote)
    if git.run("status", "--porcelain", "--", lay.prefix, cwd=lay.repo):
        log.warning("%s has uncommitted changes: only committed ones are published", lay.prefix)
    head = _split(lay, "HEAD")
    releases = _release_tags(lay)
    splits = {version: _split(lay, f"{tag}^{{commit}}") for tag, version in releases.items()}
    remote_refs = list_remote_refs(remote)

    refspecs: list[str] = []
    for tag, version in releases.items():
        ref = f"refs/tags/{version}"
        published = remote_refs.get(ref)
        if published is None:
            refspecs.append(f"{splits[version]}:{ref}")
        elif published != splits[version]:
            raise RepriseError(
                f"Tag {version} of {shown} points to {published}, but {tag} here splits to "
                f"{splits[version]}; a published tag is never moved.",
                f"put {tag} back on the commit that was published, or release a new version.",
            )
    remote_main = remote_refs.get("refs/heads/main")
    if remote_main != head:
        refspecs.insert(0, f"{head}:refs/heads/main")
    if not refspecs:
        log.info("%s is up to date: main at %s, tags %s", shown, head[:12], _names(releases))
        return
    _push(lay.repo, remote, refspecs, remote_main, head)
    log.info(
        "published %s to %s: main at %s, tags %s",
        lay.prefix,
        shown,
        head[:12],
        _names(releases),
    )
    log.info(
        "a project pins it with components.repository=%s and components.version=<X.Y.Z>", shown
    )


def _names(releases: dict[str, str]) -> str:
    return ", ".join(releases.values()) or "none"


def _require_subtree(repo: Path) -> None:
    """Refuse early when this git has no ``git subtree``."""
    exec_path = Path(git.run("--exec-path", cwd=repo))
    if not (exec_path / "git-subtree").exists():
        raise RepriseError(
            f"git subtree is not installed (no git-subtree in {exec_path}).",
            "install the git package that ships it (contrib/subtree), then publish again.",
        )


def _release_tags(lay: _Layout) -> dict[str, str]:
    """Release tags of the components in this repository -> their unprefixed version,
    oldest version first."""
    template = versioning.tag_name(lay.config, "{new_version}")
    before, _, after = template.partition("{new_version}")
    pattern = re.compile(f"^{re.escape(before)}({SEMVER}){re.escape(after)}$")
    tags = {}
    for tag in git.run("tag", "--list", cwd=lay.repo).splitlines():
        if match := pattern.match(tag):
            tags[tag] = match.group(1)
    return dict(sorted(tags.items(), key=lambda kv: tuple(int(n) for n in kv[1].split("."))))


def _split(lay: _Layout, rev: str) -> str:
    """The commit of components-repo/ alone at ``rev`` (deterministic for the same history)."""
    out = git.run("subtree", "split", "-q", f"--prefix={lay.prefix}", rev, cwd=lay.repo)
    return out.splitlines()[-1].strip()


def _push(repo: Path, remote: str, refspecs: list[str], remote_main: str | None, head: str) -> None:
    """``git push --atomic`` without force; a rejected main becomes a RepriseError."""
    try:
        git.run(
            "push",
            "--atomic",
            "--porcelain",
            remote,
            *refspecs,
            cwd=repo,
            timeout=PUSH_TIMEOUT_S,
            prompt=False,
        )
    except git.GitError as err:
        if err.timed_out:
            raise RepriseError(
                f"Pushing to {redact(remote)} did not finish within {PUSH_TIMEOUT_S} s.",
                "check that the git server is up and reachable, then publish again.",
            ) from None
        raise _refused(err, remote, remote_main, head) from None


def _refused(err: git.GitError, remote: str, remote_main: str | None, head: str) -> RepriseError:
    """The one line for a push git refused: a main that is not ours to move, else git's words."""
    output = scrub(f"{err.stdout}\n{err.stderr}", remote)
    rejected = [ln for ln in output.splitlines() if ln.startswith("!")]
    if any("refs/heads/main" in ln for ln in rejected):
        return RepriseError(
            f"The main branch of {redact(remote)} ({remote_main}) is not an ancestor of the "
            f"components' history here ({head}); nothing was pushed.",
            "publish from a branch that contains what was published before (merge or rebase "
            "onto it); publishing never forces.",
        )
    detail = [" ".join(ln.split()) for ln in rejected or output.splitlines() if ln.strip()]
    return RepriseError(
        f"Pushing to {redact(remote)} failed: {'; '.join(detail[-3:]) or 'git failed'}.",
        "check the URI, that the repository exists and that you may push to it.",
    )
