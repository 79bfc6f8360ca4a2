"""What every release does, for the project and for the components repository alike: refuse a
dirty tree or an empty Unreleased section, date the CHANGELOG, bump the version with
bump-my-version, commit and tag - all or nothing."""

from __future__ import annotations

import configparser
import datetime as dt
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reprise import git
from reprise.errors import RepriseError

log = logging.getLogger(__name__)

PARTS = ("patch", "minor", "major")
UNRELEASED = re.compile(r"^## \[Unreleased\][^\n]*\n", re.MULTILINE)
NEXT_SECTION = re.compile(r"^## \[", re.MULTILINE)


def require_clean(repo: Path) -> None:
    """Refuse uncommitted changes and untracked files: a release must be a commit."""
    dirty = git.run("status", "--porcelain", "--untracked-files=all", cwd=repo)
    if dirty:
        # "XY path" per line; git.run strips the output, so the first line may have lost X's space
        files = ", ".join(line.split(maxsplit=1)[-1] for line in dirty.splitlines()[:5])
        raise RepriseError(
            f"The work tree has uncommitted changes ({files}).",
            "commit or stash them; a release is cut from a commit and nothing else.",
        )


def current_version(config_file: Path) -> str:
    """``current_version`` of a .bumpversion.cfg."""
    parser = configparser.ConfigParser()
    parser.read(config_file)
    return parser["bumpversion"]["current_version"]


def tag_name(config_file: Path, version: str) -> str:
    """The tag of a version: ``tag_name`` of the .bumpversion.cfg (``{new_version}`` replaced),
    else the version itself."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(config_file)
    template = parser["bumpversion"].get("tag_name", "{new_version}")
    return template.replace("{new_version}", version)


def next_version(config_file: Path, part: str) -> str:
    """The version a bump of ``part`` gives, as bump-my-version computes it."""
    if part not in PARTS:
        raise RepriseError(f"Unknown version part '{part}'.", f"use one of {', '.join(PARTS)}.")
    return (
        _bump_my_version(config_file, "show", "new_version", "--increment", part)
        .strip()
        .splitlines()[-1]
    )


def bump(config_file: Path, part: str) -> list[str]:
    """Rewrite the version in every file .bumpversion.cfg names (no commit, no tag); those
    files, relative to the config's folder."""
    # the CHANGELOG and the manifest are already changed: this is one step of a larger commit
    _bump_my_version(config_file, "bump", part, "--no-commit", "--no-tag", "--allow-dirty")
    return bumped_files(config_file)


def bumped_files(config_file: Path) -> list[str]:
    """The files a .bumpversion.cfg rewrites (its ``[bumpversion:file:NAME]`` sections)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(config_file)
    return [
        s.removeprefix("bumpversion:file:") for s in parser if s.startswith("bumpversion:file:")
    ]


def require_current_lock(repo: Path) -> None:
    """Refuse a uv.lock that does not match pyproject.toml (`uv lock --check`, offline): a tag
    whose lock is stale cannot be installed with `uv sync --frozen`."""
    if not (repo / "uv.lock").is_file():
        return
    uv = Path(sys.executable).parent / "uv"
    result = subprocess.run(
        [str(uv) if uv.is_file() else "uv", "lock", "--check", "--offline"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise RepriseError(
            f"uv.lock does not match pyproject.toml ({said[-1] if said else 'uv lock --check'}).",
            "run make lock and commit uv.lock; for the version, name uv.lock in .bumpversion.cfg "
            "([bumpversion:file:uv.lock]) so that each bump rewrites it.",
        )


def _bump_my_version(config_file: Path, *args: str) -> str:
    tool = Path(sys.executable).parent / "bump-my-version"
    result = subprocess.run(
        [str(tool), *args, "--config-file", str(config_file)],
        cwd=config_file.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RepriseError(
            f"bump-my-version {args[0]} failed: {result.stderr.strip()[-500:]}",
            f"check {config_file.name}.",
        )
    return result.stdout


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


def require_unreleased_entries(changelog_file: Path) -> None:
    if not unreleased_entries(changelog_file.read_text()):
        raise RepriseError(
            f"{changelog_file.name} has no entries under '## [Unreleased]'.",
            "write what changed there (Added / Changed / Fixed) and commit it before releasing.",
        )


def date_changelog(changelog_file: Path, version: str, day: dt.date) -> None:
    """Move the Unreleased entries under ``## [version] - day``; leave Unreleased empty."""
    text = changelog_file.read_text()
    match = UNRELEASED.search(text)
    if match is None:
        raise RepriseError(f"{changelog_file.name} has no '## [Unreleased]' section.", "add one.")
    heading = f"## [{version}] - {day.isoformat()}\n\n"
    rest = text[match.end() :].lstrip("\n")
    changelog_file.write_text(text[: match.end()] + "\n" + heading + rest)


@contextmanager
def atomic(repo: Path, tag: str) -> Iterator[None]:
    """Everything in the block or nothing: on any failure the branch, the files and the tags are
    put back as they were (the tree was clean when the block began)."""
    head = git.run("rev-parse", "HEAD", cwd=repo)
    try:
        yield
    except BaseException:
        log.error("release failed: putting %s back as it was at %s", repo, head[:12])
        if tag in git.run("tag", "--list", tag, cwd=repo).splitlines():
            git.run("tag", "-d", tag, cwd=repo)
        git.run("reset", "--hard", head, cwd=repo)
        git.run("clean", "-fd", cwd=repo)
        raise


def commit_and_tag(repo: Path, paths: list[str], version: str, tag: str, message: str) -> str:
    """Commit ``paths`` and make the annotated tag; returns the commit."""
    git.run("add", "--", *paths, cwd=repo)
    git.run("commit", "-m", message, cwd=repo)
    git.run("tag", "-a", tag, "-m", message, cwd=repo)
    return git.run("rev-parse", "HEAD", cwd=repo)
