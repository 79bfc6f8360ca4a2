"""Release and publish the components repository: `make release-components` cuts a tagged,
tested release of components-repo/ (tag ``components-X.Y.Z``); `make publish-components` pushes
components-repo/ and its release tags (unprefixed) as a repository of its own."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from reprise import paths, versioning
from reprise.components import list_remote_refs, redact, scrub
from reprise.errors import RepriseError

log = logging.getLogger(__name__)

TESTS_TIMEOUT_S = 1800
PUSH_TIMEOUT_S = 300
SEMVER = r"\d+\.\d+\.\d+"


@dataclass(frozen=True)
class _Layout:
    """Where the components live: the git toplevel, their folder in it and their release files."""

    repo: Path
    prefix: str  # components-repo, relative to the toplevel, with forward slashes
    config: Path
    changelog: Path
    version_file: Path

    def rel(self, path: Path) -> str:
        """``path`` relative to the git toplevel, as git wants it."""
        return path.relative_to(self.repo).as_posix()


def _layout() -> _Layout:
    """The components' folder inside its git repository; refuse when it is in none."""
    folder = paths.COMPONENTS_DIR.resolve()
    result = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RepriseError(
            f"{folder} is not inside a git repository.",
            "release and publish the components from a git checkout of the project.",
        )
    repo = Path(result.stdout.strip()).resolve()
    prefix = folder.relative_to(repo).as_posix()
    if prefix == ".":
        raise RepriseError(
            f"{folder} is a repository of its own, not a folder of the project.",
            "tag it there with `bump-my-version bump <part>`; publishing is for single-repo mode.",
        )
    return _Layout(
        repo=repo,
        prefix=prefix,
        config=folder / ".bumpversion.cfg",
        changelog=folder / "CHANGELOG.md",
        version_file=folder / "VERSION",
    )


def release(part: str) -> None:
    """Cut a release of the components: tests pass, CHANGELOG dated, version bumped, commit and
    annotated tag ``components-X.Y.Z`` - all or nothing."""
    lay = _layout()
    versioning.require_clean(lay.repo)
    versioning.require_unreleased_entries(lay.changelog)
    old = versioning.current_version(lay.config)
    version = versioning.next_version(lay.config, part)
    tag = versioning.tag_name(lay.config, version)
    if versioning.git(lay.repo, "tag", "--list", tag):
        raise RepriseError(
            f"Tag {tag} already exists (components {old} -> {version}).",
            f"set current_version in {lay.rel(lay.config)} to the latest release, or cut "
            "another part.",
        )
    log.info("components %s -> %s (%s): running the components' unit tests", old, version, part)
    _run_unit_tests(lay)
    with versioning.atomic(lay.repo, tag):
        versioning.date_changelog(lay.changelog, version, dt.date.today())
        versioning.bump(lay.config, part)
        commit = versioning.commit_and_tag(
            lay.repo,
            paths=[lay.rel(lay.changelog), lay.rel(lay.version_file), lay.rel(lay.config)],
            version=version,
            tag=tag,
            message=f"components {version}",
        )
    log.info("released components %s: tag %s on commit %s", version, tag, commit[:12])
    log.info(
        "push it with `git push origin HEAD %s`; publish the components as a repository of "
        "their own with `make publish-components REMOTE=<git URI>` (pushes tag %s)",
        tag,
        version,
    )


def _run_unit_tests(lay: _Layout) -> None:
    """The components' unit tests (not e2e), from the repository root; any failure refuses."""
    command = [sys.executable, "-m", "pytest", lay.prefix, "-q", "-m", "not e2e"]
    command += ["-p", "no:cacheprovider"]
    try:
        result = subprocess.run(
            command, cwd=lay.repo, capture_output=True, text=True, timeout=TESTS_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise RepriseError(
            f"The components' unit tests did not finish within {TESTS_TIMEOUT_S} s.",
            f"run `python -m pytest {lay.prefix} -m 'not e2e'` and find the slow test.",
        ) from None
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    summary = lines[-1].strip("= ") if lines else "no output"
    if result.returncode == 0:
        log.info("components' unit tests: %s", summary)
        return
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (failed|errors?)\b", summary)}
    failed = counts.get("failed", 0)
    errors = counts.get("error", 0) + counts.get("errors", 0)
    if failed or errors:
        cause = f"{failed} of the components' unit tests failed" + (
            f" and {errors} errored" if errors else ""
        )
    elif result.returncode == 5:
        cause = "The components' unit tests collected no test"
    else:
        cause = f"The components' unit tests did not run (pytest exit code {result.returncode})"
    raise RepriseError(
        f"{cause} ({summary}); nothing was released.",
        f"run `python -m pytest {lay.prefix} -m 'not e2e'`, fix them, commit, then release again.",
    )


def publish(remote: str) -> None:
    """Push components-repo/ as a repository of its own: the current branch's history of the
    folder as ``main`` and every ``components-X.Y.Z`` tag as ``X.Y.Z``; never forced."""
    lay = _layout()
    _require_subtree(lay.repo)
    shown = redact(remote)
    if versioning.git(lay.repo, "status", "--porcelain", "--", lay.prefix):
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
    exec_path = Path(versioning.git(repo, "--exec-path"))
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
    for tag in versioning.git(lay.repo, "tag", "--list").splitlines():
        if match := pattern.match(tag):
            tags[tag] = match.group(1)
    return dict(sorted(tags.items(), key=lambda kv: tuple(int(n) for n in kv[1].split("."))))


def _split(lay: _Layout, rev: str) -> str:
    """The commit of components-repo/ alone at ``rev`` (deterministic for the same history)."""
    out = versioning.git(lay.repo, "subtree", "split", "-q", f"--prefix={lay.prefix}", rev)
    return out.splitlines()[-1].strip()


def _push(repo: Path, remote: str, refspecs: list[str], remote_main: str | None, head: str) -> None:
    """``git push --atomic`` without force; a rejected main becomes a RepriseError."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        result = subprocess.run(
            ["git", "push", "--atomic", "--porcelain", remote, *refspecs],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=PUSH_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise RepriseError(
            f"Pushing to {redact(remote)} did not finish within {PUSH_TIMEOUT_S} s.",
            "check that the git server is up and reachable, then publish again.",
        ) from None
    if result.returncode == 0:
        return
    output = scrub(f"{result.stdout}\n{result.stderr}", remote)
    rejected = [ln for ln in output.splitlines() if ln.startswith("!")]
    if any("refs/heads/main" in ln for ln in rejected):
        raise RepriseError(
            f"The main branch of {redact(remote)} ({remote_main}) is not an ancestor of the "
            f"components' history here ({head}); nothing was pushed.",
            "publish from a branch that contains what was published before (merge or rebase "
            "onto it); publishing never forces.",
        )
    detail = [" ".join(ln.split()) for ln in rejected or output.splitlines() if ln.strip()]
    raise RepriseError(
        f"Pushing to {redact(remote)} failed: {'; '.join(detail[-3:]) or 'git failed'}.",
        "check the URI, that the repository exists and that you may push to it.",
    )
