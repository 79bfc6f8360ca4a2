"""`make release-components` and `make publish-components`, run as a user runs them, on a
throwaway clone of this repository and a real git server."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from reprise.versioning import unreleased_entries
from support import ROOT, GitServer, Workspace, git, mlflow_run, reprise, workspace_env

# one xdist group per store: its fixtures are made once, in one worker
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("components-release")]

PREFIX = "components-repo"
TAG_PREFIX = "components-"
RELEASE_FILES = (".bumpversion.cfg", "VERSION", "CHANGELOG.md", "pyproject.toml", "uv.lock")
SMALL_SUITE = '''"""A stand-in for the components' unit tests: the release runs whatever is here."""


def test_passes() -> None:
    assert True
'''
FAILING_TEST = """

def test_fails_{n}() -> None:
    assert False
"""


@dataclass
class Released:
    """A clone of this repository after `release-components --part minor`."""

    repo: Path
    old: str
    new: str
    head_before: str
    result: subprocess.CompletedProcess

    @property
    def tag(self) -> str:
        return f"{TAG_PREFIX}{self.new}"


def _clone(dest: Path) -> Path:
    """A clone of this repository's committed files, with an identity and release notes."""
    git("clone", "-q", str(ROOT), str(dest))
    git("config", "user.email", "test@reprise.invalid", cwd=dest)
    git("config", "user.name", "Reprise tests", cwd=dest)
    changelog = dest / PREFIX / "CHANGELOG.md"
    if not unreleased_entries(changelog.read_text()):  # released upstream already: add notes
        text = changelog.read_text().replace(
            "## [Unreleased]\n", "## [Unreleased]\n\n### Changed\n- a test entry\n", 1
        )
        changelog.write_text(text)
        _commit(dest, "release notes")
    return dest


def _commit(repo: Path, message: str) -> None:
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", message, cwd=repo)


def _reprise(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m reprise ARGS`` in ``repo``: it imports that clone's reprise, whose ROOT it is."""
    return reprise(*args, env=workspace_env(repo.parent), cwd=repo, timeout=600)


def _version(repo: Path) -> str:
    return (repo / PREFIX / "VERSION").read_text().strip()


def _bumped(version: str, part: str) -> str:
    major, minor, patch = (int(n) for n in version.split("."))
    return {
        "major": f"{major + 1}.0.0",
        "minor": f"{major}.{minor + 1}.0",
        "patch": f"{major}.{minor}.{patch + 1}",
    }[part]


def _state(repo: Path) -> dict[str, str]:
    """What a refused or failed release must leave as it was."""
    state = {
        "HEAD": git("rev-parse", "HEAD", cwd=repo),
        "tags": git("show-ref", "--tags", cwd=repo) if git("tag", cwd=repo) else "",
        "status": git("status", "--porcelain", "--untracked-files=all", cwd=repo),
    }
    for name in RELEASE_FILES:
        state[name] = (repo / PREFIX / name).read_text()
    return state


def _small_suite(repo: Path, failing: int = 0) -> None:
    """Replace the components' unit tests with one passing test and ``failing`` failing ones,
    committed: the release's test run then takes a second instead of half a minute."""
    git("rm", "-r", "-q", *(str(p) for p in (repo / PREFIX).glob("*/tests")), cwd=repo)
    suite = SMALL_SUITE + "".join(FAILING_TEST.format(n=n) for n in range(failing))
    (repo / PREFIX / "get_data" / "tests").mkdir()
    (repo / PREFIX / "get_data" / "tests" / "test_small.py").write_text(suite)
    _commit(repo, f"a small test suite, {failing} failing")


def _ls_remote(url: str) -> dict[str, str]:
    out = git("ls-remote", url)
    return {ref: sha for sha, ref in (line.split("\t") for line in out.splitlines())}


def _split(repo: Path, rev: str) -> str:
    return git("subtree", "split", "-q", f"--prefix={PREFIX}", rev, cwd=repo).splitlines()[-1]


def _output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Released:
    """One real release, shared by the tests that read it. Its test run is the small suite: the
    components' own tests run once per session, in the clone that tests itself
    (test_components_standalone_e2e.py)."""
    repo = _clone(tmp_path_factory.mktemp("released") / "repo")
    _small_suite(repo)
    old = _version(repo)
    head_before = git("rev-parse", "HEAD", cwd=repo)
    result = _reprise(repo, "release-components", "--part", "minor")
    assert result.returncode == 0, _output(result)[-4000:]
    return Released(repo, old, _bumped(old, "minor"), head_before, result)


@dataclass
class Published:
    url: str
    refs: dict[str, str]


@pytest.fixture(scope="module")
def published(released: Released, git_server: GitServer) -> Published:
    """The released components pushed to published.git on the git server."""
    git("init", "-q", "--bare", str(git_server.base / "published.git"))
    url = f"{git_server.url}/published.git"
    result = _reprise(released.repo, "publish-components", url)
    assert result.returncode == 0, _output(result)[-4000:]
    return Published(url, _ls_remote(url))


# --- release ------------------------------------------------------------------------------------


def test_release_bumps_dates_commits_and_tags(released: Released) -> None:
    repo, new = released.repo, released.new
    assert _version(repo) == new
    assert f"current_version = {new}" in (repo / PREFIX / ".bumpversion.cfg").read_text()
    changelog = (repo / PREFIX / "CHANGELOG.md").read_text()
    before = git("show", f"{released.head_before}:{PREFIX}/CHANGELOG.md", cwd=repo)
    entries = unreleased_entries(before + "\n")
    heading = f"## [{new}] - {dt.date.today().isoformat()}"
    assert f"## [Unreleased]\n\n{heading}\n" in changelog  # Unreleased empty, right above
    assert changelog.index(heading) < changelog.index(entries)  # old entries under the heading
    assert unreleased_entries(changelog) == ""
    # one commit, the components' release files only: the project's own version is untouched
    assert git("rev-parse", "HEAD~1", cwd=repo) == released.head_before
    assert git("log", "-1", "--format=%s", cwd=repo) == f"components {new}"
    changed = git("diff", "--name-only", "HEAD~1", "HEAD", cwd=repo).splitlines()
    assert sorted(changed) == sorted(f"{PREFIX}/{name}" for name in RELEASE_FILES)
    assert git("cat-file", "-t", released.tag, cwd=repo) == "tag"
    assert git("rev-parse", f"{released.tag}^{{commit}}", cwd=repo) == git(
        "rev-parse", "HEAD", cwd=repo
    )
    assert git("status", "--porcelain", cwd=repo) == ""
    log = _output(released.result)
    assert released.tag in log and "passed" in log and "publish-components" in log


def test_components_make_release_inside_the_project_is_the_same_release(tmp_path: Path) -> None:
    """components-repo's own `make release` in single-repo mode: its own environment, the same
    release.py, the prefixed tag; the project's version untouched."""
    repo = _clone(tmp_path / "repo")
    _small_suite(repo)
    old = _version(repo)
    new = _bumped(old, "patch")
    env = {k: v for k, v in workspace_env(repo.parent).items() if k != "VIRTUAL_ENV"}
    result = subprocess.run(
        ["make", "release", "PART=patch"],
        cwd=repo / PREFIX,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, _output(result)[-4000:]
    assert _version(repo) == new
    assert git("tag", "--list", cwd=repo).splitlines() == [f"{TAG_PREFIX}{new}"]
    changed = git("diff", "--name-only", "HEAD~1", "HEAD", cwd=repo).splitlines()
    assert sorted(changed) == sorted(f"{PREFIX}/{name}" for name in RELEASE_FILES)
    assert (repo / PREFIX / ".venv" / "bin" / "bump-my-version").is_file()  # its own environment
    assert git("status", "--porcelain", "--untracked-files=all", cwd=repo) == ""


def test_release_refuses_a_dirty_tree(tmp_path: Path) -> None:
    repo = _clone(tmp_path / "repo")
    (repo / PREFIX / "get_data" / "fetch.py").write_text("# edited\n", encoding="utf-8")
    state = _state(repo)
    result = _reprise(repo, "release-components", "--part", "patch")
    assert result.returncode == 1
    assert "uncommitted changes" in result.stderr and "fetch.py" in result.stderr
    assert "Traceback" not in result.stderr
    assert _state(repo) == state


def test_release_refuses_an_empty_unreleased_section(released: Released) -> None:
    state = _state(released.repo)
    result = _reprise(released.repo, "release-components", "--part", "patch")
    assert result.returncode == 1
    assert "no entries under '## [Unreleased]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert _state(released.repo) == state


def test_release_refuses_an_existing_tag(tmp_path: Path) -> None:
    repo = _clone(tmp_path / "repo")
    tag = f"{TAG_PREFIX}{_bumped(_version(repo), 'patch')}"
    git("tag", "-a", tag, "-m", "made by hand", cwd=repo)
    state = _state(repo)
    result = _reprise(repo, "release-components", "--part", "patch")
    assert result.returncode == 1
    assert f"Tag {tag} already exists" in result.stderr
    assert _state(repo) == state


def test_release_refuses_failing_unit_tests_naming_the_count(tmp_path: Path) -> None:
    repo = _clone(tmp_path / "repo")
    _small_suite(repo, failing=2)
    state = _state(repo)
    result = _reprise(repo, "release-components", "--part", "patch")
    assert result.returncode == 1
    assert "2 of the components' unit tests failed" in result.stderr
    assert "Traceback" not in result.stderr
    assert _state(repo) == state


def test_release_failing_midway_leaves_nothing(tmp_path: Path) -> None:
    """A pre-commit hook refuses the release commit: no commit, no tag, files as they were."""
    repo = _clone(tmp_path / "repo")
    _small_suite(repo)
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'hook says no' >&2\nexit 1\n")
    hook.chmod(0o755)
    state = _state(repo)
    old = _version(repo)
    result = _reprise(repo, "release-components", "--part", "minor")
    assert result.returncode == 1
    assert "hook says no" in result.stderr
    assert "Traceback" not in result.stderr
    assert _state(repo) == state
    assert _version(repo) == old
    assert git("status", "--porcelain", "--untracked-files=all", cwd=repo) == ""
    assert git("tag", "--list", f"{TAG_PREFIX}{_bumped(old, 'minor')}", cwd=repo) == ""


# --- publish ------------------------------------------------------------------------------------


def test_publish_pushes_the_components_as_a_repository(
    released: Released, published: Published, tmp_path: Path, workspace: Workspace
) -> None:
    refs = published.refs
    local_tags = git("tag", "--list", f"{TAG_PREFIX}*", cwd=released.repo).splitlines()
    assert f"refs/tags/{released.new}" in refs and "refs/heads/main" in refs
    assert sorted(r for r in refs if r.startswith("refs/tags/") and not r.endswith("^{}")) == (
        sorted(f"refs/tags/{tag.removeprefix(TAG_PREFIX)}" for tag in local_tags)
    )
    assert not any(TAG_PREFIX in ref for ref in refs)
    assert refs["refs/heads/main"] == _split(released.repo, "HEAD")
    assert refs[f"refs/tags/{released.new}"] == _split(released.repo, f"{released.tag}^{{commit}}")

    checkout = tmp_path / "checkout"
    git("clone", "-q", "-b", "main", published.url, str(checkout))
    assert (checkout / "get_data" / "MLproject").is_file()
    assert (checkout / "VERSION").read_text().strip() == released.new
    assert not (checkout / PREFIX).exists()
    link = checkout / "get_data" / "step_kit"
    assert link.is_symlink() and str(link.readlink()) == "../step_kit"
    assert (link / "step.py").is_file()

    result = mlflow_run(
        workspace.env,
        workspace.path,
        f"{published.url}#get_data",
        released.new,
        "-P",
        "sample=sample1.parquet",
    )
    assert result.returncode == 0, _output(result)[-4000:]
    (run,) = MlflowClient(tracking_uri=workspace.tracking_uri).search_runs(["0"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.source.git.commit"] == refs[f"refs/tags/{released.new}"]
    assert "reprise.output.raw_data.sha256" in run.data.tags


def test_publishing_again_is_idempotent(released: Released, published: Published) -> None:
    result = _reprise(released.repo, "publish-components", published.url)
    assert result.returncode == 0, _output(result)[-4000:]
    assert "up to date" in result.stderr
    assert _ls_remote(published.url) == published.refs


def test_publish_never_moves_a_published_tag(
    released: Released, published: Published, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(released.repo, repo, symlinks=True)
    git("tag", "-f", "-a", released.tag, "-m", "moved", "HEAD~1", cwd=repo)
    moved = _split(repo, "HEAD~1")
    result = _reprise(repo, "publish-components", published.url)
    assert result.returncode == 1
    assert released.tag in result.stderr and f"Tag {released.new}" in result.stderr
    assert published.refs[f"refs/tags/{released.new}"] in result.stderr and moved in result.stderr
    assert "Traceback" not in result.stderr
    assert _ls_remote(published.url) == published.refs


def test_publish_refuses_a_diverged_main(
    released: Released, git_server: GitServer, tmp_path: Path
) -> None:
    git("init", "-q", "--bare", str(git_server.base / "diverged.git"))
    url = f"{git_server.url}/diverged.git"
    assert _reprise(released.repo, "publish-components", url).returncode == 0
    other = tmp_path / "other"
    git("clone", "-q", "-b", "main", url, str(other))
    git("-c", "user.email=o@reprise.invalid", "-c", "user.name=Other", "commit", "-q",
        "--allow-empty", "-m", "published from elsewhere", cwd=other)  # fmt: skip
    git("push", "-q", "origin", "main", cwd=other)
    refs = _ls_remote(url)
    result = _reprise(released.repo, "publish-components", url)
    assert result.returncode == 1
    assert "is not an ancestor" in result.stderr and refs["refs/heads/main"] in result.stderr
    assert "Traceback" not in result.stderr
    assert _ls_remote(url) == refs


def test_publish_never_shows_credentials(released: Released, git_server: GitServer) -> None:
    url = git_server.url.replace("git://", "git://someone:s3cret@") + "/absent.git"
    result = _reprise(released.repo, "publish-components", url)
    assert result.returncode == 1
    assert "s3cret" not in _output(result)
    assert "***@" in result.stderr
