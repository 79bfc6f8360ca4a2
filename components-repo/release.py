"""Cut a release of the components: ``python release.py patch|minor|major`` (`make release PART=`).

The one release of this repository, whether it is a repository of its own or a folder of a
project (single-repo mode, where the project's `make release-components` runs this file too):
the unit tests pass, the CHANGELOG is dated, the version bumped (bump-my-version, from this
Python's environment), one commit and an annotated tag - all or nothing. The tag is ``X.Y.Z`` in a
repository of its own, as the published components are tagged, and ``tag_name`` of
.bumpversion.cfg (``components-X.Y.Z``) inside a project, whose own tags are ``X.Y.Z``.
Standard library only: a clone of the components has no project and no platform to import.
"""

from __future__ import annotations

import argparse
import configparser
import datetime as dt
import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("release")

HERE = Path(__file__).resolve().parent
CONFIG = HERE / ".bumpversion.cfg"
CHANGELOG = HERE / "CHANGELOG.md"
PARTS = ("patch", "minor", "major")
TESTS_TIMEOUT_S = 1800
UNRELEASED = re.compile(r"^## \[Unreleased\][^\n]*\n", re.MULTILINE)
NEXT_SECTION = re.compile(r"^## \[", re.MULTILINE)


class ReleaseError(Exception):
    """A refusal the user can fix: shown as one line, its cause then its fix."""

    def __init__(self, cause: str, fix: str) -> None:
        super().__init__(f"{cause} Fix: {fix}")


@dataclass(frozen=True)
class Layout:
    """The git repository holding the components and where they are in it."""

    repo: Path
    prefix: str  # the components' folder relative to the repository; "" in one of their own

    @property
    def standalone(self) -> bool:
        return not self.prefix

    def rel(self, name: str) -> str:
        """A file of the components' folder, relative to the repository, as git wants it."""
        return f"{self.prefix}/{name}" if self.prefix else name


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo``; a failure is a ReleaseError quoting git."""
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        said = result.stderr.strip() or result.stdout.strip()
        raise ReleaseError(f"git {' '.join(args)} failed in {repo}: {said}", "see git's message.")
    return result.stdout.strip()


def layout() -> Layout:
    """Where the components are: a repository of their own, or a folder of a project's."""
    try:
        toplevel = git(HERE, "rev-parse", "--show-toplevel")
    except ReleaseError:
        raise ReleaseError(
            f"{HERE} is not inside a git repository.", "release from a git clone of it."
        ) from None
    repo = Path(toplevel).resolve()
    prefix = HERE.relative_to(repo).as_posix()
    return Layout(repo, "" if prefix == "." else prefix)


def tag_name(lay: Layout, version: str) -> str:
    """``X.Y.Z`` in a repository of its own, else .bumpversion.cfg's ``tag_name``."""
    if lay.standalone:
        return version
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(CONFIG)
    return parser["bumpversion"].get("tag_name", "{new_version}").replace("{new_version}", version)


def unreleased_entries(changelog: str) -> str:
    """The text under ``## [Unreleased]`` up to the next version heading, stripped."""
    match = UNRELEASED.search(changelog)
    if match is None:
        return ""
    rest = changelog[match.end() :]
    following = NEXT_SECTION.search(rest)
    body = rest[: following.start()] if following else rest
    # sub-headings alone (### Added) are no entries
    lines = [ln for ln in body.splitlines() if ln.strip() and not ln.startswith("###")]
    return body.strip() if lines else ""


def date_changelog(version: str, day: dt.date) -> None:
    """Move the Unreleased entries under ``## [version] - day``; leave Unreleased empty."""
    text = CHANGELOG.read_text()
    match = UNRELEASED.search(text)
    if match is None:
        raise ReleaseError(f"{CHANGELOG.name} has no '## [Unreleased]' section.", "add one.")
    heading = f"## [{version}] - {day.isoformat()}\n\n"
    CHANGELOG.write_text(text[: match.end()] + "\n" + heading + text[match.end() :].lstrip("\n"))


def bump_my_version(*args: str) -> str:
    """bump-my-version of this Python's environment, on .bumpversion.cfg."""
    tool = Path(sys.executable).parent / "bump-my-version"
    result = subprocess.run(
        [str(tool), *args, "--config-file", str(CONFIG)],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise ReleaseError(
            f"bump-my-version {args[0]} failed: {result.stderr.strip()[-500:]}",
            f"check {CONFIG.name}.",
        )
    return result.stdout


def require_releasable(lay: Layout) -> None:
    """Refuse uncommitted changes and an empty Unreleased section: a release is a commit with
    release notes."""
    dirty = git(lay.repo, "status", "--porcelain", "--untracked-files=all")
    if dirty:
        # "XY path" per line; git() strips the output, so the first line may have lost X's space
        files = ", ".join(line.split(maxsplit=1)[-1] for line in dirty.splitlines()[:5])
        raise ReleaseError(
            f"The work tree has uncommitted changes ({files}).",
            "commit or stash them; a release is cut from a commit and nothing else.",
        )
    if not unreleased_entries(CHANGELOG.read_text()):
        raise ReleaseError(
            f"{CHANGELOG.name} has no entries under '## [Unreleased]'.",
            "write what changed there (Added / Changed / Fixed) and commit it before releasing.",
        )


def run_unit_tests() -> None:
    """The unit tests (not e2e) with this repository's pytest config; any failure refuses."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "not e2e", "-p", "no:cacheprovider"]
    try:
        result = subprocess.run(
            command, cwd=HERE, capture_output=True, text=True, timeout=TESTS_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise ReleaseError(
            f"The components' unit tests did not finish within {TESTS_TIMEOUT_S} s.",
            "run `make test` and find the slow test.",
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
    raise ReleaseError(
        f"{cause} ({summary}); nothing was released.",
        "run `make test`, fix them, commit, then release again.",
    )


def release(part: str) -> str:
    """Cut the release; returns its tag."""
    lay = layout()
    require_releasable(lay)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(CONFIG)
    old = parser["bumpversion"]["current_version"]
    version = bump_my_version("show", "new_version", "--increment", part).strip().splitlines()[-1]
    tag = tag_name(lay, version)
    if git(lay.repo, "tag", "--list", tag):
        raise ReleaseError(
            f"Tag {tag} already exists (components {old} -> {version}).",
            f"set current_version in {lay.rel(CONFIG.name)} to the latest release, or cut "
            "another part.",
        )
    log.info("components %s -> %s (%s): running the components' unit tests", old, version, part)
    run_unit_tests()
    head = git(lay.repo, "rev-parse", "HEAD")
    try:
        date_changelog(version, dt.date.today())
        bump_my_version("bump", part, "--no-commit", "--no-tag", "--allow-dirty")
        parser.read(CONFIG)
        bumped = [s.removeprefix("bumpversion:file:") for s in parser if ":file:" in s]
        files = [lay.rel(name) for name in [CHANGELOG.name, CONFIG.name, *bumped]]
        message = f"components {version}"
        git(lay.repo, "add", "--", *files)
        git(lay.repo, "commit", "-m", message)
        git(lay.repo, "tag", "-a", tag, "-m", message)
    except BaseException:
        # all or nothing: the tree was clean when the release began
        log.error("release failed: putting %s back as it was at %s", lay.repo, head[:12])
        if git(lay.repo, "tag", "--list", tag):
            git(lay.repo, "tag", "-d", tag)
        git(lay.repo, "reset", "--hard", head)
        git(lay.repo, "clean", "-fd")
        raise
    commit = git(lay.repo, "rev-parse", "HEAD")
    log.info("released components %s: tag %s on commit %s", version, tag, commit[:12])
    if lay.standalone:
        log.info("publish it with `git push origin HEAD %s`", tag)
    else:
        log.info(
            "push it with `git push origin HEAD %s`; publish the components as a repository of "
            "their own with `make publish-components REMOTE=<git URI>` (pushes tag %s)",
            tag,
            version,
        )
    return tag


def main(argv: list[str] | None = None) -> int:
    """The command line: one argument, the part of the version to bump."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=PARTS, help="the part of X.Y.Z to bump")
    args = parser.parse_args(argv)
    try:
        release(args.part)
    except ReleaseError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
