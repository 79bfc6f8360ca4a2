"""End to end: credentials in URIs. With a secret in every URI-valued setting of the project's
config, nothing a run leaves (the MLflow store, its artifacts, W&B's files, Hydra's outputs, a
release manifest, the cached checkouts, the command's own output) holds it; and a URI without
credentials works, git supplying them (GIT_ASKPASS, a credential helper, ~/.netrc), as a rerun
of a release needs. The components are served over smart HTTP behind basic auth on 127.0.0.1."""

from __future__ import annotations

import base64
import secrets
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from reprise import manifest
from reprise.components import list_remote_refs, resolve_pinned
from reprise.errors import RepriseError
from support import (
    ComponentsRemote,
    GitHttpServer,
    Workspace,
    git_http_auth_server,
    latest_steps,
    run_reprise,
)

# one xdist group per store: the git server and the components on it are made once, in one worker
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("git")]

TAG = "0.2.0"
STEP = ["--steps", "get_data", "etl.sample=sample1.parquet", "components.env_manager=local"]


@pytest.fixture(scope="module")
def http_server(components_remote: ComponentsRemote) -> Iterator[GitHttpServer]:
    """The components repository over smart HTTP; fetching needs user and password."""
    password = f"pw-{secrets.token_hex(12)}"
    with git_http_auth_server(components_remote.bare.parent, "reprise", password) as server:
        yield server


def one_line_error(result: subprocess.CompletedProcess, *phrases: str) -> str:
    """The command failed with exactly one ERROR line, holding every phrase, and no traceback."""
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


def files_holding(folder: Path, needles: list[bytes]) -> list[str]:
    """Every file under ``folder`` (binary ones too: the sqlite store) holding any needle."""
    return [
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink() and any(n in path.read_bytes() for n in needles)
    ]


def test_no_secret_of_any_uri_setting_is_recorded_or_shown(
    workspace: Workspace, components_remote: ComponentsRemote, http_server: GitHttpServer
) -> None:
    secret = http_server.password
    url = f"{http_server.url}/components.git"
    with_secret = http_server.url_with_credentials("/components.git")
    data_url = http_server.url_with_credentials("/data/sample1.parquet")
    workspace.env["WANDB_MODE"] = "offline"  # W&B's files are checked too
    outputs: list[str] = []

    def reprise(*args: str) -> subprocess.CompletedProcess:
        result = run_reprise(workspace, *args)
        outputs.append(result.stdout + result.stderr)
        return result

    # both repository settings carry the secret: git fetches with it, nothing records it
    result = reprise(
        *STEP,
        f"components.repository={with_secret}",
        f"components.overrides.get_data.repository={with_secret}",
        f"components.version={TAG}",
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    parent, steps = latest_steps(workspace)
    tags = steps["get_data"].data.tags
    assert tags["reprise.component.repository"] == url  # a rerun's git supplies credentials
    assert tags["mlflow.source.git.commit"] == components_remote.tags[TAG]
    assert tags["mlflow.source.git.repoURL"] == url
    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    config_file = client.download_artifacts(parent.info.run_id, "config.yaml", str(workspace.path))
    config = yaml.safe_load(Path(config_file).read_text())
    assert config["components"]["repository"] == url
    assert config["components"]["overrides"]["get_data"]["repository"] == url
    assert list((workspace.path / "wandb").glob("offline-run-*")), "W&B wrote nothing"

    # a release manifest of that run, as `make release` writes it
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(workspace.tracking_uri)
    try:
        from reprise.release import observe

        record = {"version": "0.0.1", **observe(parent.info.run_id)}
    finally:
        mlflow.set_tracking_uri(previous)
    manifest.dump(record, workspace.path / "releases" / "0.0.1.yaml")
    assert record["components"]["get_data"]["repository"] == url

    # data URLs with credentials: the step would get them as parameters (MLflow, W&B): refused
    for key in ("etl.sample", "etl.reference"):
        result = reprise(*STEP, f"{key}={data_url}")
        one_line_error(result, f"Setting {key} holds a URI with credentials", "local path")

    # Hydra echoes a bad override: the secret never
    for override, phrase in [
        (f"components.repository={with_secret}]", "extraneous input"),
        (f"components.overrides.get_data.repository='{with_secret}", "LexerNoViableAlt"),
        (f"components.no_such_key={with_secret}", "no_such_key"),
    ]:
        one_line_error(reprise(*STEP, override), "bad configuration", phrase, "***@")

    # a sweep goes through `mlflow run`, which records its overrides: refused before that
    result = reprise("--", "-m", f"components.repository={with_secret}", "model.max_depth=3,4")
    one_line_error(result, "holds a URI with credentials", "credential helper")

    # a git error names the repository, not the secret
    wrong = with_secret.replace(secret, f"not-{secret}")
    result = reprise(*STEP, f"components.repository={wrong}", f"components.version={TAG}")
    one_line_error(result, "cannot be reached", "***@")

    token = base64.b64encode(f"{http_server.user}:{secret}".encode())
    needles = [secret.encode(), token]
    assert files_holding(workspace.path, needles) == []
    assert (workspace.path / "mlflow.db").is_file() and (workspace.path / "mlartifacts").is_dir()
    assert not (workspace.path / "outputs").exists() or not files_holding(
        workspace.path / "outputs", needles
    )
    leaked = [i for i, text in enumerate(outputs) if secret in text]
    assert leaked == [], [outputs[i][-2000:] for i in leaked]


def test_a_uri_without_credentials_runs_with_git_askpass(
    workspace: Workspace,
    components_remote: ComponentsRemote,
    http_server: GitHttpServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    url = f"{http_server.url}/components.git"
    pinned = [*STEP, f"components.repository={url}", f"components.version={TAG}"]
    result = run_reprise(workspace, *pinned)
    # without credentials git answers at once (never a prompt): one line, cause and fix
    one_line_error(result, f"Repository {url} cannot be reached", "Authentication failed")

    workspace.env.update(_askpass(tmp_path_factory.mktemp("askpass"), http_server))
    result = run_reprise(workspace, *pinned)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    _, steps = latest_steps(workspace)
    assert steps["get_data"].info.status == "FINISHED"
    assert steps["get_data"].data.tags["mlflow.source.git.commit"] == components_remote.tags[TAG]
    assert steps["get_data"].data.tags["reprise.component.repository"] == url


def _askpass(folder: Path, server: GitHttpServer) -> dict[str, str]:
    script = folder / "askpass.sh"
    script.write_text(
        f'#!/bin/sh\ncase "$1" in Username*) echo {server.user} ;; *) echo {server.password} ;; '
        "esac\n"
    )
    script.chmod(stat.S_IRWXU)
    return {"GIT_ASKPASS": str(script)}


def _credential_store(folder: Path, server: GitHttpServer) -> dict[str, str]:
    store = folder / "git-credentials"
    store.write_text(server.url_with_credentials("") + "\n")
    store.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "credential.helper",
        "GIT_CONFIG_VALUE_0": f"store --file={store}",
    }


def _netrc(folder: Path, server: GitHttpServer) -> dict[str, str]:
    netrc = folder / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login {server.user} password {server.password}\n")
    netrc.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return {"HOME": str(folder)}


@pytest.mark.parametrize("credentials", [_askpass, _credential_store, _netrc])
def test_a_release_pin_without_credentials_is_fetched_with_gits_own(
    credentials,  # noqa: ANN001
    components_remote: ComponentsRemote,
    http_server: GitHttpServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rerun resolves each pin of the manifest (a URI without credentials) at its commit."""
    url = f"{http_server.url}/components.git"
    sha = components_remote.tags[TAG]
    for name in ("GIT_ASKPASS", "GIT_CONFIG_COUNT", "SSH_ASKPASS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no credentials of this machine's user
    with pytest.raises(RepriseError, match="Authentication failed"):
        list_remote_refs(url)
    for name, value in credentials(tmp_path, http_server).items():
        monkeypatch.setenv(name, value)
    found = resolve_pinned("get_data", url, TAG, sha, "local", tmp_path / "cache")
    assert found.sha == sha and found.repository == url
    assert (found.path / "MLproject").is_file()
    checkout = tmp_path / "cache" / "checkouts" / sha
    assert files_holding(checkout / ".git", [http_server.password.encode()]) == []
