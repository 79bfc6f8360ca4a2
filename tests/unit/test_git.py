"""reprise/git.py against a real git: answers stripped, a failure one line naming the command and
quoting git, credentials hidden in both."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reprise import git
from reprise.errors import RepriseError


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return tmp_path


def test_run_answers_stripped(repo: Path) -> None:
    assert git.run("rev-parse", "--is-inside-work-tree", cwd=repo) == "true"


def test_failure_names_the_command_and_quotes_git(repo: Path) -> None:
    with pytest.raises(RepriseError) as caught:
        git.run("rev-parse", "--verify", "no-such-ref", cwd=repo)
    said = str(caught.value)
    assert said.startswith(f"git rev-parse --verify no-such-ref failed in {repo}: fatal:")
    assert said.endswith("Fix: see git's message.")
    assert "\n" not in said
    assert isinstance(caught.value, git.GitError) and not caught.value.timed_out


def test_failure_hides_credentials(repo: Path) -> None:
    with pytest.raises(git.GitError) as caught:
        git.run("ls-remote", "http://user:s3cret@127.0.0.1:9/x.git", cwd=repo, prompt=False)
    assert "s3cret" not in str(caught.value)
    assert "http://***@127.0.0.1:9/x.git" in str(caught.value)
    assert caught.value.stderr  # git's own words are kept for a caller that says more


def test_attempt_is_none_when_git_says_no(repo: Path) -> None:
    assert git.attempt("rev-parse", "--verify", "-q", "no-such-ref", cwd=repo) is None
    assert git.attempt("rev-parse", "--is-inside-work-tree", cwd=repo) == "true"


def test_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(git.GitError, match=r"^git status cannot run in .*gone"):
        git.run("status", cwd=tmp_path / "gone")
