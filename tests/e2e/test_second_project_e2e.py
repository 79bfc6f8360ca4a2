"""End to end: a second team's project on the platform. A repository of its own (the platform and
the project skeleton, its own config and pipeline: no data check, a component of its own made by
`python -m reprise new-component`, a decision tree and a random forest trained at the same time
from one split) pins the served components repository at a published tag, runs, is released, and
its release reruns from an empty folder. The first project's repository, tags and releases are
untouched."""

from __future__ import annotations

import shutil
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
    reprise,
    workspace_env,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("second_project")]

OWN_FILES = Path(__file__).parent.parent / "second_project"
# What the second repository takes from this one: the platform and the project's skeleton.
SKELETON = (
    "project/MLproject",
    "project/bootstrap.py",
    "project/main.py",
    "project/python_env.yaml",
    "project/requirements.in",
    "project/requirements.txt",
    "project/reprise",  # the symlink to ../reprise
    "pyproject.toml",
    "uv.lock",
    ".bumpversion.cfg",
    ".gitignore",
)
# Config groups whose content the second project reuses, as files of its own.
REUSED_CONFIG = ("data/adult.yaml", "split/default.yaml", "model/decision_tree.yaml",
                 "evaluation/default.yaml")  # fmt: skip
SHARED_STEPS = ["get_data", "basic_cleaning", "split", "train_tree", "train_forest", "test_tree",
         "test_forest"]  # fmt: skip
OWN_STEP = "count_rows"  # the team's component row_count, from the team's components repository
STEPS = [*SHARED_STEPS, OWN_STEP]
CHANGELOG = """\
# Changelog

All notable changes to the second project are written down here, in the form of
[Keep a Changelog](https://keepachangelog.com/en/1.1.0/).

## [Unreleased]

### Added
- A decision tree and a random forest trained from one split, the tree registered.
"""


@dataclass
class SecondProject:
    """The second team's repository, pushed to the git server as second.git, and its store."""

    work: Path
    url: str
    workspace: Workspace

    def reprise(
        self, *args: str, cwd: Path | None = None, workspace: Workspace | None = None
    ) -> subprocess.CompletedProcess:
        """``python -m reprise ARGS`` in the repository (or ``cwd``): its own platform runs."""
        return reprise(*args, env=(workspace or self.workspace).env, cwd=cwd or self.work)


def output_of(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def first_project_state() -> tuple[str, list[str]]:
    """This repository's tags and releases: what the second project must not change."""
    releases = ROOT / "releases"
    return git("tag", "--list", cwd=ROOT), sorted(
        p.name for p in (releases.iterdir() if releases.is_dir() else [])
    )


@dataclass
class TeamComponents:
    """The team's fork of the components repository, with its own component, on the git server."""

    url: str
    tag: str
    sha: str


def build(work: Path, components_url: str, team: TeamComponents) -> None:
    """The second repository's files: the platform, the skeleton, its own config and CHANGELOG."""
    shutil.copytree(
        ROOT / "reprise", work / "reprise", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for name in SKELETON:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, work / name, follow_symlinks=False)
    config = work / "project" / "config"
    shutil.copytree(OWN_FILES / "config", config)
    for name in REUSED_CONFIG:
        (config / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "project" / "config" / name, config / name)
    main = config / "config.yaml"
    main.write_text(
        main.read_text()
        .replace("TEAM_COMPONENTS_URI", team.url)
        .replace("COMPONENTS_URI", components_url)
    )
    mlproject = work / "project" / "MLproject"
    description = next(line for line in mlproject.read_text().splitlines() if "description" in line)
    mlproject.write_text(
        mlproject.read_text().replace(
            description, "description: The second project's pipeline (project/config/pipeline/)."
        )
    )
    (work / "CHANGELOG.md").write_text(CHANGELOG)


@pytest.fixture(scope="module")
def first_before() -> tuple[str, list[str]]:
    return first_project_state()


@pytest.fixture(scope="module")
def team_components(
    git_server: GitServer, components_remote: ComponentsRemote, tmp_path_factory
) -> TeamComponents:
    """The served components repository at 0.1.0, forked, with component row_count written by
    `python -m reprise new-component`, tagged 1.0.0 and pushed as team-components.git."""
    work = tmp_path_factory.mktemp("team") / "components"
    git("clone", "-q", "-b", "0.1.0", str(components_remote.bare), str(work))
    made = subprocess.run(
        [sys.executable, "-m", "reprise", "new-component", "row_count", "--components-dir",
         str(work)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, output_of(made)[-3000:]
    assert (work / "row_count" / "MLproject").is_file()
    git("config", "user.email", "second@reprise.invalid", cwd=work)
    git("config", "user.name", "The second team", cwd=work)
    git("checkout", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "Component row_count", cwd=work)
    git("tag", "-a", "1.0.0", "-m", "components 1.0.0", cwd=work)
    bare = git_server.base / "team-components.git"
    git("clone", "-q", "--bare", str(work), str(bare))
    return TeamComponents(f"{git_server.url}/team-components.git", "1.0.0",
                          git("rev-parse", "HEAD", cwd=work))  # fmt: skip


@pytest.fixture(scope="module")
def second(
    git_server: GitServer,
    components_remote: ComponentsRemote,
    team_components: TeamComponents,
    tmp_path_factory: pytest.TempPathFactory,
    first_before: tuple[str, list[str]],
) -> SecondProject:
    """The second repository, one commit, pushed as second.git; its store has one run of it."""
    base = tmp_path_factory.mktemp("second")
    work = base / "second"
    build(work, components_remote.url, team_components)
    git("init", "-q", "-b", "main", cwd=work)
    git("config", "user.email", "second@reprise.invalid", cwd=work)
    git("config", "user.name", "The second team", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "The second project", cwd=work)
    url = f"{git_server.url}/second.git"
    git("init", "-q", "--bare", str(git_server.base / "second.git"))
    git("remote", "add", "origin", url, cwd=work)
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=work)
    project = SecondProject(work, url, Workspace(base / "store", workspace_env(base / "store")))
    result = project.reprise("run")
    assert result.returncode == 0, output_of(result)[-4000:]
    return project


@pytest.fixture(scope="module")
def released(second: SecondProject) -> SecondProject:
    """Release 1.0.0 of the second project, pushed with its tag."""
    result = second.reprise("release", "--part", "major")
    assert result.returncode == 0, output_of(result)[-4000:]
    git("push", "-q", "--follow-tags", "origin", "HEAD:refs/heads/main", cwd=second.work)
    return second


def test_the_second_pipeline_runs_its_own_steps(
    second: SecondProject, components_remote: ComponentsRemote, team_components: TeamComponents
) -> None:
    assert not (second.work / "components-repo").exists()
    assert git("log", "--format=%s", cwd=second.work) == "The second project"  # no history
    parent, steps = latest_steps(second.workspace)
    assert parent.info.status == "FINISHED"
    assert sorted(steps) == sorted(STEPS)
    assert not [
        s for s in steps.values() if s.data.tags["reprise.component.path"].endswith("data_check")
    ]  # no data check ran, under any step name
    assert {s.info.status for s in steps.values()} == {"FINISHED"}
    for name in SHARED_STEPS:
        tags = steps[name].data.tags
        assert tags["reprise.component.repository"] == components_remote.url, name
        assert tags["reprise.component.sha"] == components_remote.tags["0.1.0"], name
    own = steps[OWN_STEP].data
    assert own.tags["reprise.component.repository"] == team_components.url
    assert own.tags["reprise.component.sha"] == team_components.sha
    # the new component's template logic: the cleaned rows passed through, counted
    assert own.metrics["rows"] > 9000
    assert steps["split"].data.params["input_artifact"].endswith("row_count_data.parquet")
    assert steps["train_forest"].data.params["model_name"] == "random_forest"
    assert steps["train_tree"].data.params["model_name"] == "decision_tree"
    # the two trainers ran at the same time: together they took less time than one after the other
    trainers = [steps["train_tree"].info, steps["train_forest"].info]
    wall = max(t.end_time for t in trainers) - min(t.start_time for t in trainers)
    seconds = (
        parent.data.metrics["seconds.train_tree"] + parent.data.metrics["seconds.train_forest"]
    )
    assert wall / 1000 < 0.85 * seconds, (wall, seconds)

    client = MlflowClient(tracking_uri=second.workspace.tracking_uri)
    models = client.search_registered_models()
    assert [m.name for m in models] == ["second_model"]
    (version,) = client.search_model_versions("name = 'second_model'")
    # the model the declaration names (train_tree.model), registered by test_tree
    assert version.run_id == steps["train_tree"].info.run_id
    registered = "reprise.output.registered_model"
    assert steps["test_tree"].data.tags[registered] == "models:/second_model/1"
    assert registered not in steps["test_forest"].data.tags


def test_a_release_of_the_second_project_reruns_from_an_empty_folder(
    released: SecondProject,
    components_remote: ComponentsRemote,
    team_components: TeamComponents,
    tmp_path: Path,
) -> None:
    work = released.work
    assert git("cat-file", "-t", "1.0.0", cwd=work) == "tag"
    record = yaml.safe_load((work / "releases" / "1.0.0.yaml").read_text())
    assert record["version"] == "1.0.0"
    assert sorted(record["components"]) == sorted(STEPS)
    for name in SHARED_STEPS:
        assert record["components"][name]["sha"] == components_remote.tags["0.1.0"], name
    assert record["components"][OWN_STEP]["repository"] == team_components.url
    assert record["components"][OWN_STEP]["sha"] == team_components.sha
    assert record["components"]["train_forest"]["component"] == "train_model"
    assert record["mlflow"]["model"]["name"] == "second_model"
    assert "test_forest.predictions" in record["outputs"]
    assert record["config"]["main"]["jobs"] == 2

    store = Workspace(tmp_path, workspace_env(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    rerun = mlflow_run(store.env, empty, f"{released.url}#project", "1.0.0",
                       experiment="reprise-test")  # fmt: skip
    assert rerun.returncode == 0, output_of(rerun)[-4000:]
    parent, steps = latest_steps(store, "tags.`reprise.release` = '1.0.0'")
    assert sorted(steps) == sorted(STEPS)
    assert steps[OWN_STEP].data.tags["reprise.component.sha"] == team_components.sha
    verify = released.reprise("verify", "1.0.0", "--run", parent.info.run_id, workspace=store)
    assert verify.returncode == 0, output_of(verify)[-4000:]
    assert "identical." in verify.stdout and " 0 of " not in verify.stdout
    assert "NO" not in verify.stdout.split("identical.")[0].split("expected -> actual")[1]
    models = MlflowClient(tracking_uri=store.tracking_uri).search_registered_models()
    assert [m.name for m in models] == ["second_model"]


def test_the_first_project_is_untouched(
    released: SecondProject, first_before: tuple[str, list[str]]
) -> None:
    assert first_project_state() == first_before
    client = MlflowClient(tracking_uri=released.workspace.tracking_uri)
    assert [m.name for m in client.search_registered_models()] == ["second_model"]


def _unknown_output(pipeline: dict) -> str:
    pipeline["steps"]["test_tree"]["inputs"]["test"] = "split.holdout"
    return (
        "test_tree.inputs.test takes output 'holdout' of step split, which declares "
        "train_data, val_data, "
    )


def _unknown_step(pipeline: dict) -> str:
    pipeline["steps"]["train_forest"]["inputs"]["train"] = "splitter.train_data"
    return (
        "train_forest.inputs.train takes an output of step 'splitter', which the pipeline does not"
    )


def _cycle(pipeline: dict) -> str:
    pipeline["steps"]["get_data"]["inputs"] = {"input": "test_forest.predictions"}
    return "The pipeline's steps form a cycle: get_data -> basic_cleaning -> count_rows -> split"


def _unknown_after(pipeline: dict) -> str:
    pipeline["steps"]["split"]["after"] = ["data_check"]
    return "Step split follows step 'data_check', which the pipeline does not declare."


WRONG = [_unknown_output, _unknown_step, _cycle, _unknown_after]


@dataclass
class Refusal:
    said: str  # what the error must say
    result: subprocess.CompletedProcess
    runs: list  # every run of the store afterwards


@pytest.fixture(scope="module")
def refusals(released: SecondProject, tmp_path_factory) -> dict[str, Refusal]:
    """``python -m reprise run`` in a clone of second.git whose declaration is wrong, each in a
    store of its own."""
    found = {}
    for wrong in WRONG:
        base = tmp_path_factory.mktemp(wrong.__name__)
        clone = base / "clone"
        git("clone", "-q", "-b", "main", released.url, str(clone))
        declaration = clone / "project" / "config" / "pipeline" / "default.yaml"
        pipeline = yaml.safe_load(declaration.read_text())
        said = wrong(pipeline)
        declaration.write_text(yaml.safe_dump(pipeline, sort_keys=False))
        store = Workspace(base / "store", workspace_env(base / "store"))
        result = released.reprise("run", cwd=clone, workspace=store)
        client = MlflowClient(tracking_uri=store.tracking_uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        found[wrong.__name__] = Refusal(said, result, runs)
    return found


@pytest.mark.parametrize("wrong", [w.__name__ for w in WRONG])
def test_a_wrong_declaration_is_refused_in_one_line(
    refusals: dict[str, Refusal], wrong: str
) -> None:
    refusal = refusals[wrong]
    assert refusal.result.returncode == 1
    errors = [line for line in refusal.result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, refusal.result.stderr[-3000:]
    assert refusal.said in errors[0] and errors[0].count("Fix: ") == 1, errors[0]
    assert not [r for r in refusal.runs if "reprise.step" in r.data.tags]  # no step ran


@pytest.mark.parametrize("wrong", [w.__name__ for w in WRONG])
def test_a_wrong_declaration_leaves_no_run_in_the_store(
    refusals: dict[str, Refusal], wrong: str
) -> None:
    runs = refusals[wrong].runs
    assert runs == [], [(r.data.tags.get("mlflow.runName"), r.info.status) for r in runs]
