"""End to end: releases that freeze everything. The project and the components repository are
both served by a git daemon on 127.0.0.1; releases are cut, rerun from an empty folder with
`mlflow run <project URI>#project -v X.Y.Z`, verified digest by digest, and refused when they
could not be reproduced."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from support import (
    ROOT,
    ComponentsRemote,
    GitServer,
    Workspace,
    git,
    latest_steps,
    mlflow_run,
    workspace_env,
)

# one xdist group per store: its fixtures are made once, in one worker
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("release")]


@dataclass
class Project:
    """A clone of this repository with its components pinned to the served components repository,
    pushed to the git server as reprise.git."""

    work: Path
    url: str
    workspace: Workspace

    def reprise(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        """``python -m reprise ARGS`` in the clone: the clone's own reprise package runs."""
        return subprocess.run(
            [sys.executable, "-m", "reprise", *args],
            cwd=self.work,
            env=self.workspace.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def state(self) -> tuple[str, str, str]:
        """HEAD, the tags, and the work tree's status: what a refused release must not change."""
        return (
            git("rev-parse", "HEAD", cwd=self.work),
            git("tag", "--list", cwd=self.work),
            git("status", "--porcelain", "--untracked-files=all", cwd=self.work),
        )

    def set_config(self, path: str, edit) -> None:
        """Change a YAML file of project/config with ``edit(data)``; no commit."""
        file = self.work / "project" / "config" / path
        data = yaml.safe_load(file.read_text())
        edit(data)
        file.write_text(yaml.safe_dump(data, sort_keys=False))

    def commit(self, message: str) -> None:
        git("commit", "-qam", message, cwd=self.work)


def output_of(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def pin(version: str, repository: str | None = None):
    def edit(config: dict) -> None:
        if repository is not None:
            config["components"]["repository"] = repository
        config["components"]["version"] = version
        config["components"]["env_manager"] = "local"  # uv environments are tested elsewhere

    return edit


@pytest.fixture(scope="module")
def project(
    git_server: GitServer, components_remote: ComponentsRemote, tmp_path_factory
) -> Project:
    base = tmp_path_factory.mktemp("release")
    work = base / "work"
    git("clone", "-q", str(ROOT), str(work))
    git("config", "user.email", "release@reprise.invalid", cwd=work)
    git("config", "user.name", "Reprise release tests", cwd=work)
    env = workspace_env(base)
    project = Project(work, f"{git_server.url}/reprise.git", Workspace(base, env))
    project.set_config("config.yaml", pin("0.1.0", components_remote.url))
    project.set_config("etl/default.yaml", lambda etl: etl.update(sample="sample1.parquet"))
    project.commit("Pin the components to 0.1.0 of the served repository")
    git("init", "-q", "--bare", str(git_server.base / "reprise.git"))
    git("remote", "set-url", "origin", project.url, cwd=work)
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=work)
    return project


@pytest.fixture(scope="module")
def released(project: Project, components_remote: ComponentsRemote) -> Project:
    """Release 1.0.0 (components 0.1.0), then 1.1.0 (components 0.2.0), both pushed."""
    first = project.reprise("release", "--part", "major")
    assert first.returncode == 0, output_of(first)[-4000:]
    project.set_config("config.yaml", pin("0.2.0"))
    changelog = project.work / "CHANGELOG.md"
    changelog.write_text(
        changelog.read_text().replace(
            "## [Unreleased]\n", "## [Unreleased]\n\n### Changed\n- Components 0.2.0.\n", 1
        )
    )
    project.commit("Components 0.2.0")
    second = project.reprise("release", "--part", "minor")
    assert second.returncode == 0, output_of(second)[-4000:]
    git("push", "-q", "--follow-tags", "origin", "HEAD:refs/heads/main", cwd=project.work)
    return project


def test_a_release_freezes_everything(released: Project, components_remote: ComponentsRemote):
    work = released.work
    assert git("cat-file", "-t", "1.0.0", cwd=work) == "tag"  # annotated
    assert git("cat-file", "-t", "1.1.0", cwd=work) == "tag"
    first = yaml.safe_load((work / "releases" / "1.0.0.yaml").read_text())
    second = yaml.safe_load((work / "releases" / "1.1.0.yaml").read_text())
    assert first["version"] == "1.0.0" and second["version"] == "1.1.0"
    assert first["project"]["commit"] == git("rev-parse", "1.0.0^", cwd=work)
    for step, component in first["components"].items():
        assert component["tag"] == "0.1.0", step
        assert component["sha"] == components_remote.tags["0.1.0"], step
        assert component["repository"] == components_remote.url
        assert released.work.name not in component["repository"]
    assert {c["sha"] for c in second["components"].values()} == {components_remote.tags["0.2.0"]}
    assert first["config"]["components"]["version"] == "0.1.0"
    assert first["data"]["input"]["sha256"] == (
        "4af4184c7c508760ca7412c0f34ab7169a9294770ee68c4eec4ad3162ddf44df"
    )
    assert "test_model.predictions" in first["outputs"]
    assert first["outputs"]["train_val_test_split.test_data"]["digest"]
    assert first["environments"]["train_model"]["requirements"]
    assert len(first["environments"]["train_model"]["sha256"]) == 64
    assert first["metrics"]["test.roc_auc"] > 0.85
    assert first["mlflow"]["model"] == {
        "name": "adult_income",
        "version": 1,
        "uri": "models:/adult_income/1",
    }
    changelog = (work / "CHANGELOG.md").read_text()
    today = dt.date.today().isoformat()
    assert f"## [1.1.0] - {today}\n\n### Changed\n- Components 0.2.0." in changelog
    assert f"## [1.0.0] - {today}" in changelog
    assert 'version = "1.1.0"' in (work / "pyproject.toml").read_text()
    assert "current_version = 1.1.0" in (work / ".bumpversion.cfg").read_text()
    listing = released.reprise("releases")
    assert listing.returncode == 0
    assert "1.0.0" in listing.stdout and "1.1.0" in listing.stdout


def test_rerun_from_an_empty_folder_reproduces_the_release(
    released: Project, components_remote: ComponentsRemote, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = mlflow_run(
        released.workspace.env,
        empty,
        f"{released.url}#project",
        "1.0.0",
        experiment="reprise-test",
    )
    assert result.returncode == 0, output_of(result)[-4000:]
    rerun, children = latest_steps(released.workspace, "tags.`reprise.release` = '1.0.0'")
    # the release's components, not the 0.2.0 that the project's config says today
    assert {c.data.tags["reprise.test.marker"] for c in children.values()} == {"old"}
    verify = released.reprise("verify", "1.0.0", "--run", rerun.info.run_id)
    assert verify.returncode == 0, output_of(verify)[-4000:]
    assert " 0 of " not in verify.stdout and "identical." in verify.stdout
    assert "NO" not in verify.stdout.split("identical.")[0].split("expected -> actual")[1]


def test_make_verify_reruns_and_compares(released: Project) -> None:
    result = released.reprise("verify", "1.1.0")
    assert result.returncode == 0, output_of(result)[-4000:]
    assert "identical." in result.stdout


def test_restore_puts_the_release_and_its_components_in_a_folder(
    released: Project, components_remote: ComponentsRemote, tmp_path: Path
) -> None:
    dest = tmp_path / "restored"
    result = released.reprise("restore", "1.0.0", str(dest))
    assert result.returncode == 0, output_of(result)[-4000:]
    project = dest / "project-repo"
    assert git("rev-parse", "HEAD", cwd=project) == git("rev-parse", "1.0.0^{commit}", cwd=project)
    sha = components_remote.tags["0.1.0"]
    component = dest / "components" / sha / "get_data"
    assert (component / "MLproject").is_file() and (component / "step_kit").is_symlink()
    assert git("rev-parse", "HEAD", cwd=component) == sha
    assert "get_data" in (dest / "RELEASE.md").read_text()


def test_promote_aliases_the_release_model_prod(released: Project) -> None:
    result = released.reprise("promote", "1.0.0")
    assert result.returncode == 0, output_of(result)[-4000:]
    client = MlflowClient(tracking_uri=released.workspace.tracking_uri)
    assert int(client.get_model_version_by_alias("adult_income", "prod").version) == 1
    # compiled for serving now, so the first predict of prod starts fast
    assert "model of release 1.0.0 compiled for serving" in output_of(result)
    assert list((released.workspace.path / "cache" / "scorers").rglob("*.npz"))
    rollforward = released.reprise("promote", "1.1.0")
    assert rollforward.returncode == 0
    assert int(client.get_model_version_by_alias("adult_income", "prod").version) == 2


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ("dirty", "The work tree has uncommitted changes"),
        ("branch", "which is a branch of"),
        ("local", "uses the local folder 'components-repo'"),
        ("unreleased", "has no entries under '## [Unreleased]'"),
    ],
)
def test_a_release_is_refused(released: Project, change: str, phrase: str) -> None:
    work = released.work
    changelog = work / "CHANGELOG.md"
    if change != "unreleased":  # give the CHANGELOG an entry, so only the change is wrong
        changelog.write_text(
            changelog.read_text().replace(
                "## [Unreleased]\n", "## [Unreleased]\n\n### Fixed\n- Something.\n", 1
            )
        )
        released.commit("An entry")
    if change == "dirty":
        (work / "notes.txt").write_text("not committed\n")
    elif change == "branch":
        released.set_config("config.yaml", pin("main"))
        released.commit("Pin a branch")
    elif change == "local":
        released.set_config("config.yaml", pin(None, "components-repo"))
        released.commit("Pin a local folder")
    before = released.state()
    try:
        result = released.reprise("release", "--part", "patch")
        assert result.returncode != 0
        assert phrase in output_of(result), output_of(result)[-3000:]
        assert released.state() == before
        assert not (work / "releases" / "1.1.1.yaml").exists()
    finally:
        (work / "notes.txt").unlink(missing_ok=True)
        git("reset", "-q", "--hard", "1.1.0", cwd=work)


def test_a_failure_mid_release_leaves_nothing(released: Project) -> None:
    work = released.work
    changelog = work / "CHANGELOG.md"
    changelog.write_text(
        changelog.read_text().replace(
            "## [Unreleased]\n", "## [Unreleased]\n\n### Fixed\n- Something.\n", 1
        )
    )
    released.commit("An entry")
    hook = work / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'pre-commit hook says no' >&2\nexit 1\n")
    hook.chmod(0o755)
    before = released.state()
    try:
        result = released.reprise("release", "--part", "patch")
        assert result.returncode != 0
        assert "pre-commit hook says no" in output_of(result)
        assert released.state() == before
        assert "1.1.1" not in git("tag", "--list", cwd=work)
        assert not (work / "releases" / "1.1.1.yaml").exists()
        assert "current_version = 1.1.0" in (work / ".bumpversion.cfg").read_text()
    finally:
        hook.unlink()
        git("reset", "-q", "--hard", "1.1.0", cwd=work)


def test_a_moved_component_tag_is_refused(
    released: Project, components_remote: ComponentsRemote, tmp_path: Path
) -> None:
    """Runs last: it moves tag 0.1.0 of the served components repository, then puts it back."""
    bare = components_remote.bare
    old, new = components_remote.tags["0.1.0"], components_remote.tags["0.2.0"]
    git("tag", "-f", "0.1.0", new, cwd=bare)
    try:
        result = mlflow_run(
            released.workspace.env,
            tmp_path,
            f"{released.url}#project",
            "1.0.0",
            experiment="reprise-test",
        )
        assert result.returncode != 0
        output = output_of(result)
        assert f"Tag '0.1.0' of {components_remote.url} now points to {new}" in output
        assert f"this release was cut with {old}" in output
    finally:
        git("tag", "-f", "0.1.0", old, cwd=bare)


def test_bumpversion_cfg_also_works_with_bump2version(tmp_path: Path) -> None:
    """The same .bumpversion.cfg drives bump2version 1.0.1 (installed apart in .tools/)."""
    tool = ROOT / ".tools" / "bin" / "bump2version"
    for name in (".bumpversion.cfg", "pyproject.toml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    current = yaml.safe_load(
        (ROOT / ".bumpversion.cfg")
        .read_text()
        .split("[bumpversion]")[1]
        .split("\n\n")[0]
        .replace(" = ", ": ")
    )["current_version"]
    major = int(current.split(".")[0]) + 1
    result = subprocess.run(
        [str(tool), "--allow-dirty", "--no-commit", "--no-tag", "major"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f'version = "{major}.0.0"' in (tmp_path / "pyproject.toml").read_text()
    assert f"current_version = {major}.0.0" in (tmp_path / ".bumpversion.cfg").read_text()
