"""The Step context in a real process against a real MLflow store, and how step_kit starts one:
its import pauses the collector and sets aside what it imported (step_kit/startup.py)."""

import gc
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from step_kit.startup import imports_paused

from mlflow.tracking import MlflowClient

COMPONENTS = Path(__file__).resolve().parents[2]
INTERRUPTED = """
import os, signal, time
# Ctrl-C raises KeyboardInterrupt as in a terminal, even when the tests were started where SIGINT
# is ignored (a background job of a shell without job control)
signal.signal(signal.SIGINT, signal.default_int_handler)
from step_kit import Step
with Step("probe", {}) as step:
    print(step.run_id, flush=True)
    os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in a terminal sends the whole group
    time.sleep(30)
"""


def step_process(tmp_path: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` with step_kit importable and a new sqlite store in ``tmp_path``."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "WANDB_MODE": "disabled",
        "PYTHONPATH": str(COMPONENTS),
    }
    env.pop("MLFLOW_RUN_ID", None)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_interrupted_step_ends_killed_in_one_line(tmp_path: Path) -> None:
    result = step_process(tmp_path, INTERRUPTED)
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "step probe stopped by an interrupt (Ctrl-C); its run ends KILLED" in result.stderr
    run_id = result.stdout.split()[0]
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id)
    assert run.info.status == "KILLED"
    # the code says which release of the repository it is
    version = (COMPONENTS / "VERSION").read_text().strip()
    assert run.data.tags["reprise.component.code_version"] == version


def test_a_version_file_that_is_no_text_or_a_folder_records_no_version(tmp_path: Path) -> None:
    """code_version reads the VERSION beside step_kit's real folder; what is not one is None."""
    import shutil

    for name, make in [("binary", "bytes"), ("folder", "dir"), ("missing", None)]:
        repo = tmp_path / name
        shutil.copytree(
            COMPONENTS / "step_kit",
            repo / "step_kit",
            ignore=shutil.ignore_patterns("tests", "__pycache__"),
        )
        if make == "bytes":
            (repo / "VERSION").write_bytes(b"\xff\xfe\x00not text")
        elif make == "dir":
            (repo / "VERSION").mkdir()
        result = subprocess.run(
            [sys.executable, "-c", "from step_kit.step import code_version; print(code_version())"],
            env={**os.environ, "PYTHONPATH": str(repo)},
            cwd=tmp_path,  # not this repository's folder, whose step_kit would come first
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == "None", name


PROBE = """
import gc, json, sys
before = gc.get_freeze_count()
collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(info["generation"]))
if sys.argv[1] == "baseline":  # the same libraries, without step_kit
    import mlflow, pandas, pyarrow
    print(json.dumps({"collections": len(collections)}))
    sys.exit(0)
import step_kit  # mlflow, pandas and pyarrow with it
imported = {"mlflow", "pandas", "pyarrow"} <= set(sys.modules)
after_import = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count() - before,
                "collections": len(collections), "imported": imported}
with step_kit.Step("probe", {}):
    during = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
print(json.dumps({"import": after_import, "step": during}))
"""


def probe(tmp_path: Path, how: str) -> dict:
    result = step_process(tmp_path, PROBE, how)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_step_kit_imports_without_the_collector_and_leaves_it_on(tmp_path: Path) -> None:
    baseline = probe(tmp_path, "baseline")
    seen = probe(tmp_path, "step_kit")
    imported = seen["import"]
    assert imported["imported"] and imported["enabled"]
    # the libraries alone set off hundreds of collections; through step_kit at most the one
    # that may start as the collector resumes
    assert baseline["collections"] > 100 and imported["collections"] <= 1, (baseline, imported)
    assert imported["frozen"] > 100_000  # what they made is set aside, never walked again
    # the run has started (the store opened): that is set aside too, and the collector is on
    assert seen["step"]["enabled"] and seen["step"]["frozen"] > imported["frozen"]


def test_a_paused_block_resumes_the_collector_only_if_it_was_on() -> None:
    assert gc.isenabled()
    try:
        with imports_paused():
            assert not gc.isenabled()
        assert gc.isenabled()
        gc.disable()
        with imports_paused():
            pass
        assert not gc.isenabled()  # a caller that had paused it keeps it paused
    finally:
        gc.enable()
