"""The fast path (reprise/serving/fast.py) against scikit-learn itself, on the bundled Adult
data: each estimator of config group 'model' and the baselines, fitted as train_model fits them,
scored by the fast path in every way it reads rows (a DataFrame, a few rows, Arrow, a file saved
and loaded back) must give scikit-learn's probabilities and labels on every held-out row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from step_kit import Schema

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from reprise.serving.fast import MAX_COMPILED_NODES, SMALL_BATCH, FastScorer, NotCompilable
from support import ROOT

CONFIG = ROOT / "project" / "config"
DATA = ROOT / "components-repo" / "get_data" / "data" / "sample2.parquet"
TRAIN_ROWS = 30_000
# smaller ensembles than the config's, so the test stays fast; all else as configured
SMALLER = {
    "random_forest": {"n_estimators": 8, "n_jobs": 1},
    "hist_gradient_boosting": {"max_iter": 30},
}


def config(group: str, name: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIG / group / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.from_json(json.dumps(config("data", "adult")))


@pytest.fixture(scope="module")
def halves(schema: Schema) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train table, held-out features) of the full set, cleaned as the pipeline cleans it; the
    held-out rows also get unseen categories and missing values."""
    from cleaning import clean

    etl = config("etl", "default")
    frame, _ = clean(pd.read_parquet(DATA), schema, etl["missing_token"], etl["ranges"])
    held_out = schema.xy(frame)[0].iloc[TRAIN_ROWS:].reset_index(drop=True).copy()
    text = list(schema.categorical)
    held_out.loc[::97, text[0]] = "a category never seen"
    held_out.loc[1::89, text[1]] = None
    return frame.iloc[:TRAIN_ROWS], held_out


def fitted(schema: Schema, train: pd.DataFrame, option: str) -> Any:
    """The model of a config option (or a baseline) with a threshold, as train_model makes it."""
    from training import BASELINES, fit, with_threshold

    if option in BASELINES:
        name, hyperparameters = option, BASELINES[option]
    else:
        values = config("model", option)
        name = values.pop("name")
        hyperparameters = {**values, **SMALLER.get(option, {})}
    return with_threshold(fit(train, schema, name, hyperparameters), 0.37)


TEXT = (pa.string(), pa.large_string())
OPTIONS = ["decision_tree", "random_forest", "hist_gradient_boosting", "logistic_regression"]
COMPILED = {"decision_tree", "random_forest"}


@pytest.fixture(scope="module", params=OPTIONS)
def case(request, schema, halves) -> tuple[str, Any, FastScorer, pd.DataFrame]:
    model = fitted(schema, halves[0], request.param)
    return request.param, model, FastScorer.compile(model), halves[1]


def assert_same(option: str, got: np.ndarray, expected: np.ndarray) -> None:
    """Bit for bit for a tree; within rounding for the rest (a forest's threads add its trees in
    any order, and a matrix product rounds by the matrix's size)."""
    if option == "decision_tree":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_probabilities_and_labels_are_scikit_learns(case) -> None:
    option, model, scorer, rows = case
    assert (scorer.trees is not None) == (option in COMPILED)
    expected = model.predict_proba(rows)[:, 1]
    got = scorer.predict_proba(rows)
    assert_same(option, got, expected)
    np.testing.assert_array_equal(scorer.predict(got), model.predict(rows))


def test_a_few_rows_at_a_time_score_as_a_whole_frame(case) -> None:
    option, model, scorer, rows = case
    head = rows.iloc[:600]
    pieces = [head.iloc[i : i + 7] for i in range(0, len(head), 7)]
    assert len(pieces[0]) <= SMALL_BATCH
    got = np.concatenate(
        [scorer.predict_proba({c: piece[c].tolist() for c in piece}) for piece in pieces]
    )
    assert_same(option, got, model.predict_proba(head)[:, 1])


def test_arrow_tables_score_as_frames(case) -> None:
    option, model, scorer, rows = case
    plain = pa.Table.from_pandas(rows, preserve_index=False)
    encoded = pa.table(
        {
            name: column.dictionary_encode() if column.type in TEXT else column
            for name, column in zip(plain.column_names, plain.columns, strict=True)
        }
    )
    assert any(pa.types.is_dictionary(t) for t in encoded.schema.types)
    expected = model.predict_proba(rows)[:, 1]
    assert_same(option, scorer.predict_proba_arrow(plain), expected)
    assert_same(option, scorer.predict_proba_arrow(encoded), expected)


def test_compiled_trees_are_saved_and_loaded_as_arrays(case, tmp_path: Path) -> None:
    option, model, scorer, rows = case
    path = tmp_path / "scorer.npz"
    if option not in COMPILED:
        assert not scorer.saveable
        with pytest.raises(NotCompilable):
            scorer.save(path, {})
        assert not path.exists()
        return
    scorer.save(path, {"columns": {"age": "integer"}})
    loaded, extra = FastScorer.load(path)
    assert extra == {"columns": {"age": "integer"}}
    assert loaded.threshold == scorer.threshold == pytest.approx(0.37)
    got = loaded.predict_proba(rows)
    assert_same(option, got, model.predict_proba(rows)[:, 1])
    np.testing.assert_array_equal(loaded.predict(got), model.predict(rows))


def test_a_saved_scorer_loads_without_scikit_learn(schema, halves, tmp_path: Path) -> None:
    """What makes a batch command start fast: neither scikit-learn nor MLflow is imported."""
    model = fitted(schema, halves[0], "decision_tree")
    scorer, rows = FastScorer.compile(model), halves[1]
    path = tmp_path / "scorer.npz"
    scorer.save(path, {})
    rows.head(50).to_parquet(tmp_path / "rows.parquet")
    program = (
        "import sys, pandas as pd\n"
        "from pathlib import Path\n"
        "from reprise.serving.fast import FastScorer\n"
        f"scorer, _ = FastScorer.load(Path({str(path)!r}))\n"
        f"proba = scorer.predict_proba(pd.read_parquet({str(tmp_path / 'rows.parquet')!r}))\n"
        "print(repr(proba.tolist()))\n"
        "print(sorted(m for m in ('sklearn', 'mlflow', 'scipy') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert eval(out[0]) == model.predict_proba(rows.head(50))[:, 1].tolist()
    assert out[1] == "[]"


def test_a_classifier_without_threshold_labels_as_its_predict(schema, halves) -> None:
    """A bare pipeline takes the likelier class (the negative one on a tie), not proba >= 0.5:
    every row given twice, once with each label, makes every leaf a tie."""
    from training import fit

    train = halves[0].iloc[:400]
    labels = train[schema.target].unique()
    flipped = train.assign(
        **{schema.target: train[schema.target].map(dict(zip(labels, labels[::-1], strict=True)))}
    )
    model = fit(pd.concat([train, flipped]), schema, "decision_tree", {"max_depth": 3})
    scorer = FastScorer.compile(model)
    proba = scorer.predict_proba(halves[1])
    assert (proba == 0.5).all()
    np.testing.assert_array_equal(scorer.predict(proba), model.predict(halves[1]))
    assert not scorer.predict(proba).any()


def test_a_forest_too_big_to_walk_keeps_scikit_learns_predict(schema, halves) -> None:
    from training import fit

    forest = fit(halves[0], schema, "random_forest", {"n_estimators": 30, "min_samples_leaf": 1})
    nodes = sum(tree.tree_.node_count for tree in forest.named_steps["classifier"].estimators_)
    assert nodes > MAX_COMPILED_NODES
    scorer = FastScorer.compile(forest)
    assert scorer.trees is None and scorer.classifier is not None
    np.testing.assert_allclose(
        scorer.predict_proba(halves[1]), forest.predict_proba(halves[1])[:, 1], atol=1e-12
    )


def test_a_compiled_model_is_named_by_the_model_files_alone(tmp_path: Path, monkeypatch) -> None:
    """MLflow writes registered_model_meta into a version's folder at its first load: that must
    not make the second load miss its compiled file; a changed model file must."""
    from reprise.serving.model import _compiled_path

    monkeypatch.setenv("REPRISE_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "artifacts"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}\n")
    (folder / "model.skops").write_bytes(b"\x00model bytes")
    first = _compiled_path(str(folder))
    assert first is not None and first.is_relative_to(tmp_path / "cache")
    (folder / "registered_model_meta").write_text("model_name: adult_income\nmodel_version: 3\n")
    assert _compiled_path(str(folder)) == first
    (folder / "model.skops").write_bytes(b"\x00other model bytes")
    assert _compiled_path(str(folder)) != first
    assert _compiled_path(None) is None
