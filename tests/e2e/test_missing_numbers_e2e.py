"""Rows with missing numbers end to end (issue 13): the served model of a real pipeline run, which
imputes its numbers, scores a request with null for a number over HTTP and every row of a CSV
and a Parquet file with missing numbers (`python -m reprise predict`), as scikit-learn does;
a model that cannot impute (a release cut before imputation) keeps refusing them; a scorer
compiled in the previous format is compiled again, not misread."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import test_fast_missing
from test_batch_e2e import counts, ok, predict
from test_fast_missing import fitted, refitted
from test_server_hardening import _walk
from test_serving_e2e import TARGET, start_server, stop_server

from reprise.serving import fast
from reprise.serving.fast import FastScorer
from reprise.serving.model import _compiled_path, load
from reprise.serving.reference import resolve
from support import (
    ServedStore,
    log_and_register,
    reprise,
    workspace_env,
    workspace_process,
)

# one xdist group per store: its fixtures are made once, in one worker
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("served")]

schema = test_fast_missing.schema
halves = test_fast_missing.halves
TOLERANCE = 1e-12
NAME = "missing_e2e"


def reference_model(store: ServedStore) -> Any:
    """The prod model version, loaded by MLflow in this process: the reference answers."""
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store.workspace.tracking_uri)
    try:
        return mlflow.sklearn.load_model(f"models:/{store.model_name}/{store.model_version}")
    finally:
        mlflow.set_tracking_uri(before)


@pytest.fixture(scope="module")
def served(served_store: ServedStore) -> tuple[Any, pd.DataFrame, list[str]]:
    """(the prod model, the test split with numbers missing in every number column, those
    columns)."""
    frame = pd.read_parquet(served_store.test_table).drop(columns=[TARGET])
    numbers = list(frame.select_dtypes("number").columns)
    assert numbers
    for k, column in enumerate(numbers):
        frame[column] = frame[column].astype("Int64").mask(frame.index % (5 + k) == k)
    return reference_model(served_store), frame, numbers


def as_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def as_float(frame: pd.DataFrame, numbers: list[str]) -> pd.DataFrame:
    """The frame as scikit-learn reads a column with missing numbers: float64, NaN."""
    return frame.astype({c: "float64" for c in numbers})


def test_the_served_model_scores_null_numbers_over_http(
    served_store: ServedStore, served, tmp_path: Path
) -> None:
    model, frame, numbers = served
    rows = frame.head(300)
    wanted = model.predict_proba(as_float(rows, numbers))[:, 1]
    server = start_server(served_store.workspace.env, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/version").json()["fast_path"] is True
            answer = client.post("/predict", json=as_records(rows))
            assert answer.status_code == 200, answer.text
            got = [p["probability"] for p in answer.json()["predictions"]]
            np.testing.assert_allclose(got, wanted, rtol=0, atol=TOLERANCE)

            one = as_records(rows.head(1))[0]
            one = {**one, numbers[0]: None}
            answer = client.post("/predict", json=one)
            assert answer.status_code == 200, answer.text
            alone = as_float(pd.DataFrame([one]), numbers)[list(frame.columns)]
            assert answer.json()["predictions"][0]["probability"] == pytest.approx(
                model.predict_proba(alone)[0, 1], abs=TOLERANCE
            )

            csv = rows.to_csv(index=False).encode()  # a missing number: an empty field
            answer = client.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
            assert answer.status_code == 200, answer.text
            labels = model.predict(as_float(rows, numbers)).tolist()
            assert answer.json()["predictions"] == labels  # MLflow's protocol: labels

            split = {
                "columns": list(rows.columns),
                "data": [list(r.values()) for r in as_records(rows)],
            }
            answer = client.post("/invocations", json={"dataframe_split": split})
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == labels

            for infinity in ("Infinity", "-Infinity"):
                body = json.dumps({**one, numbers[0]: 0}).replace(
                    f'"{numbers[0]}": 0', f'"{numbers[0]}": {infinity}'
                )
                answer = client.post(
                    "/predict", content=body, headers={"Content-Type": "application/json"}
                )
                assert answer.status_code == 422, answer.text
                assert answer.json()["field"] == numbers[0]
                assert answer.json()["problem"].startswith("must be a finite number"), answer.text

            document = client.get("/openapi.json").json()
            found = [
                node["properties"][numbers[0]]["type"]
                for node in _walk(document)
                if numbers[0] in node.get("properties", {})
            ]
            assert found and all("null" in kinds for kinds in found), found
    finally:
        stop_server(server)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize(
    "split", [[], ["--chunk-rows", "1000", "--workers", "2"]], ids=["one", "chunks"]
)
def test_predict_scores_every_row_of_a_file_with_missing_numbers(
    served_store: ServedStore, served, tmp_path: Path, kind: str, split: list[str]
) -> None:
    model, frame, numbers = served
    source = tmp_path / f"in.{kind}"
    if kind == "csv":
        frame.to_csv(source, index=False)  # a missing number: an empty field
    else:
        table = pa.Table.from_pandas(frame, preserve_index=False)  # integers with nulls
        # one column of floats holding NaN values, not nulls
        column = numbers[1]
        nan = pa.array(as_float(frame, numbers)[column].to_numpy(), from_pandas=False)
        assert nan.null_count == 0 and pa.types.is_integer(table.schema.field(numbers[0]).type)
        table = table.set_column(table.schema.get_field_index(column), column, nan)
        pq.write_table(table, source)
    out = tmp_path / "out.parquet"
    stdout = ok(predict(served_store, "--input", str(source), "--output", str(out), *split))
    assert counts(stdout) == (len(frame), len(frame), 0)
    assert not (tmp_path / "out.quarantine.parquet").exists()
    scored = pd.read_parquet(out)
    assert scored["row"].tolist() == list(range(len(frame)))
    features = as_float(frame, numbers)
    np.testing.assert_allclose(
        scored["probability"], model.predict_proba(features)[:, 1], rtol=0, atol=TOLERANCE
    )
    np.testing.assert_array_equal(scored["label"], model.predict(features))


def test_the_spark_engine_quarantines_rows_missing_numbers_as_before(
    served_store: ServedStore, served, tmp_path: Path
) -> None:
    """Not scored there yet: its label comes from MLflow's spark_udf, which reads an integer
    column as int64. It sets such rows aside, as before imputation, and scores the rest."""
    model, frame, numbers = served
    rows = frame.head(400)
    rows.to_parquet(tmp_path / "in.parquet", index=False)
    out = tmp_path / "out.parquet"
    args = ["--input", str(tmp_path / "in.parquet"), "--output", str(out)]
    result = predict(served_store, *args, "--engine", "spark", "--on-error", "quarantine")
    missing = rows[numbers].isna().any(axis=1)
    assert counts(ok(result)) == (len(rows), int((~missing).sum()), int(missing.sum()))
    side = pd.read_parquet(tmp_path / "out.quarantine.parquet")
    assert side["row"].tolist() == np.flatnonzero(missing).tolist()
    assert all("got a missing value" in reason for reason in side["reason"])
    scored = pd.read_parquet(out).sort_values("row")
    whole = rows[~missing].astype({c: "int64" for c in numbers})
    np.testing.assert_allclose(
        scored["probability"], model.predict_proba(whole)[:, 1], rtol=0, atol=TOLERANCE
    )


# --- models of other releases, in a store of their own ----------------------------------------------
@dataclass
class Store:
    env: dict[str, str]
    old: Any  # version 1: numbers passed through, as releases cut before imputation have
    new: Any  # version 2: numbers imputed, with missing indicators
    rows: pd.DataFrame  # held-out rows, numbers missing in every number column


@pytest.fixture(scope="module")
def store(tmp_path_factory, schema, halves) -> Iterator[Store]:
    import mlflow

    from training import Preprocess

    path = tmp_path_factory.mktemp("missing")
    env = workspace_env(path)
    numbers = list(schema.numeric)
    # whole numbers as integers, as the bundled data holds them
    whole = {c: "int64" for c in numbers}
    train = halves[0].dropna(subset=numbers).astype(whole)
    example = halves[1].dropna(subset=numbers).astype(whole).head(5)
    with workspace_process(env):
        old = refitted(schema, train, "decision_tree", "passthrough")
        new = fitted(schema, halves[0], "decision_tree", Preprocess(missing_indicator=True))
        assert (
            log_and_register(old, example, NAME)[1],
            log_and_register(new, example, NAME)[1],
        ) == ("1", "2")
        yield Store(env, old, new, halves[1])
        mlflow.set_tracking_uri(None)


def test_a_model_that_cannot_impute_keeps_refusing_missing_numbers(
    store: Store, schema, tmp_path: Path
) -> None:
    """The refusal the serving and batch tests asserted before imputation, on such a model."""
    numbers = list(schema.numeric)
    rows = store.rows.head(50).copy()
    whole = rows.dropna(subset=numbers).astype({c: "int64" for c in numbers})
    server = start_server(store.env, tmp_path / "server.log", "--model", f"models:/{NAME}/1")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            good = as_records(whole.head(1))[0]
            assert client.post("/predict", json=good).status_code == 200
            for column in numbers:
                answer = client.post("/predict", json={**good, column: None})
                assert answer.status_code == 422, answer.text
                body = answer.json()
                assert (body["field"], body["row"]) == (column, 0)
                assert body["problem"] == "must be an integer, got None"
            document = client.get("/openapi.json").json()
            kinds = [
                node["properties"][numbers[0]]["type"]
                for node in _walk(document)
                if numbers[0] in node.get("properties", {})
            ]
            assert kinds and all(kind == "integer" for kind in kinds), kinds
    finally:
        stop_server(server)

    rows.to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "out.parquet"
    args = ["--input", str(tmp_path / "in.csv"), "--output", str(out), "--on-error", "quarantine"]
    result = predict_in(store, *args, "--model", f"models:/{NAME}/1")
    missing = rows[numbers].isna()
    assert counts(ok(result)) == (len(rows), len(whole), int(missing.any(axis=1).sum()))
    side = pd.read_parquet(tmp_path / "out.quarantine.parquet")
    first = missing.idxmax(axis=1)[missing.any(axis=1)]
    assert side["row"].tolist() == first.index.tolist()
    assert side["reason"].tolist() == [
        f"{column}: must be an integer, got a missing value" for column in first
    ]


def predict_in(store: Store, *args: str) -> Any:
    """`python -m reprise predict ARGS` against ``store``."""
    return reprise("predict", *args, env=store.env, timeout=300)


def test_a_scorer_compiled_in_the_previous_format_is_compiled_again(
    store: Store, caplog, monkeypatch
) -> None:
    """Format 1 had no fill values: read as today's it would score a missing number as NaN."""
    uri, meta = resolve(model=f"models:/{NAME}/2")
    compiled = _compiled_path(meta["artifacts"])
    assert compiled is not None
    first = load(uri, meta)
    assert first.scorer is not None and first.imputed and compiled.is_file()
    with monkeypatch.context() as patch:
        patch.setattr(fast, "FORMAT", 1)
        first.scorer.save(compiled, {"columns": first.columns, "uri": uri})
    with caplog.at_level(logging.WARNING, logger="reprise.serving.model"):
        again = load(uri, meta)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"format 1, not {fast.FORMAT}" in warnings[0], warnings
    assert "compiling it again" in warnings[0]
    rows = store.rows
    expected = store.new.predict_proba(rows)[:, 1]
    np.testing.assert_allclose(again.scorer.predict_proba(rows), expected, atol=TOLERANCE)
    reread, _ = FastScorer.load(compiled)  # compiled again in today's format
    np.testing.assert_allclose(reread.predict_proba(rows), expected, atol=TOLERANCE)
