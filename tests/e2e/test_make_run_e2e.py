"""End to end: `make run` in a fresh clone sets itself up, runs the whole pipeline on the
embedded defaults and leaves a registered model, with W&B mirrored offline."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from support import ROOT, git

# one xdist group per store: its fixtures are made once, in one worker
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("make-run")]


def test_make_run_in_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git("clone", "-q", str(ROOT), str(clone))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "WANDB_", "REPRISE_", "HYDRA_", "VIRTUAL_ENV"))
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    env["REPRISE_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run(
        ["make", "run"], cwd=clone, env=env, capture_output=True, text=True, timeout=1200
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert (clone / ".venv" / "bin" / "python").exists()
    store = clone / "mlflow.db"
    assert store.is_file(), "the embedded sqlite store was not made in the clone"
    assert f"mlflow ui --backend-store-uri sqlite:///{store}" in result.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    (version,) = client.search_model_versions("name = 'adult_income'")
    run = client.get_run(version.run_id)
    assert run.data.tags["reprise.step"] == "train_model"
    experiment = client.get_experiment_by_name("reprise")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len(runs) == 7  # the pipeline run and one run per step
    test_run = next(r for r in runs if r.data.tags.get("reprise.step") == "test_model")
    assert test_run.data.metrics["test.roc_auc"] >= 0.89
    # W&B mirrored every step offline, into the clone's wandb/ folder
    offline_runs = list((clone / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 6, offline_runs
