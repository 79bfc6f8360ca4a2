"""Parallel sweeps, the pure parts: which launcher a command line picks, which stores a parallel
sweep refuses (with the line a user reads), and what a Ray worker is given."""

from __future__ import annotations

import os
import socket
import time

import mlflow
import pytest
from omegaconf import OmegaConf

from reprise import sweep
from reprise.errors import RepriseError


@pytest.mark.parametrize(
    ("overrides", "launcher"),
    [
        (["-m", "model.max_depth=4,6", "hydra/launcher=joblib"], "joblib"),
        (["hydra/launcher=ray", "hydra.launcher.ray.init.address=10.0.0.1:6379"], "ray"),
        (["+hydra/launcher=joblib"], "joblib"),
        (["++hydra/launcher=my_cluster"], "my_cluster"),
        (["-m", "model.max_depth=4,6"], None),
        (["-m", "hydra/launcher=basic"], None),
        (["hydra.launcher.n_jobs=2"], None),  # a setting of a launcher, not a launcher
    ],
)
def test_the_launcher_a_command_line_picks(overrides: list[str], launcher: str | None) -> None:
    assert sweep.launcher_given(overrides) == launcher


@pytest.fixture
def tracking_uri():
    """Set MLflow's tracking URI for one test, put back after."""
    before = mlflow.get_tracking_uri()
    yield mlflow.set_tracking_uri
    mlflow.set_tracking_uri(before)


@pytest.mark.parametrize(
    ("uri", "scheme"),
    [
        ("sqlite:////tmp/reprise/mlflow.db", "sqlite"),
        ("sqlite:///mlflow.db", "sqlite"),
        ("file:///tmp/reprise/mlruns", "file"),
        ("/tmp/reprise/mlruns", "file"),
    ],
)
def test_a_parallel_sweep_refuses_a_local_store(tracking_uri, uri: str, scheme: str) -> None:
    tracking_uri(uri)
    with pytest.raises(RepriseError) as refused:
        sweep.refuse_local_store("joblib")
    line = str(refused.value)
    assert "\n" not in line
    assert "A parallel sweep (hydra/launcher=joblib) needs a tracking server" in line
    assert f"is a local {scheme} store" in line
    assert "Fix: start one with make server" in line


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:5000", "https://mlflow.example.org", "postgresql://db/mlflow"]
)
def test_a_parallel_sweep_takes_a_shared_store(tracking_uri, uri: str) -> None:
    tracking_uri(uri)
    sweep.refuse_local_store("ray")  # no error


def test_ray_workers_get_the_tracking_settings_and_never_the_run_of_mlflow_run(
    tracking_uri, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracking_uri("http://127.0.0.1:5000")
    for key in [k for k in os.environ if k.startswith(sweep.CARRIED_PREFIXES)]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_RUN_ID", "0123456789abcdef")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t")
    monkeypatch.setenv("REPRISE_STATE_DIR", "/srv/reprise")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", "/root")
    carried = sweep.carried_environment()
    assert carried == {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "MLFLOW_TRACKING_TOKEN": "t",
        "REPRISE_STATE_DIR": "/srv/reprise",
        "WANDB_MODE": "offline",
    }


def closed_port() -> int:
    """A port of 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_a_ray_address_where_nothing_listens_is_one_line_at_once(tracking_uri, form: str) -> None:
    tracking_uri("http://127.0.0.1:5000")
    address = form.format(port=closed_port())
    config = OmegaConf.create({"hydra": {"launcher": {"ray": {"init": {"address": address}}}}})
    started = time.monotonic()
    with pytest.raises(RepriseError) as refused:
        sweep.start_ray(config)
    assert time.monotonic() - started < 15  # Ray itself would retry for minutes
    line = str(refused.value)
    assert line.startswith(f"Nothing answers at the Ray cluster at {address} (")
    assert "correct hydra.launcher.ray.init.address" in line
