"""Release manifests as written: plain YAML, nothing that belongs to the cutting machine."""

from pathlib import Path

import pytest
import yaml

from reprise import manifest
from reprise.errors import RepriseError
from support import git


def test_a_manifest_is_plain_yaml_without_anchors(tmp_path: Path) -> None:
    shared = {"repository": "git://127.0.0.1/components.git", "tag": "1.0.0"}
    path = tmp_path / "releases" / "1.0.0.yaml"
    manifest.dump({"components": {"a": shared, "b": shared}, "list": [shared, shared]}, path)
    text = path.read_text()
    assert "&id" not in text and "*id" not in text
    assert text.count("git://127.0.0.1/components.git") == 4
    assert yaml.safe_load(text)["components"]["b"] == shared


@pytest.mark.parametrize(
    ("uri", "recorded"),
    [
        (
            "sqlite:////home/alice/project/mlflow.db",
            "sqlite store of the machine that cut the release",
        ),
        ("/home/alice/mlruns", "file store of the machine that cut the release"),
        ("file:///home/alice/mlruns", "file store of the machine that cut the release"),
        ("https://u:secret@mlflow.example.org:5000", "https://mlflow.example.org:5000"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_a_manifest_records_no_path_of_the_cutting_machine(uri: str, recorded: str) -> None:
    assert manifest.tracking_record(uri) == recorded


def _release_repo(root: Path, versions: list[str], tag_name: str = "{new_version}") -> None:
    """A git repository with one commit per release, each tagged and holding its manifest."""
    git("init", "--quiet", cwd=root)
    (root / manifest.BUMPVERSION_CFG).write_text(
        f"[bumpversion]\ncurrent_version = 0.0.0\ntag_name = {tag_name}\n"
    )
    for version in versions:
        manifest.dump(
            {"version": version, "mlflow": {"model": {}}}, manifest.manifest_path(version, root)
        )
        git("add", ".", cwd=root)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", version, cwd=root)
        git("tag", "-a", tag_name.replace("{new_version}", version), "-m", version, cwd=root)
    git("tag", "not-a-release", cwd=root)
    git("tag", "9.9.9", "HEAD~1", cwd=root)  # a version tag without its manifest


@pytest.mark.parametrize("tag_name", ["{new_version}", "v{new_version}", "release-{new_version}"])
def test_every_release_tag_is_a_release_whatever_is_checked_out(
    tmp_path: Path, tag_name: str
) -> None:
    _release_repo(tmp_path, ["1.0.0", "1.2.0", "1.10.0"], tag_name)
    first = tag_name.replace("{new_version}", "1.0.0")
    git("checkout", "--quiet", first, cwd=tmp_path)  # its tree holds 1.0.0's manifest alone
    found = manifest.known_releases(tmp_path)
    assert sorted(found, key=manifest.semver) == ["1.0.0", "1.2.0", "1.10.0"]
    assert manifest.load("1.10.0", tmp_path)["version"] == "1.10.0"


@pytest.mark.parametrize("version", ["9.9.9", "1.0", "1.0.0; touch x", "../1.0.0", "", "v1.0.0"])
def test_an_unknown_release_is_refused_listing_the_known_ones(tmp_path: Path, version: str) -> None:
    _release_repo(tmp_path, ["1.0.0", "1.1.0"])
    with pytest.raises(RepriseError) as refused:
        manifest.load(version, tmp_path)
    said = str(refused.value)
    assert "1.0.0, 1.1.0" in said or "is not a release version" in said
    assert not (tmp_path / "x").exists()


def test_semver_orders_numerically() -> None:
    assert sorted(["1.10.0", "1.2.0", "0.9.1"], key=manifest.semver) == ["0.9.1", "1.2.0", "1.10.0"]
    assert manifest.semver("1.0") == () and manifest.semver("a.b.c") == ()
