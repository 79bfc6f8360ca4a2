"""Trust in model files that can be changed, end to end (issue 10, item 8): real models logged
and registered in a real MLflow sqlite store, loaded by the serving side as `make serve` and
`make predict` load them; their compiled scorer and their MLmodel and skops files then edited."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
import test_fast
import yaml
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from test_fast import fitted

from reprise.errors import RepriseError
from reprise.serving.fast import FastScorer, digest_path
from reprise.serving.model import _compiled_path, compiled_on_disk, load
from reprise.serving.reference import resolve
from support import ROOT, log_and_register, workspace_env, workspace_process

pytestmark = pytest.mark.e2e

# test_fast's fixtures: the bundled data, cleaned, split into train rows and held-out features
schema = test_fast.schema
halves = test_fast.halves
NAME = "trust_e2e"


@dataclass
class Store:
    env: dict[str, str]
    model: Any  # the scikit-learn model logged as version 1
    run_id: str  # of version 2, whose files the tests edit


@pytest.fixture(scope="module")
def store(tmp_path_factory, schema, halves) -> Iterator[Store]:
    import mlflow

    path = tmp_path_factory.mktemp("trust")
    env = workspace_env(path)
    with workspace_process(env):
        model = fitted(schema, halves[0], "decision_tree")
        _, first = log_and_register(model, halves[1].head(5), NAME)
        run_id, second = log_and_register(model, halves[1].head(5), NAME)
        assert (first, second) == ("1", "2")
        yield Store(env, model, run_id)
        mlflow.set_tracking_uri(None)


def test_an_edited_compiled_scorer_is_compiled_again(store: Store, halves, caplog) -> None:
    """The issue's case: one edit of the compiled file made every row score 1, silently. Now
    the edit is seen (its digest differs), said in one line, and the model compiled again."""
    uri, meta = resolve(model=f"models:/{NAME}/1")
    compiled = _compiled_path(meta["artifacts"])
    assert compiled is not None
    first = load(uri, meta)
    assert first.scorer is not None and compiled_on_disk(meta)
    assert digest_path(compiled).is_file()
    expected = store.model.predict_proba(halves[1])[:, 1]

    with np.load(compiled, allow_pickle=False) as saved:
        arrays = {name: saved[name].copy() for name in saved.files}
    arrays["tree_value"][:] = 1.0
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    compiled.write_bytes(buffer.getvalue())
    with caplog.at_level(logging.WARNING, logger="reprise.serving.model"):
        again = load(uri, meta)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "its sha256 differs from the digest kept in" in warnings[0]
    assert "compiling it again" in warnings[0]
    np.testing.assert_array_equal(again.scorer.predict_proba(halves[1]), expected)
    reread, _ = FastScorer.load(compiled)  # compiled again, with its digest
    np.testing.assert_array_equal(reread.predict_proba(halves[1]), expected)

    caplog.clear()
    digest_path(compiled).unlink()  # decided: no digest, no trust
    assert not compiled_on_disk(meta)
    with caplog.at_level(logging.WARNING, logger="reprise.serving.model"):
        load(uri, meta)
    assert "no readable digest" in caplog.text and digest_path(compiled).is_file()


def test_a_compiled_scorer_that_differs_when_built_is_not_used(
    store: Store, halves, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """A fault in the compiler (one value wrong, injected into the real compile) is caught by
    the comparison with scikit-learn: scikit-learn serves, one line says why, nothing is kept."""
    real = FastScorer.compile.__func__

    def faulty(cls, model):
        scorer = real(cls, model)
        scorer.trees.value[scorer.trees.feature < 0] = 1.0
        return scorer

    monkeypatch.setenv("REPRISE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(FastScorer, "compile", classmethod(faulty))
    uri, meta = resolve(model=f"models:/{NAME}/1")
    with caplog.at_level(logging.WARNING, logger="reprise.serving.model"):
        served = load(uri, meta)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "the compiled scorer differs from scikit-learn (row 0 of " in warnings[0]
    assert "scikit-learn's own path serves it" in warnings[0]
    assert served.scorer is None and served.model is not None
    proba, labels = served.score(served.typed(halves[1]))
    np.testing.assert_array_equal(proba, store.model.predict_proba(halves[1])[:, 1])
    assert not compiled_on_disk(meta)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.npz"))


def test_a_checked_compiled_scorer_still_loads_without_mlflow(store: Store, halves, tmp_path):
    """The digest check costs no import: a second load reads the arrays, not MLflow."""
    rows = tmp_path / "rows.parquet"
    halves[1].head(50).to_parquet(rows)
    program = (
        "import sys, pandas as pd\n"
        "from reprise.serving.model import load\n"
        "from reprise.serving.reference import resolve\n"
        f"served = load(*resolve(model='models:/{NAME}/1'))\n"
        f"print(served.scorer.predict_proba(pd.read_parquet({str(rows)!r})).tolist())\n"
        "print(sorted(m for m in ('mlflow', 'sklearn') if m in sys.modules))\n"
    )
    load(*resolve(model=f"models:/{NAME}/1"))  # compiled, if no test did before
    out = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        env=store.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert eval(out[0]) == store.model.predict_proba(halves[1].head(50))[:, 1].tolist()
    assert out[1] == "[]"


def _tamper(folder: Path, model: Any) -> None:
    """The logged model's files edited: its MLmodel trusts posix.system, and its skops file
    holds a step that calls os.system on the rows it is given."""
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["sklearn"]
    flavor["skops_trusted_types"] = [*flavor["skops_trusted_types"], "posix.system"]
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    shell = Pipeline([("shell", FunctionTransformer(os.system)), ("model", model)])
    sio.dump(shell, folder / flavor["pickled_model"])


def test_a_model_whose_mlmodel_trusts_posix_system_is_refused(store: Store) -> None:
    import mlflow

    uri, meta = resolve(model=f"models:/{NAME}/2")
    _tamper(Path(meta["artifacts"]), store.model)
    # what MLflow itself does: it trusts the list the file carries, and loads the shell step
    loaded = mlflow.sklearn.load_model(uri)
    assert loaded.named_steps["shell"].func is os.system
    for reference in [(uri, meta), (f"runs:/{store.run_id}/model", {})]:
        with pytest.raises(RepriseError) as caught:
            load(*reference)
        message = str(caught.value)
        assert "\n" not in message
        assert "holds posix.system, outside the trusted types of the model group" in message
        assert "the model is refused" in message and "check the URI" not in message


def test_the_refusal_is_one_line_for_a_user_of_predict(store: Store, tmp_path: Path, halves):
    """``python -m reprise predict`` on the tampered model: one line naming the type, no output."""
    uri, meta = resolve(model=f"models:/{NAME}/2")
    _tamper(Path(meta["artifacts"]), store.model)  # as the test above left it, whatever ran
    rows = tmp_path / "rows.parquet"
    halves[1].head(20).to_parquet(rows)
    out = tmp_path / "scored.parquet"
    run = subprocess.run(
        [sys.executable, "-m", "reprise", "predict", "--model", uri]
        + ["--input", str(rows), "--output", str(out)],
        cwd=ROOT,
        env=store.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if "posix.system" in line]
    assert len(errors) == 1 and "the model is refused" in errors[0], run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert not out.exists()
