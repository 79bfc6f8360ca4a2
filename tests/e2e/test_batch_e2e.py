"""Offline (batch) inference as a user runs it: `python -m reprise predict ...` on the held-out
test split of a real pipeline run, checked against the scikit-learn model itself."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reprise.serving.fast import FastScorer
from support import ROOT, ServedStore, reprise

# one xdist group per store: its fixtures are made once, in one worker
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("served")]

TARGET = "income"
TOLERANCE = 1e-9
# (row, column, value) written over the test split: each makes its row unscorable (an empty
# field is a missing number, which the served model imputes: test_missing_numbers_e2e)
CORRUPT = [(17, "age", "abc"), (2500, "capital-gain", "1.5"), (9000, "hours-per-week", "inf")]
# a number in a text column is text in a CSV: an unknown category, scored as such
NUMBER_AS_TEXT = (40, "workclass", "7")


@dataclass
class Reference:
    """The test split (target dropped, an id added) and the scikit-learn model's scores of it."""

    frame: pd.DataFrame
    probability: np.ndarray
    label: np.ndarray
    model: object

    def scores(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        features = frame.drop(columns=["id"])
        return self.model.predict_proba(features)[:, 1], self.model.predict(features)


def predict(store: ServedStore, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m reprise predict ARGS` in its own process, against the served store."""
    return reprise("predict", *args, env=store.workspace.env, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout


def counts(stdout: str) -> tuple[int, int, int]:
    found = re.search(r"rows read ([\d,]+)\s+scored ([\d,]+)\s+quarantined ([\d,]+)", stdout)
    assert found, stdout
    read, scored, quarantined = (int(g.replace(",", "")) for g in found.groups())
    return read, scored, quarantined


@pytest.fixture(scope="module")
def reference(served_store: ServedStore) -> Iterator[Reference]:
    import mlflow

    frame = pd.read_parquet(served_store.test_table).drop(columns=[TARGET])
    frame.insert(0, "id", np.arange(len(frame), dtype=np.int64) * 7 + 1000)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(served_store.workspace.tracking_uri)
    try:
        model = mlflow.sklearn.load_model(
            f"models:/{served_store.model_name}/{served_store.model_version}"
        )
    finally:
        mlflow.set_tracking_uri(previous)
    features = frame.drop(columns=["id"])
    yield Reference(frame, model.predict_proba(features)[:, 1], model.predict(features), model)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, reference: Reference) -> Path:
    folder = tmp_path_factory.mktemp("batch-data")
    reference.frame.to_parquet(folder / "test.parquet", index=False)
    return folder


@pytest.fixture(scope="module")
def baseline(served_store: ServedStore, data: Path) -> pd.DataFrame:
    """The whole test split, Parquet in, Parquet out, default settings (one chunk)."""
    out = data / "scored.parquet"
    stdout = ok(predict(served_store, "--input", str(data / "test.parquet"), "--output", str(out)))
    assert f"models:/{served_store.model_name}/{served_store.model_version}" in stdout
    read, scored, quarantined = counts(stdout)
    assert read == scored and quarantined == 0
    return pd.read_parquet(out)


def test_parquet_scores_equal_the_sklearn_model(baseline: pd.DataFrame, reference: Reference):
    assert list(baseline.columns) == ["id", "probability", "label"]
    assert baseline["id"].tolist() == reference.frame["id"].tolist()  # ids kept, in order
    np.testing.assert_allclose(
        baseline["probability"], reference.probability, rtol=0, atol=TOLERANCE
    )
    np.testing.assert_array_equal(baseline["label"].to_numpy(), reference.label)


def test_csv_in_csv_out_with_an_id_column_named(
    served_store: ServedStore, reference: Reference, baseline: pd.DataFrame, tmp_path: Path
):
    frame = reference.frame.rename(columns={"id": "customer"})
    frame["customer"] = [f"c{i:06d}" for i in frame["customer"]]
    frame.to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "out.csv"
    args = ["--input", str(tmp_path / "in.csv"), "--output", str(out)]
    stdout = ok(predict(served_store, *args, "--id-column", "customer"))
    assert counts(stdout) == (len(frame), len(frame), 0)
    scored = pd.read_csv(out, dtype={"customer": str})
    assert list(scored.columns) == ["customer", "probability", "label"]
    assert scored["customer"].tolist() == frame["customer"].tolist()
    np.testing.assert_allclose(
        scored["probability"], baseline["probability"], rtol=0, atol=TOLERANCE
    )
    np.testing.assert_array_equal(scored["label"], baseline["label"])


def test_small_chunks_in_two_workers_give_the_same_output(
    served_store: ServedStore, reference: Reference, baseline: pd.DataFrame, tmp_path: Path
):
    reference.frame.drop(columns=["id"]).to_parquet(tmp_path / "no_id.parquet", index=False)
    out = tmp_path / "out.parquet"
    args = ["--input", str(tmp_path / "no_id.parquet"), "--output", str(out)]
    ok(predict(served_store, *args, "--chunk-rows", "1000", "--workers", "2"))
    scored = pd.read_parquet(out)
    assert list(scored.columns) == ["row", "probability", "label"]  # no id: 0-based row numbers
    assert scored["row"].tolist() == list(range(len(reference.frame)))
    pd.testing.assert_frame_equal(
        scored.drop(columns=["row"]), baseline.drop(columns=["id"]), check_exact=True
    )


def _corrupted_csv(reference: Reference, path: Path) -> pd.DataFrame:
    frame = reference.frame.astype(str).where(reference.frame.notna(), "")
    for row, column, value in [*CORRUPT, NUMBER_AS_TEXT]:
        frame.loc[row, column] = value
    frame.to_csv(path, index=False)
    return frame


def test_a_bad_value_stops_everything_and_names_row_column_and_value(
    served_store: ServedStore, reference: Reference, tmp_path: Path
):
    _corrupted_csv(reference, tmp_path / "bad.csv")
    out = tmp_path / "out.parquet"
    args = ["--input", str(tmp_path / "bad.csv"), "--output", str(out)]
    result = predict(served_store, *args, "--chunk-rows", "1000", "--workers", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "row 17 " in last and "age" in last and "'abc'" in last and "Fix:" in last, last
    assert "quarantine" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]  # no output, no temp file


def test_quarantine_sets_bad_rows_aside_and_scores_the_rest(
    served_store: ServedStore, reference: Reference, tmp_path: Path
):
    _corrupted_csv(reference, tmp_path / "bad.csv")
    out = tmp_path / "out.parquet"
    args = ["--input", str(tmp_path / "bad.csv"), "--output", str(out), "--on-error", "quarantine"]
    stdout = ok(predict(served_store, *args, "--chunk-rows", "3000"))
    read, scored, quarantined = counts(stdout)
    assert (read, scored, quarantined) == (len(reference.frame), len(reference.frame) - 3, 3)
    assert read == scored + quarantined

    side = pd.read_parquet(tmp_path / "out.quarantine.parquet")
    assert list(side.columns) == ["id", "reason"]
    ids = reference.frame["id"].astype(str)
    assert side["id"].tolist() == [ids[row] for row, _, _ in CORRUPT]
    for reason, (_, column, value) in zip(side["reason"], CORRUPT, strict=True):
        assert reason.startswith(f"{column}: "), reason
        assert repr(value) in reason, reason

    result = pd.read_parquet(out)
    bad = [row for row, _, _ in CORRUPT]
    kept = reference.frame.drop(index=bad)
    assert result["id"].tolist() == kept["id"].astype(str).tolist()
    expected = pd.Series(reference.probability).drop(index=bad)
    row = NUMBER_AS_TEXT[0]
    changed = reference.frame.loc[[row]].assign(**{NUMBER_AS_TEXT[1]: NUMBER_AS_TEXT[2]})
    expected[row] = reference.scores(changed)[0][0]
    np.testing.assert_allclose(result["probability"], expected, rtol=0, atol=TOLERANCE)


def test_a_missing_model_column_fails_before_scoring(
    served_store: ServedStore, reference: Reference, tmp_path: Path
):
    reference.frame.drop(columns=["education", "race"]).to_parquet(tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    result = predict(served_store, "--input", str(tmp_path / "in.parquet"), "--output", str(out))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "'education'" in last and "'race'" in last and "Fix:" in last, last
    assert not out.exists()


def test_spark_engine_gives_the_local_engine_scores(
    served_store: ServedStore, data: Path, baseline: pd.DataFrame
):
    out = data / "spark.parquet"
    args = ["--input", str(data / "test.parquet"), "--output", str(out), "--engine", "spark"]
    stdout = ok(predict(served_store, *args, timeout=600))
    assert counts(stdout) == (len(baseline), len(baseline), 0)
    scored = pd.read_parquet(out)  # Spark writes a folder of part files
    assert list(scored.columns) == ["id", "probability", "label"]
    assert scored["id"].tolist() == baseline["id"].tolist()
    np.testing.assert_allclose(
        scored["probability"], baseline["probability"], rtol=0, atol=TOLERANCE
    )
    np.testing.assert_array_equal(scored["label"], baseline["label"])


def test_the_registry_read_directly_agrees_with_mlflow(
    served_store: ServedStore, monkeypatch: pytest.MonkeyPatch
):
    from mlflow.tracking import MlflowClient

    from reprise.serving.registry import local_version

    name, version = served_store.model_name, served_store.model_version
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served_store.workspace.tracking_uri)
    client = MlflowClient(served_store.workspace.tracking_uri)
    expected = client.get_model_version_download_uri(name, version)
    by_alias = local_version(name, alias="prod")
    assert by_alias is not None and by_alias.version == version
    assert by_alias.artifacts.as_uri() == expected
    assert local_version(name, version=version) == by_alias
    assert local_version(name, alias="no-such-alias") is None
    assert local_version(name, version="999") is None
    assert local_version("no-such-model", alias="prod") is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # a server: MLflow's to ask
    assert local_version(name, alias="prod") is None


def test_a_version_scored_before_loads_compiled_without_mlflow(
    served_store: ServedStore, data: Path, baseline: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
):
    """The first predict of a version compiled it into the cache folder; later ones read that
    and import neither MLflow nor scikit-learn, with the same scores. A damaged compiled file
    is compiled again, and nothing is lost."""
    from reprise.serving.model import _compiled_path
    from reprise.serving.reference import resolve

    for variable in ("MLFLOW_TRACKING_URI", "REPRISE_CACHE_DIR"):
        monkeypatch.setenv(variable, served_store.workspace.env[variable])
    compiled = _compiled_path(resolve()[1]["artifacts"])
    assert compiled is not None and compiled.is_file()
    program = (
        "import sys\n"
        "from reprise.serving.batch import predict\n"
        f"result = predict({str(data / 'test.parquet')!r}, {str(data / 'again.parquet')!r})\n"
        "print(result.model['fast_path'], sorted(m for m in ('mlflow', 'sklearn') "
        "if m in sys.modules))\n"
    )
    env = served_store.workspace.env
    run = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert ok(run).splitlines()[-1] == "True []"
    pd.testing.assert_frame_equal(pd.read_parquet(data / "again.parquet"), baseline)

    compiled.write_bytes(b"not a compiled model")
    out = data / "after-damage.parquet"
    result = predict(served_store, "--input", str(data / "test.parquet"), "--output", str(out))
    assert "unreadable" in ok(result) + result.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(out), baseline)
    FastScorer.load(compiled)  # compiled again, in place
