"""Credentials in URIs, in milliseconds: every form of URI that carries a secret is recognised,
stripped where it is recorded (config, manifest, tags), hidden where it is shown (messages), and
refused where MLflow would record it in clear (parameters, main.py's command line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reprise import manifest, tracking
from reprise.credentials import (
    find_credentials,
    has_credentials,
    redact,
    refuse_credentials,
    scrub,
    strip_credentials,
    without_credentials,
)
from reprise.errors import RepriseError
from support import ROOT

SECRET = "s3cr3t-Tok"
# (URI with a secret, the same URI as it is recorded: git supplies the credentials)
WITH_SECRET = [
    (f"http://alice:{SECRET}@git.example.org/team/c.git", "http://git.example.org/team/c.git"),
    (f"https://{SECRET}@github.com/o/r.git#sub", "https://github.com/o/r.git#sub"),  # token as user
    (f"https://x-token:{SECRET}@h.example:8443/r.git", "https://h.example:8443/r.git"),
    (f"git://bob:{SECRET}@127.0.0.1:9418/c.git", "git://127.0.0.1:9418/c.git"),
    (f"ssh://git:{SECRET}@host.example/c.git", "ssh://git@host.example/c.git"),  # login kept
    (f"HTTPS://u:{SECRET}@[::1]:8080/d.parquet?x=1", "HTTPS://[::1]:8080/d.parquet?x=1"),
    (f"http://u:p%40{SECRET}@host/x.csv", "http://host/x.csv"),  # percent-encoded @
    (f"http://u:p@{SECRET}@host/x.csv", "http://host/x.csv"),  # a raw @ in the password
    (f"postgresql://mlflow:{SECRET}@db:5432/mlflow", "postgresql://db:5432/mlflow"),
]
WITHOUT_SECRET = [
    "http://git.example.org/team/c.git",
    "ssh://git@host.example/c.git",  # a login name, no secret: ssh needs it
    "git@github.com:o/r.git",  # git's scp-like form holds no password
    "sqlite:////tmp/mlflow.db",
    "components-repo",
    "sample2.parquet",
    "file:///data/x.parquet",
    "mailto me@example.org",
]


@pytest.mark.parametrize(("uri", "stripped"), WITH_SECRET)
def test_uris_with_a_secret_are_stripped_redacted_and_found(uri: str, stripped: str) -> None:
    assert strip_credentials(uri) == stripped
    assert SECRET not in redact(uri) and "***@" in redact(uri)
    assert has_credentials(uri)
    assert has_credentials(f"components.repository={uri}")
    assert not has_credentials(stripped)


@pytest.mark.parametrize("text", WITHOUT_SECRET)
def test_uris_without_a_secret_are_left_as_they_are(text: str) -> None:
    assert strip_credentials(text) == text
    assert redact(text) == text
    assert not has_credentials(text)
    assert without_credentials({"a": [text]}) == {"a": [text]}


HYDRA_MESSAGES = [  # what Hydra and OmegaConf answer to bad overrides, with the URI echoed
    "Error parsing override 'components.repository={uri}]' extraneous input ']' expecting <EOF>",
    "LexerNoViableAltException: components.overrides.get_data.repository='{uri}",
    "Could not override 'components.repositoryx'. "
    "To append to your config use +components.repositoryx={uri}",
    "fatal: unable to access '{uri}/': The requested URL returned error: 401",
]


@pytest.mark.parametrize("message", HYDRA_MESSAGES)
@pytest.mark.parametrize(("uri", "_"), WITH_SECRET)
def test_scrub_hides_any_uri_secret_in_a_message(message: str, uri: str, _: str) -> None:
    text = message.format(uri=uri)
    assert SECRET not in scrub(text)
    assert SECRET not in scrub(text, uri)
    assert "***@" in scrub(text)


def test_a_config_is_recorded_without_credentials_and_other_values_unchanged() -> None:
    config = {
        "components": {
            "repository": WITH_SECRET[0][0],
            "overrides": {"get_data": {"repository": WITH_SECRET[1][0], "version": "1.0"}},
        },
        "etl": {"sample": WITH_SECRET[5][0], "reference": None, "timeout": 60},
        "hosts": ["a", WITH_SECRET[3][0]],
        "note": f"from {WITH_SECRET[2][0]} and more",
    }
    clean = without_credentials(config)
    assert SECRET not in repr(clean)
    assert clean["components"]["repository"] == WITH_SECRET[0][1]
    assert clean["components"]["overrides"]["get_data"] == {
        "repository": WITH_SECRET[1][1],
        "version": "1.0",
    }
    assert clean["etl"] == {"sample": WITH_SECRET[5][1], "reference": None, "timeout": 60}
    assert clean["note"] == f"from {WITH_SECRET[2][1]} and more"
    assert [key for key, _ in find_credentials(config)] == [
        "components.repository",
        "components.overrides.get_data.repository",
        "etl.sample",
        "hosts.1",
        "note",
    ]
    assert find_credentials(config)[3] == ("hosts.1", WITH_SECRET[3][0])


def test_a_manifest_is_written_without_credentials(tmp_path: Path) -> None:
    record = {
        "version": "1.0.0",
        "project": {"repository": WITH_SECRET[2][0]},
        "components": {"get_data": {"repository": WITH_SECRET[0][0], "tag": "1.0.0"}},
        "config": {"components": {"repository": WITH_SECRET[4][0]}},
        "mlflow": {"tracking_uri": WITH_SECRET[8][0]},
    }
    path = tmp_path / "releases" / "1.0.0.yaml"
    manifest.dump(record, path)
    assert SECRET not in path.read_text()
    written = yaml.safe_load(path.read_text())
    assert written["components"]["get_data"]["repository"] == WITH_SECRET[0][1]
    assert written["config"]["components"]["repository"] == WITH_SECRET[4][1]


def test_only_repositories_may_carry_credentials_in_the_settings() -> None:
    repositories = {
        "components": {
            "repository": WITH_SECRET[0][0],
            "overrides": {"train_model": {"repository": WITH_SECRET[3][0]}},
        }
    }
    refuse_credentials(repositories)  # git fetches them; they are recorded stripped
    for key, uri in [("sample", WITH_SECRET[0][0]), ("reference", WITH_SECRET[5][0])]:
        settings = {**repositories, "etl": {"sample": "sample1.parquet", key: uri}}
        with pytest.raises(RepriseError) as raised:
            refuse_credentials(settings)
        message = str(raised.value)
        assert f"Setting etl.{key} holds a URI with credentials" in message
        assert "download the file and name its local path" in message
        assert SECRET not in message and "\n" not in message


@pytest.mark.parametrize(("uri", "_"), WITH_SECRET[:4])
def test_run_project_refuses_a_parameter_with_credentials(uri: str, _: str) -> None:
    # refused before MLflow is called (it would record the parameter): no store is needed
    with pytest.raises(RepriseError) as raised:
        tracking.run_project(
            "/nonexistent", parameters={"steps": "all", "hydra_options": f"x.repository={uri}"}
        )
    message = str(raised.value)
    assert "Parameter hydra_options holds a URI with credentials" in message
    assert "credential helper" in message and "GIT_ASKPASS" in message
    assert SECRET not in message


def test_main_refuses_credentials_before_hydra_reads_them(tmp_path: Path) -> None:
    """`mlflow run project -P hydra_options=...` as main.py receives it: one line, no secret,
    the run to delete named, and nothing written (Hydra's outputs/ folder included)."""
    env = {
        "PATH": str(Path(sys.executable).parent),
        "REPRISE_STATE_DIR": str(tmp_path / "state"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}",
        "MLFLOW_RUN_ID": "0123abcd",
        "HOME": str(tmp_path / "home"),
    }
    for uri, _ in WITH_SECRET[:3]:
        result = subprocess.run(
            [sys.executable, "main.py", "--steps=get_data", f"--hydra_options=etl.x={uri}"],
            cwd=ROOT / "project",
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "holds a URI with credentials" in lines[0] and "run 0123abcd" in lines[0]
        assert "credential helper" in lines[0]
        assert SECRET not in result.stdout + result.stderr
    assert not (tmp_path / "state").exists()


def test_ui_command_hides_the_tracking_uris_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    uri = f"http://admin:{SECRET}@127.0.0.1:5000"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        command = tracking.ui_command()
    finally:
        mlflow.set_tracking_uri(previous)
    assert SECRET not in command and "127.0.0.1:5000" in command


def test_a_secret_in_the_project_config_reaches_no_file_hydra_writes(tmp_path: Path) -> None:
    """`mlflow run project` with a secret in config.yaml: Hydra writes no .hydra/ copy of the
    config or overrides, and its log, the store and the output hold no secret."""
    import shutil

    project = tmp_path / "project"
    shutil.copytree(ROOT / "project", project, ignore=shutil.ignore_patterns("outputs"))
    config = project / "config" / "config.yaml"
    uri = WITH_SECRET[0][0]
    config.write_text(
        config.read_text().replace("repository: components-repo", f"repository: {uri}")
    )
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "main.py", "--steps=no_such_step"],
        cwd=project,
        env={
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            "REPRISE_STATE_DIR": str(state),
            "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
            "HOME": str(tmp_path / "home"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Unknown step(s) no_such_step" in output, output[-2000:]
    assert SECRET not in output
    assert (state / "outputs").is_dir() and (state / "mlflow.db").is_file()
    assert not list(state.rglob(".hydra"))
    assert [p for p in state.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()] == []
