"""step_kit pauses the collector while it imports, sets aside what it imported, and leaves the
collector on, in a process of its own, as a step's run.py imports it."""

import gc
import json
from pathlib import Path

from step_kit.startup import imports_paused

from test_step import step_process

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
