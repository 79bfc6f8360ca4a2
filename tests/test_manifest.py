"""Release manifests as written: plain YAML, nothing that belongs to the cutting machine."""

from pathlib import Path

import pytest
import yaml

from reprise import manifest


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
