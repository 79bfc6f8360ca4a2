"""End to end: releases that freeze everything. The project and the components repository are
both served by a git daemon on 127.0.0.1; releases are cut, rerun from an empty folder with
`mlflow run <project URI>#project -v X.Y.Z`, verified digest by digest, and refused when they
could not be reproduced."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from support import (
    CODE_VERSION_TAG,
    ROOT,
    ComponentsRemote,
    GitServer,
    Workspace,
    git,
    latest_steps,
    mlflow_run,
    reprise,
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
    today: str = ""  # the commit of this repository that was cloned: today's platform

    def reprise(
        self,
        *args: str,
        timeout: int = 900,
        workspace: Workspace | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess:
        """``python -m reprise ARGS`` in the clone (or in another checkout ``cwd``): that
        checkout's own reprise package runs."""
        return reprise(
            *args, env=(workspace or self.workspace).env, cwd=cwd or self.work, timeout=timeout
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


def use_model(name: str):
    """Make config group `model` default to ``name`` in the project's config.yaml (no commit)."""

    def edit(project: Project) -> None:
        def choose(config: dict) -> None:
            (at,) = [
                i for i, d in enumerate(config["defaults"]) if isinstance(d, dict) and "model" in d
            ]
            config["defaults"][at] = {"model": name}

        project.set_config("config.yaml", choose)

    return edit


# The last commit before the pipeline became the project's declaration (project/config/pipeline/).
BEFORE_DECLARATIONS = "22b896126c053f5fc4f7d2fdcf33f61525f2aef5"


@pytest.fixture(scope="module")
def project(
    git_server: GitServer, components_remote: ComponentsRemote, tmp_path_factory
) -> Project:
    base = tmp_path_factory.mktemp("release")
    work = base / "work"
    git("clone", "-q", str(ROOT), str(work))
    today = git("rev-parse", "HEAD", cwd=work)
    # the platform as it was before pipelines were declared: release 1.0.0 is cut with it
    git("checkout", "-q", "-B", "main", BEFORE_DECLARATIONS, cwd=work)
    git("config", "user.email", "release@reprise.invalid", cwd=work)
    git("config", "user.name", "Reprise release tests", cwd=work)
    env = workspace_env(base)
    project = Project(work, f"{git_server.url}/reprise.git", Workspace(base, env), today)
    project.set_config("config.yaml", pin("0.1.0", components_remote.url))
    project.set_config("etl/default.yaml", lambda etl: etl.update(sample="sample1.parquet"))
    project.commit("Pin the components to 0.1.0 of the served repository")
    git("init", "-q", "--bare", str(git_server.base / "reprise.git"))
    git("remote", "set-url", "origin", project.url, cwd=work)
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=work)
    return project


@pytest.fixture(scope="module")
def released(project: Project, components_remote: ComponentsRemote) -> Project:
    """Release 1.0.0 (components 0.1.0, gradient boosting fitted on the machine's two OpenMP
    threads) cut by the platform of BEFORE_DECLARATIONS; then the platform of this checkout and
    release 1.1.0 (components 0.2.0, a random forest with n_jobs=2), both pushed. Each must
    digest the same at its reruns, whatever their thread count, and 1.0.0 must still rerun from
    its tag; the decision tree, the default model, is what every other end-to-end test runs."""
    use_model("hist_gradient_boosting")(project)
    project.commit("Gradient boosting")
    first = project.reprise("release", "--part", "major")
    assert first.returncode == 0, output_of(first)[-4000:]
    # today's platform and project config; the release history (CHANGELOG, versions) stays
    kept = ("CHANGELOG.md", "releases", ".bumpversion.cfg", "pyproject.toml", "uv.lock")
    git("checkout", project.today, "--", ".", *(f":!{path}" for path in kept), cwd=project.work)
    project.set_config("config.yaml", pin("0.2.0", components_remote.url))
    project.set_config("etl/default.yaml", lambda etl: etl.update(sample="sample1.parquet"))
    use_model("random_forest")(project)
    # small enough to be compiled for serving; on two threads its digest varied before the fix
    project.set_config(
        "model/random_forest.yaml",
        lambda model: model.update(n_jobs=2, n_estimators=50, max_depth=8),
    )
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
    raw = "4af4184c7c508760ca7412c0f34ab7169a9294770ee68c4eec4ad3162ddf44df"
    assert first["data"]["input"]["sha256"] == raw  # as the platform wrote it before declarations
    assert second["data"]["get_data.raw_data"]["sha256"] == raw
    assert "pipeline" not in first["config"] and "steps" in second["config"]["pipeline"]
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
    # the tag's lock is consistent: uv sync --frozen installs the tag as it is
    assert 'name = "reprise"\nversion = "1.1.0"' in (work / "uv.lock").read_text()
    lock_check = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "uv"), "lock", "--check", "--offline"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert lock_check.returncode == 0, lock_check.stderr
    listing = released.reprise("releases")
    assert listing.returncode == 0
    assert "1.0.0" in listing.stdout and "1.1.0" in listing.stdout


def test_releases_are_read_from_tags_here_and_on_origin(released: Project, tmp_path: Path):
    """Every release tag is a release, whatever is checked out; with --remote the origin's too,
    and a release only the origin has is fetched when a command names it."""
    old = tmp_path / "old"
    git("clone", "-q", released.url, str(old))
    git("checkout", "-q", "1.0.0", cwd=old)  # its tree holds only releases/1.0.0.yaml
    assert not (old / "releases" / "1.1.0.yaml").exists()
    listing = released.reprise("releases", cwd=old)
    assert listing.returncode == 0, output_of(listing)[-3000:]
    assert [line.split()[0] for line in listing.stdout.splitlines()[1:]] == ["1.0.0", "1.1.0"]

    bare = tmp_path / "no-tags"
    git("clone", "-q", "--no-tags", "-b", "main", released.url, str(bare))
    assert not git("tag", "--list", cwd=bare)

    def reprise(*args: str) -> subprocess.CompletedProcess:
        return released.reprise(*args, cwd=bare)

    assert "No releases yet" in reprise("releases").stdout
    remote = reprise("releases", "--remote")
    assert remote.returncode == 0, output_of(remote)[-3000:]
    rows = {line.split()[0]: line for line in remote.stdout.splitlines()[1:3]}
    assert set(rows) == {"1.0.0", "1.1.0"} and all(r.endswith("origin") for r in rows.values())
    assert not git("tag", "--list", cwd=bare)  # listing the origin's tags changes no local tag
    restored = reprise("restore", "1.1.0", str(tmp_path / "restored"))
    assert restored.returncode == 0, output_of(restored)[-3000:]
    assert "tag 1.1.0 fetched from origin" in output_of(restored)
    assert (tmp_path / "restored" / "project-repo" / "releases" / "1.1.0.yaml").is_file()
    unknown = reprise("verify", "9.9.9")
    assert unknown.returncode == 1
    assert "There is no release 9.9.9" in unknown.stderr and "1.1.0" in unknown.stderr


def test_rerun_in_another_store_reproduces_the_release_and_promotes_its_own_model(
    released: Project, components_remote: ComponentsRemote, tmp_path: Path
) -> None:
    """A fresh machine's store, where version 1 of the model is another model: promote refuses
    it, naming both; after a rerun from an empty folder, the rerun's version is promoted."""
    store = Workspace(tmp_path, workspace_env(tmp_path))
    client = MlflowClient(tracking_uri=store.tracking_uri)
    other = client.create_run(client.create_experiment("elsewhere"))
    client.create_registered_model("adult_income")
    client.create_model_version(
        "adult_income", f"runs:/{other.info.run_id}/model", run_id=other.info.run_id
    )
    refused = released.reprise("promote", "1.0.0", workspace=store)
    assert refused.returncode == 1
    assert "No version of model adult_income in the tracking store" in refused.stderr
    assert f"version 1 here is the model of run {other.info.run_id}" in refused.stderr
    assert "comes from release 1.0.0" in refused.stderr
    assert client.get_registered_model("adult_income").aliases == {}

    empty = tmp_path / "empty"
    empty.mkdir()
    # cut on two OpenMP threads, rerun on one: gradient boosting's digests must not move
    one_thread = {**store.env, "OMP_NUM_THREADS": "1"}
    result = mlflow_run(
        one_thread, empty, f"{released.url}#project", "1.0.0", experiment="reprise-test"
    )
    assert result.returncode == 0, output_of(result)[-4000:]
    rerun, children = latest_steps(store, "tags.`reprise.release` = '1.0.0'")
    # the release's components, not the 0.2.0 that the project's config says today
    assert {c.data.tags[CODE_VERSION_TAG] for c in children.values()} == {"0.1.0"}
    verify = released.reprise("verify", "1.0.0", "--run", rerun.info.run_id, workspace=store)
    assert verify.returncode == 0, output_of(verify)[-4000:]
    assert " 0 of " not in verify.stdout and "identical." in verify.stdout
    assert "NO" not in verify.stdout.split("identical.")[0].split("expected -> actual")[1]

    promoted = released.reprise("promote", "1.0.0", workspace=store)
    assert promoted.returncode == 0, output_of(promoted)[-4000:]
    assert "its model is version 2 of adult_income in this store" in promoted.stderr
    prod = client.get_model_version_by_alias("adult_income", "prod")
    assert str(prod.version) == "2"
    assert client.get_run(prod.run_id).data.tags["mlflow.parentRunId"] == rerun.info.run_id


def test_make_verify_reruns_and_compares_and_leaves_the_registry(released: Project) -> None:
    """1.1.0 is a forest scored on two threads: its digests still agree."""
    client = MlflowClient(tracking_uri=released.workspace.tracking_uri)

    def registry() -> tuple[list[str], dict[str, str]]:
        versions = client.search_model_versions("name = 'adult_income'")
        return sorted(v.version for v in versions), client.get_registered_model(
            "adult_income"
        ).aliases

    before = registry()
    result = released.reprise("verify", "1.1.0")
    assert result.returncode == 0, output_of(result)[-4000:]
    assert "identical." in result.stdout and "NO " not in result.stdout
    assert "The registry is as it was: the rerun registered no model" in result.stdout
    assert registry() == before


@pytest.mark.parametrize(
    ("steps", "overrides", "given"),
    [
        ("get_data", "", "main.steps=get_data"),
        ("all", "model.max_depth=6", "model.max_depth=6"),
        ("get_data", "model.max_depth=6", "main.steps=get_data"),
    ],
)
def test_a_release_checkout_refuses_other_steps_and_settings(
    released: Project, steps: str, overrides: str, given: str
) -> None:
    client = MlflowClient(tracking_uri=released.workspace.tracking_uri)
    runs_before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    result = released.reprise("run", "--steps", steps, "--overrides", overrides)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "This checkout is release 1.1.0" in errors[0] and given in errors[0]
    assert "main.release=off" in errors[0]
    after = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    assert after == runs_before  # refused before any run started


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
    result = released.reprise("promote", "1.1.0")
    assert result.returncode == 0, output_of(result)[-4000:]
    client = MlflowClient(tracking_uri=released.workspace.tracking_uri)
    assert int(client.get_model_version_by_alias("adult_income", "prod").version) == 2
    # a forest is compiled for serving now, so the first predict of prod starts fast
    assert "model of release 1.1.0 compiled for serving" in output_of(result)
    assert list((released.workspace.path / "cache" / "scorers").rglob("*.npz"))
    rollback = released.reprise("promote", "1.0.0")
    assert rollback.returncode == 0, output_of(rollback)[-4000:]
    assert int(client.get_model_version_by_alias("adult_income", "prod").version) == 1
    assert "model of release 1.0.0 is served by scikit-learn" in output_of(rollback)
    # forward again: later releases are gated against prod, the newest model
    assert released.reprise("promote", "1.1.0").returncode == 0


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
        verify = released.reprise("verify", "1.0.0")
        assert verify.returncode == 1
        (said,) = [line for line in verify.stderr.splitlines() if "ERROR reprise: " in line]
        assert "The pipeline failed, so release 1.0.0 was not verified" in said
        assert f"this release was cut with {old}" in said
        assert "then verify again" in said
        assert "nothing was released" not in said and said.count("Fix:") == 1, said
    finally:
        git("tag", "-f", "0.1.0", old, cwd=bare)


def test_bumpversion_cfg_also_works_with_bump2version(tmp_path: Path) -> None:
    """The same .bumpversion.cfg drives bump2version 1.0.1 (installed apart in .tools/)."""
    tool = ROOT / ".tools" / "bin" / "bump2version"
    for name in (".bumpversion.cfg", "pyproject.toml", "uv.lock"):
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
    assert f'name = "reprise"\nversion = "{major}.0.0"' in (tmp_path / "uv.lock").read_text()
