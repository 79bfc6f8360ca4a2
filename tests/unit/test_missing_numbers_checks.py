"""The row checks on missing numbers, in milliseconds: a model that imputes its numbers scores a
missing one (None, NaN, an Arrow null) as scikit-learn does, through the fast path and through
scikit-learn's own; a model that cannot impute (a release cut before imputation: numbers passed
through) refuses it with the same words as before; Infinity is refused by both."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import test_fast_missing
from test_fast_missing import fitted, refitted

from reprise.serving.batch.score import arrow_clean, check_and_type, score_frame, score_table
from reprise.serving.fast import FastScorer
from reprise.serving.model import ServedModel
from reprise.serving.rows import InputError
from reprise.serving.server.openapi import row_schema
from reprise.serving.server.scoring import score_now

# test_fast_missing's fixtures: Adult rows, some numbers missing in training and held out
schema = test_fast_missing.schema
halves = test_fast_missing.halves
ROWS = 40


@pytest.fixture(scope="module")
def kinds(schema) -> dict[str, str]:
    """The signature's kinds: half the numbers integers, half floats, then the text."""
    numeric = list(schema.numeric)
    found = {c: ("integer" if k % 2 == 0 else "number") for k, c in enumerate(numeric)}
    return {**found, **dict.fromkeys(schema.categorical, "string")}


@pytest.fixture(scope="module")
def imputing(schema, halves) -> Any:
    from training import Preprocess

    return fitted(schema, halves[0], "decision_tree", Preprocess(missing_indicator=True))


@pytest.fixture(scope="module")
def passing_through(schema, halves) -> Any:
    train = halves[0].dropna(subset=list(schema.numeric))
    return refitted(schema, train, "decision_tree", "passthrough")


def served_ways(model: Any, kinds: dict[str, str]) -> dict[str, ServedModel]:
    """The model served by its compiled scorer, and by scikit-learn alone (no scorer)."""
    return {
        "fast": ServedModel("test", None, kinds, scorer=FastScorer.compile(model)),
        "scikit-learn": ServedModel("test", model, kinds),
    }


@pytest.fixture(scope="module")
def rows(halves, kinds) -> pd.DataFrame:
    """Held-out rows, every number column missing somewhere."""
    frame = halves[1].iloc[:ROWS][list(kinds)].reset_index(drop=True)
    assert frame[[c for c, k in kinds.items() if k != "string"]].isna().any().all()
    return frame


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """As JSON gives them: None for a missing value."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def expected(model: Any, frame: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(frame)[:, 1]


@pytest.mark.parametrize("way", ["fast", "scikit-learn"])
def test_a_model_that_imputes_says_which_columns(imputing, passing_through, kinds, way) -> None:
    numbers = {c for c, k in kinds.items() if k != "string"}
    assert served_ways(imputing, kinds)[way].imputed == numbers
    assert served_ways(passing_through, kinds)[way].imputed == frozenset()


@pytest.mark.parametrize("way", ["fast", "scikit-learn"])
def test_requests_with_null_and_nan_numbers_are_scored_as_scikit_learn(
    imputing, kinds, rows, way
) -> None:
    served = served_ways(imputing, kinds)[way]
    given = records(rows)
    column = next(c for c, k in kinds.items() if k == "number")
    given[1][column] = float("nan")  # JSON's NaN literal, which Python's parser reads
    columns = served.columns_from_records(given)
    proba, labels = score_now(served, columns)
    np.testing.assert_allclose(proba, expected(imputing, rows), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(labels, imputing.predict(rows))


@pytest.mark.parametrize("way", ["fast", "scikit-learn"])
@pytest.mark.parametrize("missing", [None, float("nan")], ids=["null", "NaN"])
def test_a_model_that_cannot_impute_refuses_a_missing_number_as_before(
    passing_through, kinds, rows, way, missing
) -> None:
    served = served_ways(passing_through, kinds)[way]
    for column, kind in kinds.items():
        if kind == "string":
            continue
        given = records(rows.fillna({c: 1 for c in kinds if kinds[c] != "string"}))
        given[2][column] = missing
        with pytest.raises(InputError) as refused:
            served.columns_from_records(given)
        name = "an integer" if kind == "integer" else "a number"
        problem = f"must be {name}, got None" if missing is None else "must be a finite number"
        assert str(refused.value).startswith(f"row 2: {column}: {problem}"), refused.value


@pytest.mark.parametrize("infinity", [math.inf, -math.inf])
def test_infinity_is_refused_even_where_the_model_imputes(imputing, kinds, rows, infinity):
    served = served_ways(imputing, kinds)["fast"]
    given = records(rows)
    for column, kind in kinds.items():
        if kind == "string":
            continue
        bad = [dict(r) for r in given]
        bad[3][column] = infinity
        with pytest.raises(InputError, match=f"row 3: {column}: must be a finite number"):
            served.columns_from_records(bad)
        frame = rows.astype({column: object})
        frame.loc[3, column] = infinity
        reasons, _ = check_and_type(served, frame)
        assert reasons[3] == f"{column}: must be a finite number, got {infinity!r}"
        assert (reasons.drop(index=3) == "").all()


def file_rows(rows: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """The rows as a file's reader may give them: numbers as objects, None where missing, and
    text that is no number in one row."""
    frame = rows.astype({c: object for c, k in kinds.items() if k != "string"})
    return frame.where(frame.notna(), None)


@pytest.mark.parametrize("way", ["fast", "scikit-learn"])
def test_file_rows_missing_numbers_pass_the_checks_and_score(imputing, kinds, rows, way):
    served = served_ways(imputing, kinds)[way]
    for frame in (rows, file_rows(rows, kinds)):
        reasons, typed = check_and_type(served, frame)
        assert (reasons == "").all(), reasons[reasons != ""]
        for column, kind in kinds.items():  # an integer column missing a value: float64
            if kind != "string":
                assert typed[column].dtype == np.float64, column
        scores = score_frame(served, frame)
        assert len(scores.bad_positions) == 0
        np.testing.assert_allclose(scores.probability, expected(imputing, rows), atol=1e-12)
    whole = rows.dropna(subset=[c for c, k in kinds.items() if k == "integer"])
    assert check_and_type(served, whole)[1][next(iter(kinds))].dtype == np.int64


def test_text_that_is_no_number_stays_refused_where_the_model_imputes(imputing, kinds, rows):
    served = served_ways(imputing, kinds)["fast"]
    frame = file_rows(rows, kinds)
    column = next(iter(kinds))
    frame.loc[5, column] = "NaN"  # in a CSV this is text: only an empty field is missing
    frame.loc[6, column] = "abc"
    reasons, _ = check_and_type(served, frame)
    assert kinds[column] == "integer"
    assert reasons[5] == f"{column}: must be an integer, got 'NaN'"
    assert reasons[6] == f"{column}: must be an integer, got 'abc'"
    assert (reasons.drop(index=[5, 6]) == "").all()


@pytest.mark.parametrize("way", ["fast", "scikit-learn"])
def test_file_rows_missing_numbers_are_refused_as_before_by_a_model_that_cannot_impute(
    passing_through, kinds, rows, way
):
    served = served_ways(passing_through, kinds)[way]
    reasons, typed = check_and_type(served, file_rows(rows, kinds))
    missing = rows[[c for c, k in kinds.items() if k != "string"]].isna()
    assert (reasons != "").tolist() == missing.any(axis=1).tolist()
    first = missing.idxmax(axis=1)[missing.any(axis=1)]
    for row, column in first.items():
        name = "an integer" if kinds[column] == "integer" else "a number"
        assert reasons[row] == f"{column}: must be {name}, got a missing value"
    assert len(typed) == (~missing.any(axis=1)).sum()


def test_arrow_nulls_take_the_fast_path_and_score(imputing, passing_through, kinds, rows):
    table = pa.Table.from_pandas(rows, preserve_index=False)
    integers = [c for c, k in kinds.items() if k == "integer"]
    for column in integers:  # as a Parquet file's integer column with nulls holds them
        index = table.schema.get_field_index(column)
        table = table.set_column(index, column, pa.array(rows[column].astype("Int64")))
    served = served_ways(imputing, kinds)["fast"]
    assert arrow_clean(served.columns, table, served.imputed)
    assert not arrow_clean(served.columns, table)  # nothing imputed: checked path
    scores = score_table(served, table)
    assert len(scores.bad_positions) == 0
    np.testing.assert_allclose(scores.probability, expected(imputing, rows), atol=1e-12)
    # a NaN value (not a null) takes the checked path, and is scored there too
    column = next(c for c, k in kinds.items() if k == "number")
    nan = pa.array(rows[column].to_numpy(), from_pandas=False)
    assert nan.null_count == 0
    with_nan = table.set_column(table.schema.get_field_index(column), column, nan)
    assert not arrow_clean(served.columns, with_nan, served.imputed)
    scores = score_table(served, with_nan)
    np.testing.assert_allclose(scores.probability, expected(imputing, rows), atol=1e-12)

    old = served_ways(passing_through, kinds)["fast"]
    refused = score_table(old, table)
    missing = rows[[c for c, k in kinds.items() if k != "string"]].isna().any(axis=1)
    assert refused.bad_positions.tolist() == np.flatnonzero(missing).tolist()


def test_the_spark_engine_keeps_refusing_a_missing_number(imputing, kinds, rows) -> None:
    """Its label comes from mlflow's spark_udf, which reads an integer column as int64."""
    served = served_ways(imputing, kinds)["fast"]
    reasons, _ = check_and_type(served, file_rows(rows, kinds), impute=False)
    missing = rows[[c for c, k in kinds.items() if k != "string"]].isna().any(axis=1)
    assert (reasons != "").tolist() == missing.tolist()
    assert all("got a missing value" in r for r in reasons[reasons != ""])


def test_the_openapi_schema_shows_an_imputed_number_as_number_or_null(
    imputing, passing_through, kinds
) -> None:
    new = row_schema(served_ways(imputing, kinds)["fast"])["properties"]
    old = row_schema(served_ways(passing_through, kinds)["fast"])["properties"]
    for column, kind in kinds.items():
        if kind == "string":
            assert new[column] == old[column] == {"type": ["string", "null"]}
            continue
        assert new[column]["type"] == [kind, "null"]
        assert old[column]["type"] == kind
