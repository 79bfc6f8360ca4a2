"""The online inference server as a user runs it (`python -m reprise serve`, a real process on
127.0.0.1): parity with scikit-learn on every test row, MLflow's scoring protocol, refusals of
bad input, the hot switch of prod under load, and the refusal to start without a prod model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from support import ROOT, ServedStore, Workspace, free_port

# one xdist group per store: its fixtures are made once, in one worker
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("served")]

READY_TIMEOUT_S = 90
STOP_TIMEOUT_S = 20
BATCH = 500
TARGET = "income"
POLL_SECONDS = "0.5"


@dataclass
class Server:
    """A `reprise serve` process and where it answers."""

    process: subprocess.Popen
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(env: dict[str, str], log: Path, *args: str) -> Server:
    """`python -m reprise serve --port <free> ARGS`, returned once /ready answers 200."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "reprise", "serve", "--port", str(port), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(
                f"the server exited with {process.returncode}:\n{server.log_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            pytest.fail(f"the server was not ready in {READY_TIMEOUT_S} s:\n{server.log_text()}")
        time.sleep(0.2)


def stop_server(server: Server) -> int:
    """SIGTERM to the server's PID, SIGKILL to its process group if it does not stop in time."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=STOP_TIMEOUT_S)
    return server.process.returncode


@pytest.fixture(scope="module")
def server(served_store: ServedStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The server of the prod alias, polling it every POLL_SECONDS."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    running = start_server(served_store.workspace.env, log, "--poll-seconds", POLL_SECONDS)
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def test_frame(served_store: ServedStore) -> pd.DataFrame:
    """The held-out test split without its target, as the model reads it."""
    return pd.read_parquet(served_store.test_table).drop(columns=[TARGET])


def as_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: Python scalars, missing values as null."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


@pytest.fixture(scope="module")
def sklearn_model(served_store: ServedStore) -> Any:
    """The prod model version loaded by MLflow in this process: the reference answers."""
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(served_store.workspace.tracking_uri)
    try:
        return mlflow.sklearn.load_model(
            f"models:/{served_store.model_name}/{served_store.model_version}"
        )
    finally:
        mlflow.set_tracking_uri(before)


@pytest.fixture(scope="module")
def good_row(test_frame: pd.DataFrame) -> dict[str, Any]:
    return as_records(test_frame.head(1))[0]


def test_predict_matches_sklearn_on_every_test_row(
    client: httpx.Client, test_frame: pd.DataFrame, sklearn_model: Any, served_store: ServedStore
) -> None:
    records = as_records(test_frame)
    labels: list[int] = []
    probabilities: list[float] = []
    for start in range(0, len(records), BATCH):
        answer = client.post("/predict", json=records[start : start + BATCH])
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] == served_store.model_version
        assert body["threshold"] == pytest.approx(float(sklearn_model.threshold))
        labels += [p["label"] for p in body["predictions"]]
        probabilities += [p["probability"] for p in body["predictions"]]
    assert len(labels) == len(test_frame)
    expected = sklearn_model.predict_proba(test_frame)[:, 1]
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(labels, sklearn_model.predict(test_frame))
    one = client.post("/predict", json=records[0])  # one row, not in a list
    assert one.status_code == 200 and len(one.json()["predictions"]) == 1
    assert one.json()["predictions"][0]["label"] == labels[0]


@pytest.mark.parametrize("fmt", ["dataframe_split", "dataframe_records", "instances", "inputs"])
def test_invocations_answers_as_mlflow_in_each_format(
    client: httpx.Client, test_frame: pd.DataFrame, sklearn_model: Any, fmt: str
) -> None:
    frame = test_frame.head(300)
    records = as_records(frame)
    if fmt == "dataframe_split":
        payload: Any = {
            "columns": list(frame.columns),
            "data": [list(row.values()) for row in records],
        }
    elif fmt == "inputs":  # the columnar form: column -> values
        payload = {column: [row[column] for row in records] for column in frame.columns}
    else:
        payload = records
    answer = client.post("/invocations", json={fmt: payload})
    assert answer.status_code == 200, answer.text
    assert list(answer.json()) == ["predictions"]
    assert answer.json()["predictions"] == sklearn_model.predict(frame).tolist()


def test_invocations_reads_csv(
    client: httpx.Client, test_frame: pd.DataFrame, sklearn_model: Any
) -> None:
    frame = test_frame.head(200)
    answer = client.post(
        "/invocations",
        content=frame.to_csv(index=False).encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == sklearn_model.predict(frame).tolist()


def _without(row: dict[str, Any], column: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != column}


# (endpoint, how to change the good row into a bad body, status, field named, row named)
BAD_JSON_BODIES = {
    "missing column": ("/predict", lambda r: _without(r, "age"), 422, "age", 0),
    "text for an integer": ("/predict", lambda r: {**r, "age": "forty"}, 422, "age", 0),
    "fraction for an integer": ("/predict", lambda r: {**r, "age": 39.5}, 422, "age", 0),
    "boolean for an integer": ("/predict", lambda r: {**r, "fnlwgt": True}, 422, "fnlwgt", 0),
    # null for a number: the served model imputes it (scored); a model that cannot impute
    # refuses it, see test_missing_numbers_e2e
    "number for text": ("/predict", lambda r: {**r, "workclass": 3}, 422, "workclass", 0),
    "integer out of range": ("/predict", lambda r: {**r, "age": 10**30}, 422, "age", 0),
    "unknown extra field": ("/predict", lambda r: {**r, "colour": "red"}, 422, "colour", 0),
    "bad second row": ("/predict", lambda r: [r, _without(r, "race")], 422, "race", 1),
    "empty list": ("/predict", lambda r: [], 422, None, None),
    "row not an object": ("/predict", lambda r: [r, 7], 422, None, 1),
    "a bare number": ("/predict", lambda r: 7, 422, None, None),
    "MLflow body sent to /predict": (
        "/predict",
        lambda r: {"dataframe_records": [r]},
        422,
        "dataframe_records",
        None,
    ),
    "two formats at once": (
        "/invocations",
        lambda r: {"dataframe_records": [r], "instances": [r]},
        400,
        "dataframe_records,instances",
        None,
    ),
    "no format": ("/invocations", lambda r: {"rows": [r]}, 400, "rows", None),
    "not an object": ("/invocations", lambda r: [r], 400, None, None),
    "missing column, MLflow format": (
        "/invocations",
        lambda r: {"dataframe_records": [_without(r, "gender")]},
        422,
        "gender",
        0,
    ),
    "split row of the wrong length": (
        "/invocations",
        lambda r: {"dataframe_split": {"columns": list(r), "data": [list(r.values())[:-1]]}},
        422,
        "dataframe_split.data",
        0,
    ),
}


@pytest.mark.parametrize("case", list(BAD_JSON_BODIES))
def test_bad_json_input_is_refused_naming_the_field(
    client: httpx.Client, good_row: dict[str, Any], case: str
) -> None:
    endpoint, make_body, status, field, row = BAD_JSON_BODIES[case]
    answer = client.post(endpoint, json=make_body(good_row))
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["field"] == field and body["row"] == row, body
    assert "Fix: " in body["detail"] and "\n" not in body["detail"]
    if field:
        assert field in body["detail"]
    assert client.get("/health").status_code == 200


# (endpoint, raw body, content type, status)
BAD_RAW_BODIES = {
    "empty body": ("/predict", b"", "application/json", 400),
    "blank body": ("/invocations", b"  \n", "application/json", 400),
    "malformed JSON": ("/predict", b'{"age": 39,', "application/json", 400),
    "malformed JSON, MLflow": ("/invocations", b"{dataframe_split:", "application/json", 400),
    "not UTF-8": ("/predict", b"\xff\xfe\x00", "application/json", 400),
    "unknown content type": ("/invocations", b"age=39", "text/plain", 415),
    "empty CSV": ("/invocations", b"", "text/csv", 400),
    "CSV with a text age": ("/invocations", b"age\nforty\n", "text/csv", 422),
}


@pytest.mark.parametrize("case", list(BAD_RAW_BODIES))
def test_bad_raw_input_is_refused(client: httpx.Client, case: str) -> None:
    endpoint, content, content_type, status = BAD_RAW_BODIES[case]
    answer = client.post(endpoint, content=content, headers={"Content-Type": content_type})
    assert answer.status_code == status, answer.text
    assert answer.json()["problem"] and "Fix: " in answer.json()["detail"]
    assert client.get("/health").status_code == 200


def test_oversized_payload_is_refused_with_413(server: Server, good_row: dict[str, Any]) -> None:
    body = json.dumps([good_row] * 4000).encode()  # about 1.3 MB: over the 1 MiB default
    assert len(body) > 1024 * 1024

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count the bytes
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    for endpoint in ("/predict", "/invocations"):
        for content in (body, chunks()):
            with httpx.Client(base_url=server.url, timeout=30) as http:
                answer = http.post(
                    endpoint, content=content, headers={"Content-Type": "application/json"}
                )
                assert answer.status_code == 413, answer.text
                assert "max-body-bytes" in answer.json()["detail"]
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert httpx.post(f"{server.url}/predict", json=[good_row] * 1000).status_code == 200


def test_version_ready_and_docs(client: httpx.Client, served_store: ServedStore) -> None:
    version = client.get("/version").json()
    assert version["registered_model"] == served_store.model_name
    assert version["model_version"] == served_store.model_version
    assert version["model_uri"] == f"models:/adult_income/{served_store.model_version}"
    assert version["reference"] == "models:/adult_income@prod" and version["follows_alias"]
    assert version["fast_path"] is True and 0 < version["threshold"] < 1
    assert version["inputs"]["age"] == "integer" and version["inputs"]["race"] == "string"
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/invocations", "/health", "/ready", "/version"} <= set(schema["paths"])
    # the served model imputes a missing number: null is a value of the column too
    assert schema["components"]["schemas"]["Row"]["properties"]["age"] == {
        "type": ["integer", "null"],
        "minimum": -(2**63),
        "maximum": 2**63 - 1,
    }


def test_prod_moves_while_requests_flow_and_none_fails(
    server: Server, client: httpx.Client, served_store: ServedStore, good_row: dict[str, Any]
) -> None:
    from mlflow.tracking import MlflowClient

    registry = MlflowClient(tracking_uri=served_store.workspace.tracking_uri)
    name, old = served_store.model_name, served_store.model_version
    failures: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def send_continuously() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while not stop.is_set():
                try:
                    answer = http.post("/predict", json=good_row)
                except httpx.HTTPError as err:
                    failures.append(repr(err))
                    continue
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text}")
                else:
                    versions.append(answer.json()["model_version"])

    sender = threading.Thread(target=send_continuously)
    sender.start()
    new = None
    try:
        time.sleep(0.5)
        new = registry.copy_model_version(f"models:/{name}/{old}", name).version
        registry.set_registered_model_alias(name, "prod", new)
        deadline = time.monotonic() + 60
        while client.get("/version").json()["model_version"] != str(new):
            assert time.monotonic() < deadline, "the server never switched to the new version"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        sender.join(timeout=60)
        registry.set_registered_model_alias(name, "prod", old)
    assert not failures, failures[:5]
    assert versions[0] == old and versions[-1] == str(new), (versions[0], versions[-1])
    switch = versions.index(str(new))
    assert set(versions[switch:]) == {str(new)}, (
        "an answer came from the old model after the switch"
    )
    assert len(versions) > 50, f"only {len(versions)} requests were sent"

    # back to the old version at once, without waiting for the poll
    reloaded = client.post("/reload")
    assert reloaded.status_code == 200, reloaded.text
    assert client.get("/version").json()["model_version"] == old
    registry.delete_model_version(name, new)
    assert "bug while answering" not in server.log_text()


def test_fixed_model_on_two_workers_stops_cleanly_on_sigterm(
    served_store: ServedStore, good_row: dict[str, Any], tmp_path: Path
) -> None:
    uri = f"models:/{served_store.model_name}/{served_store.model_version}"
    fixed = start_server(
        served_store.workspace.env, tmp_path / "fixed.log", "--model", uri, "--workers", "2"
    )
    try:
        with httpx.Client(base_url=fixed.url, timeout=30) as http:
            for _ in range(20):  # both workers get some, whichever answers
                answer = http.post("/predict", json=good_row)
                assert answer.status_code == 200, answer.text
                assert answer.json()["model_version"] == served_store.model_version
            version = http.get("/version").json()
            assert version["reference"] == uri and version["follows_alias"] is False
            reload = http.post("/reload")
            assert reload.status_code == 409 and "fixed model" in reload.json()["detail"]
    finally:
        code = stop_server(fixed)
    assert code == 0, fixed.log_text()
    assert "Traceback" not in fixed.log_text(), fixed.log_text()


def test_no_prod_model_exits_1_with_one_line(workspace: Workspace) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reprise", "serve", "--port", str(free_port())],
        cwd=ROOT,
        env=workspace.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert "No model version of 'adult_income' is aliased 'prod'" in errors[0]
    assert "make promote VERSION=X.Y.Z" in errors[0]
    assert "Traceback" not in result.stderr
