"""The components repository stands on its own: published to a real git server, a clone of it in
an empty folder, on a machine with only python3 and git, tests and releases itself, and the
project pins the tag it released; the project's own tests run the components' tests once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import (
    COMPONENTS,
    ROOT,
    GitServer,
    Workspace,
    copy_work_tree,
    git,
    latest_steps,
    run_reprise,
)

# one xdist group: the published clone is made once, in one worker
pytestmark = pytest.mark.xdist_group("components-standalone")

# Programs a bare machine has besides python3 and git: make, a shell and core utilities.
SYSTEM_PATH = "/usr/bin:/bin"
# The machine's settings kept: its home (caches, git and pip config), locale, and how it reaches
# the package index (index URLs, certificates, proxies).
KEPT = ("HOME", "LANG", "LC_ALL", "TMPDIR", "NO_PROXY", "no_proxy")
KEPT_PREFIXES = ("PIP_", "UV_", "SSL_", "CURL_", "REQUESTS_", "HTTP", "http")
# What the clone must install itself, never find on the machine.
NOT_ON_THE_MACHINE = ("uv", "ruff", "pytest", "mlflow", "bump-my-version")


@dataclass
class Clone:
    """The components published as standalone.git, cloned into an empty folder."""

    url: str
    path: Path
    env: dict[str, str]


def _python3() -> Path:
    """The CPython 3.11 the components' uv.lock needs, as a bare machine has it: this
    interpreter's base installation, not its virtual environment."""
    base = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    assert base.is_file(), base
    return base


def bare_machine_env(bin_dir: Path) -> dict[str, str]:
    """An environment whose PATH holds python3 and git (and the system's /usr/bin:/bin), no
    virtual environment, no reprise: as a second team's machine has it. The uv and pip caches in
    HOME are kept: they only save downloads."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "python3").symlink_to(_python3())
    (bin_dir / "git").symlink_to(shutil.which("git"))
    path = os.pathsep.join([str(bin_dir), SYSTEM_PATH])
    for program in NOT_ON_THE_MACHINE:
        assert shutil.which(program, path=path) is None, f"{program} is on {path}"
    env = {k: v for k, v in os.environ.items() if k in KEPT or k.startswith(KEPT_PREFIXES)}
    env.update(PATH=path, WANDB_MODE="disabled", GIT_TERMINAL_PROMPT="0")
    return env


def _publish(server: GitServer, name: str) -> str:
    """components-repo/ as it is in this work tree (committed or not, ignored files left out),
    pushed as the main branch of ``name``.git: what `make publish-components` would serve."""
    work = server.base.parent / f"{name}-work"
    copy_work_tree(work, COMPONENTS)
    bare = server.base / f"{name}.git"
    git("clone", "-q", "--bare", str(work), str(bare))
    return f"{server.url}/{name}.git"


@pytest.fixture(scope="session")
def clone(git_server: GitServer, tmp_path_factory: pytest.TempPathFactory) -> Clone:
    """The published components cloned into an empty folder, with a git identity."""
    url = _publish(git_server, "standalone")
    base = tmp_path_factory.mktemp("standalone")
    env = bare_machine_env(base / "bin")
    path = base / "clone"
    subprocess.run(["git", "clone", "-q", url, str(path)], env=env, check=True, timeout=120)
    git("config", "user.email", "team@reprise.invalid", cwd=path)
    git("config", "user.name", "Second team", cwd=path)
    return Clone(url, path, env)


def _make(clone: Clone, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", *args],
        cwd=clone.path,
        env=clone.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def _collected(*args: str, cwd: Path) -> list[str]:
    """The test ids pytest collects in ``cwd`` with ``args``."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


@pytest.fixture(scope="module")
def alone() -> list[str]:
    """The test ids the components' own configuration collects (once per module: a collection
    imports the components' dependencies, about 15 s)."""
    return _collected(cwd=COMPONENTS)


def test_the_project_collects_the_components_tests_once(alone: list[str]) -> None:
    """The project's configuration (its `make test-unit`) and the components' own collect the
    same tests, each once: step_kit's from its folder, never through a component's link to it."""
    here = _collected("-c", "pyproject.toml", "components-repo", cwd=ROOT)
    assert alone and sorted(here) == sorted(f"components-repo/{test}" for test in alone)
    assert len(set(alone)) == len(alone)
    assert [t for t in alone if "step_kit/" in t] == [
        t for t in alone if t.startswith("step_kit/tests/")
    ]
    assert any(t.startswith("step_kit/tests/") for t in alone)


@pytest.mark.e2e
def test_a_clone_tests_itself_with_only_python_and_git(clone: Clone, alone: list[str]) -> None:
    imported = subprocess.run(
        ["python3", "-c", "import reprise"],
        cwd=clone.path,
        env=clone.env,
        capture_output=True,
        timeout=60,
    )
    assert imported.returncode != 0  # the platform is nowhere on this machine
    result = _make(clone, "test")
    output = _output(result)
    assert result.returncode == 0, output[-4000:]
    assert "ruff check" in output and " passed" in output
    assert re.search(rf"^{len(alone)} passed", output, re.MULTILINE)  # the suite as collected here
    assert (clone.path / ".venv" / "bin" / "python").is_file()
    assert git("status", "--porcelain", cwd=clone.path) == ""  # environments are ignored


SMALL_SUITE = '''"""A stand-in for the unit tests: the release runs whatever is here."""


def test_passes() -> None:
    assert True
'''


@pytest.mark.e2e
def test_a_clone_releases_itself_and_the_project_pins_the_tag(
    clone: Clone, workspace: Workspace
) -> None:
    repo = clone.path
    # the real suite ran in the test above: the release's own test run takes a second here
    suites = [p.relative_to(repo).as_posix() for p in repo.glob("*/tests")]
    git("rm", "-r", "-q", *suites, cwd=repo)
    (repo / "get_data" / "tests").mkdir(exist_ok=True)  # its ignored __pycache__ stays
    (repo / "get_data" / "tests" / "test_small.py").write_text(SMALL_SUITE)
    changelog = repo / "CHANGELOG.md"
    changelog.write_text(
        changelog.read_text().replace(
            "## [Unreleased]\n", "## [Unreleased]\n\n### Changed\n- released by a second team\n", 1
        )
    )
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "release notes", cwd=repo)
    old = (repo / "VERSION").read_text().strip()
    major, minor, _ = old.split(".")
    new = f"{major}.{int(minor) + 1}.0"

    result = _make(clone, "release", "PART=minor")
    assert result.returncode == 0, _output(result)[-4000:]
    assert git("tag", "--list", cwd=repo).splitlines() == [new]  # unprefixed, as published
    assert git("cat-file", "-t", new, cwd=repo) == "tag"
    assert git("rev-parse", f"{new}^{{commit}}", cwd=repo) == git("rev-parse", "HEAD", cwd=repo)
    assert (repo / "VERSION").read_text().strip() == new
    assert f'version = "{new}"' in (repo / "pyproject.toml").read_text()
    assert f'name = "reprise-components"\nversion = "{new}"' in (repo / "uv.lock").read_text()
    assert f"## [{new}] - " in changelog.read_text()
    assert git("status", "--porcelain", cwd=repo) == ""
    assert f"tag {new}" in _output(result)
    subprocess.run(
        ["git", "push", "-q", "origin", "main", new],
        cwd=repo,
        env=clone.env,
        check=True,
        timeout=120,
    )
    sha = git("rev-parse", f"{new}^{{commit}}", cwd=repo)
    # the tag holds, in every component folder, a link to the one step_kit (no copy, no install)
    components = sorted(p.parent.name for p in repo.glob("*/MLproject"))
    entries = [ln.split(maxsplit=3) for ln in git("ls-tree", "-r", new, cwd=repo).splitlines()]
    links = {path: mode for mode, _, _, path in entries if path.endswith("/step_kit")}
    assert links == {f"{name}/step_kit": "120000" for name in components}
    for name in components:
        assert git("cat-file", "-p", f"{new}:{name}/step_kit", cwd=repo) == "../step_kit"

    run = run_reprise(
        workspace,
        "--steps",
        "get_data,basic_cleaning",
        "etl.sample=sample1.parquet",
        f"components.repository={clone.url}",
        f"components.version={new}",
    )
    assert run.returncode == 0, _output(run)[-4000:]
    _, steps = latest_steps(workspace)
    assert sorted(steps) == ["basic_cleaning", "get_data"]
    for name, step in steps.items():
        assert step.info.status == "FINISHED", name
        assert step.data.tags["mlflow.source.git.commit"] == sha, name
        assert step.data.tags["reprise.component.version"] == new, name
