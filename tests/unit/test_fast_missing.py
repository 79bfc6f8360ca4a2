"""The fast path on rows with missing numbers: every estimator and baseline of train_model, with
every numeric imputation and with or without missing-indicator columns, fitted on Adult rows
where some numbers are missing, compiled, must give scikit-learn's probabilities (within 1e-12)
on held-out rows missing numbers in every numeric column, read whole, a few rows at a time (None
as JSON gives it) and as Arrow (nulls), and after a save/load round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from step_kit import Schema

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from test_fast import config

from reprise.serving import fast
from reprise.serving.fast import SMALL_BATCH, FastScorer, imputed_columns
from support import ROOT

DATA = ROOT / "components-repo" / "get_data" / "data" / "sample2.parquet"
TRAIN_ROWS = 6_000
HELD_OUT_ROWS = 2_000
SMALLER = {
    "random_forest": {"n_estimators": 6, "n_jobs": 1},
    "hist_gradient_boosting": {"max_iter": 20},
}
OPTIONS = [
    "decision_tree",
    "random_forest",
    "hist_gradient_boosting",
    "logistic_regression",
    "dummy_prior",
]
COMPILED = {"decision_tree", "random_forest"}
STRATEGIES = ["median", "mean", "most_frequent", "constant"]


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.from_json(json.dumps(config("data", "adult")))


@pytest.fixture(scope="module")
def halves(schema: Schema) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train table with numbers missing in two numeric columns, held-out features with numbers
    missing in every numeric column, one of them never missing in training)."""
    from cleaning import clean

    etl = config("etl", "default")
    frame, _ = clean(pd.read_parquet(DATA), schema, etl["missing_token"], etl["ranges"])
    numeric = list(schema.numeric)
    train = frame.iloc[:TRAIN_ROWS].copy()
    # the first and the fourth column: the indicators are of a subset, not the first columns
    train[numeric[0]] = train[numeric[0]].astype("float64").mask(train.index % 11 == 0)
    train[numeric[3]] = train[numeric[3]].astype("float64").mask(train.index % 7 == 0)
    held_out = schema.xy(frame)[0].iloc[TRAIN_ROWS : TRAIN_ROWS + HELD_OUT_ROWS]
    held_out = held_out.reset_index(drop=True).copy()
    for k, column in enumerate(numeric):
        held_out[column] = held_out[column].astype("float64").mask(held_out.index % (5 + k) == k)
    held_out.loc[1::89, list(schema.categorical)[0]] = None
    return train, held_out


def fitted(schema: Schema, train: pd.DataFrame, option: str, preprocess: Any) -> Any:
    """The model of a config option (or a baseline) with a threshold, as train_model makes it."""
    from training import BASELINES, fit, with_threshold

    if option in BASELINES:
        name, hyperparameters = option, BASELINES[option]
    else:
        values = config("model", option)
        name = values.pop("name")
        hyperparameters = {**values, **SMALLER.get(option, {})}
    return with_threshold(fit(train, schema, name, hyperparameters, preprocess), 0.37)


@pytest.fixture(
    scope="module",
    params=[
        (option, strategy, indicator)
        for option in OPTIONS
        for strategy in STRATEGIES
        for indicator in (False, True)
    ],
    ids=lambda p: f"{p[0]}-{p[1]}{'-indicator' if p[2] else ''}",
)
def case(request, schema, halves) -> tuple[str, Any, FastScorer, pd.DataFrame]:
    from training import Preprocess

    option, strategy, indicator = request.param
    preprocess = Preprocess(
        numeric_imputation=strategy, numeric_fill_value=-3.5, missing_indicator=indicator
    )
    model = fitted(schema, halves[0], option, preprocess)
    return option, model, FastScorer.compile(model), halves[1]


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_every_estimator_imputation_and_indicator_is_compiled(case, schema) -> None:
    option, model, scorer, _ = case
    assert (scorer.trees is not None) == (option in COMPILED)
    assert scorer.imputed == imputed_columns(model) == frozenset(schema.numeric)
    imputer = model.estimator.named_steps["preprocess"].named_transformers_["numeric"][0]
    indicators = [s for s in scorer.numeric if s.indicator]
    assert len(indicators) == (2 if imputer.add_indicator else 0)
    # ColumnTransformer's order: categoricals' one-hot blocks, the numbers, then indicators
    names = list(model.estimator.named_steps["preprocess"].get_feature_names_out())
    for spec in indicators:
        assert names[spec.position] == f"missingindicator_{spec.column}"
    for spec in scorer.numeric:
        if not spec.indicator:
            assert names[spec.position] == spec.column


def test_rows_missing_numbers_score_as_scikit_learn_whole_and_labelled(case) -> None:
    _, model, scorer, rows = case
    assert rows[list(scorer.imputed)].isna().any().all()
    got = scorer.predict_proba(rows)
    assert_same(got, model.predict_proba(rows)[:, 1])
    np.testing.assert_array_equal(scorer.predict(got), model.predict(rows))


def test_rows_missing_numbers_score_a_few_at_a_time_with_none(case) -> None:
    _, model, scorer, rows = case
    head = rows.iloc[:300]
    pieces = [head.iloc[i : i + 7] for i in range(0, len(head), 7)]
    assert len(pieces[0]) <= SMALL_BATCH
    # as a JSON request arrives: None for a missing number
    got = np.concatenate(
        [
            scorer.predict_proba(
                {c: [None if fast.is_missing(v) else v for v in p[c].tolist()] for c in p}
            )
            for p in pieces
        ]
    )
    assert_same(got, model.predict_proba(head)[:, 1])


def test_rows_missing_numbers_score_as_arrow_nulls(case, schema) -> None:
    _, model, scorer, rows = case
    table = pa.Table.from_pandas(rows, preserve_index=False)
    assert all(table.column(c).null_count for c in schema.numeric)  # NaN became null
    # integers with nulls, as a parquet file of an integer column holds them
    column = list(schema.numeric)[0]
    integers = pa.array(rows[column].astype("Int64"), type=pa.int64())
    with_ints = table.set_column(table.schema.get_field_index(column), column, integers)
    expected = model.predict_proba(rows)[:, 1]
    assert_same(scorer.predict_proba_arrow(table), expected)
    assert_same(scorer.predict_proba_arrow(with_ints), expected)


def test_the_compile_check_covers_missing_numbers(case, schema) -> None:
    _, model, scorer, rows = case
    kinds = {c: ("number" if c in schema.numeric else "string") for c in rows}
    synthetic = scorer.synthetic_rows(kinds, rows.head(20))
    for column in schema.numeric:
        assert synthetic[column].isna().any(), column
    assert scorer.disagreement(model, synthetic) == ""


def test_a_saved_scorer_with_imputation_loads_and_scores_the_same(case, tmp_path: Path) -> None:
    option, model, scorer, rows = case
    if option not in COMPILED:
        assert not scorer.saveable
        return
    path = tmp_path / "scorer.npz"
    scorer.save(path, {"columns": {}})
    loaded, _ = FastScorer.load(path)
    assert loaded.imputed == scorer.imputed
    assert loaded.numeric == scorer.numeric
    assert_same(loaded.predict_proba(rows), model.predict_proba(rows)[:, 1])


def test_a_scorer_saved_in_the_previous_format_is_not_read(
    schema, halves, tmp_path: Path, monkeypatch
) -> None:
    """A format-1 file has no fill values: read as today's it would score a missing number as
    NaN, so it is refused (and the model compiled again, see test_missing_numbers_e2e)."""
    from training import Preprocess

    model = fitted(schema, halves[0], "decision_tree", Preprocess())
    path = tmp_path / "scorer.npz"
    monkeypatch.setattr(fast, "FORMAT", 1)
    FastScorer.compile(model).save(path, {})
    monkeypatch.undo()
    with pytest.raises(ValueError, match=f"format 1, not {fast.FORMAT}"):
        FastScorer.load(path)


def refitted(schema: Schema, train: pd.DataFrame, option: str, numeric: Any) -> Any:
    """The model of ``option`` with another numeric branch, fitted as train_model fits it."""
    from training import build_pipeline, with_threshold

    values = config("model", option)
    name = values.pop("name")
    pipeline = build_pipeline(schema, name, {**values, **SMALLER.get(option, {})})
    pipeline.set_params(preprocess__numeric=numeric)
    return with_threshold(pipeline.fit(*schema.xy(train)), 0.37)


@pytest.mark.parametrize("option", ["decision_tree", "hist_gradient_boosting"])
def test_a_model_of_an_older_release_compiles_and_imputes_nothing(schema, halves, option) -> None:
    """Releases cut before imputation had a passthrough numeric branch: compiled as before, and
    no column is said to be imputed (so the row checks keep refusing a missing number)."""
    numeric = list(schema.numeric)
    model = refitted(schema, halves[0].dropna(subset=numeric), option, "passthrough")
    rows = halves[1].dropna(subset=numeric)
    scorer = FastScorer.compile(model)
    assert scorer.imputed == imputed_columns(model) == frozenset()
    assert_same(scorer.predict_proba(rows), model.predict_proba(rows)[:, 1])


def _not_understood() -> dict[str, tuple[Any, bool]]:
    """Numeric branches the fast path does not know: (branch, whether it fills NaN first)."""
    from sklearn.impute import KNNImputer, SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    return {
        "an imputer of -1, not NaN": (SimpleImputer(missing_values=-1.0), False),
        "another imputer": (KNNImputer(n_neighbors=2), False),
        "a scaler then an imputer": (
            Pipeline([("scale", StandardScaler()), ("impute", SimpleImputer())]),
            False,
        ),
        "an imputer then another scaler": (
            Pipeline([("impute", SimpleImputer()), ("scale", MinMaxScaler())]),
            True,
        ),
    }


@pytest.mark.parametrize("branch", list(_not_understood()))
def test_a_numeric_branch_not_understood_is_not_compiled(schema, halves, branch) -> None:
    """It falls back to scikit-learn (never a wrong answer); its missing numbers are scored
    only when the branch fills NaN first."""
    numeric, fills = _not_understood()[branch]
    train = halves[0].iloc[:1500]
    model = refitted(schema, train.dropna(subset=list(schema.numeric)), "decision_tree", numeric)
    with pytest.raises(fast.NotCompilable, match="numeric step|imputer of numbers"):
        FastScorer.compile(model)
    assert imputed_columns(model) == (frozenset(schema.numeric) if fills else frozenset())
