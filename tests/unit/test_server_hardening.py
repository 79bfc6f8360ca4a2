"""The online server's guards as pure functions, in milliseconds: CSV lines whose field count is
not the header's, keys named twice at any depth, the cap on rows, the API key, loopback hosts,
the settings that reach the workers, the OpenAPI document, and the rate-limited log of accept
errors. The same guards over HTTP, on a real server, are in test_server_hardening_e2e.py."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
import subprocess
import sys
from typing import Any

import pytest
from starlette.requests import Request

from reprise.serving import connections
from reprise.serving.reference import ModelReference
from reprise.serving.server.app import create_app
from reprise.serving.server.guards import check_key, is_loopback
from reprise.serving.server.protocol import (
    check_containers,
    check_csv_fields,
    parse_json,
    records_from_mlflow_json,
)
from reprise.serving.server.refusals import RequestProblem
from reprise.serving.server.settings import Settings

HEADER = "age,workclass,fnlwgt\n"


# (CSV body, line the refusal names, fields on it)
MISCOUNTED_CSV = {
    "one extra field on every row": (HEADER + "39,State-gov,77516,x\n50,Private,83311,y\n", 2, 4),
    "one field short": (HEADER + "39,State-gov\n", 2, 2),
    "a bad third row only": (HEADER + "39,a,1\n40,b,2\n41,c,3,extra\n", 4, 4),
    "an unquoted comma in a text": (HEADER + "39,Self-emp, inc,77516\n", 2, 4),
    "a blank line, then a short row": (HEADER + "39,a,1\n\n40\n", 4, 1),
}


@pytest.mark.parametrize("case", list(MISCOUNTED_CSV))
def test_csv_lines_with_another_field_count_than_the_header_are_refused(case: str) -> None:
    body, line, count = MISCOUNTED_CSV[case]
    with pytest.raises(RequestProblem) as refused:
        check_csv_fields(body.encode(), max_rows=100)
    assert refused.value.status == 422
    assert refused.value.field == f"line {line}"
    assert refused.value.problem == f"line {line} holds {count} fields, the header 3"


@pytest.mark.parametrize(
    "body",
    [
        HEADER + "39,State-gov,77516\n",
        HEADER + '39,"Self-emp, inc",77516\n',  # a quoted comma is part of the field
        HEADER + "39,,77516\r\n40,a,1\r\n",  # an empty field, CRLF line ends
        HEADER + "39,a,1\n\n",  # a trailing blank line
        '\ufeffage,workclass,fnlwgt\n39,"a ""b""",1\n',  # a byte-order mark, quoted quotes
    ],
)
def test_csv_lines_with_the_header_field_count_pass(body: str) -> None:
    check_csv_fields(body.encode(), max_rows=100)


def test_csv_rows_over_the_cap_are_refused_with_413() -> None:
    body = HEADER + "39,a,1\n" * 11
    check_csv_fields(body.encode(), max_rows=11)
    with pytest.raises(RequestProblem) as refused:
        check_csv_fields(body.encode(), max_rows=10)
    assert refused.value.status == 413 and "11 rows, more than the 10" in refused.value.problem


# JSON bodies that name a key twice in one object, at several depths: (body, the key named)
DUPLICATE_KEYS = {
    "a row": ('{"age": 39, "age": 40}', "age"),
    "a row in a list": ('[{"age": 1}, {"race": "a", "race": "b"}]', "race"),
    "the format key": ('{"dataframe_records": [], "dataframe_records": [{}]}', "dataframe_records"),
    "a row of dataframe_records": ('{"dataframe_records": [{"x": 1, "y": 2, "x": 3}]}', "x"),
    "dataframe_split": (
        '{"dataframe_split": {"columns": [], "data": [], "columns": []}}',
        "columns",
    ),
    "deep in params": ('{"params": {"a": {"b": {"c": 1, "c": 2}}}}', "c"),
}


@pytest.mark.parametrize("case", list(DUPLICATE_KEYS))
def test_a_key_named_twice_in_an_object_is_refused_at_any_depth(case: str) -> None:
    body, key = DUPLICATE_KEYS[case]
    with pytest.raises(RequestProblem) as refused:
        parse_json(body.encode())
    assert refused.value.status == 400 and refused.value.field == key
    assert refused.value.problem == "an object of the body names this key twice"


def test_keys_that_differ_or_repeat_in_other_objects_pass() -> None:
    body = '[{"age": 1, "Age": 2}, {"age": 3}, {"a": {"age": 4}}]'
    assert parse_json(body.encode()) == json.loads(body)


def _rows(count: int) -> list[dict[str, Any]]:
    return [{"age": 39}] * count


# each of MLflow's formats holding `count` rows
FORMATS = {
    "dataframe_records": lambda n: {"dataframe_records": _rows(n)},
    "dataframe_split": lambda n: {"dataframe_split": {"columns": ["age"], "data": [[39]] * n}},
    "instances": lambda n: {"instances": _rows(n)},
    "inputs, columnar": lambda n: {"inputs": {"age": [39] * n}},
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_rows_over_the_cap_are_refused_in_every_mlflow_format(fmt: str) -> None:
    assert len(records_from_mlflow_json(FORMATS[fmt](5), max_rows=5)) == 5
    with pytest.raises(RequestProblem) as refused:
        records_from_mlflow_json(FORMATS[fmt](6), max_rows=5)
    assert refused.value.status == 413 and refused.value.reason == "too_many_rows"
    assert "--max-rows" in refused.value.fix


def _request(*headers: tuple[str, str]) -> Request:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers]
    return Request({"type": "http", "method": "POST", "path": "/predict", "headers": raw})


KEY = "s3cret-key-\u00e9"  # a key need not be ASCII


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", f"Bearer {KEY}")],
        [("Authorization", f"bearer   {KEY}")],
        [("X-API-Key", KEY)],
    ],
)
def test_the_api_key_is_taken_from_either_header(headers: list[tuple[str, str]]) -> None:
    check_key(_request(*headers), KEY)


# (headers, the problem a client reads)
WITHOUT_THE_KEY = {
    "none": ([], "no API key was given"),
    "a wrong key": ([("X-API-Key", "s3cret")], "the API key is not the server's"),
    "a longer key": ([("Authorization", f"Bearer {KEY}x")], "the API key is not the server's"),
    "basic auth": ([("Authorization", "Basic dXNlcjpwYXNz")], "no API key was given"),
    "bearer and nothing": ([("Authorization", "Bearer ")], "no API key was given"),
}


@pytest.mark.parametrize("case", list(WITHOUT_THE_KEY))
def test_a_request_without_the_key_is_refused_with_401(case: str) -> None:
    headers, problem = WITHOUT_THE_KEY[case]
    with pytest.raises(RequestProblem) as refused:
        check_key(_request(*headers), KEY)
    assert refused.value.status == 401 and refused.value.problem == problem
    assert refused.value.headers == {"WWW-Authenticate": "Bearer"}
    assert KEY not in str(refused.value) + refused.value.fix


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "192.168.1.2", "example.org", ""])
def test_other_hosts(host: str) -> None:
    assert not is_loopback(host)


def test_settings_reach_the_workers_through_the_environment_and_hide_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(max_body_bytes=10, poll_seconds=0.5, max_rows=7, api_key=KEY, log_json=True)
    for name, value in settings.env().items():
        monkeypatch.setenv(name, value)
    assert Settings.from_env() == settings
    assert KEY not in repr(settings) and "api_key=set" in repr(settings)
    limits = connections.Limits(1.5, 2.5, 40)
    for name, value in limits.env().items():
        monkeypatch.setenv(name, value)
    assert connections.Limits.from_env() == limits


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize("api_key", ["", KEY])
def test_the_openapi_document_lists_every_answer_in_openapi_3_1(api_key: str) -> None:
    app = create_app(ModelReference(model="models:/m/1"), Settings(max_rows=9, api_key=api_key))
    document = app.openapi()
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    assert {"200", "409", "503", "401" if api_key else "403"} <= set(
        paths["/reload"]["post"]["responses"]
    )
    for path in ("/ready", "/version", "/ping"):
        assert {"200", "503"} <= set(paths[path]["get"]["responses"]), path
    for path in ("/predict", "/invocations"):
        answers = set(paths[path]["post"]["responses"])
        assert {"200", "400", "401", "413", "415", "422", "503"} <= answers, path
    assert not any("nullable" in node for node in _walk(document))
    predict = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert predict["oneOf"][1]["minItems"] == 1 and predict["oneOf"][1]["maxItems"] == 9
    assert all(
        node.get("minItems") == 1
        for node in _walk(paths["/invocations"])
        if node.get("maxItems") == 9
    )
    assert ("securitySchemes" in document["components"]) == bool(api_key)
    assert api_key not in json.dumps(document) or not api_key


def test_accept_errors_are_logged_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger=connections.__name__):
            for _ in range(1000):
                connections.handle_loop_exception(
                    loop,
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(errno.EMFILE, "Too many open files"),
                    },
                )
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records if r.name == connections.__name__]
    assert len(lines) <= 1, lines  # one now, or none if a test just logged one
    assert all("Too many open files" in line and "--max-connections" in line for line in lines)
    assert not any(r.exc_info for r in caplog.records)


# bodies of many containers that are not rows: each holds more than 5 + 64 arrays and objects
CONTAINER_FLOODS = {
    "lists": b"[" + b",".join([b"[]"] * 70) + b"]",
    "objects": b"[" + b",".join([b"{}"] * 70) + b"]",
    "nested": b"[" * 35 + b"{" * 35 + b"}" * 35 + b"]" * 35,
    "in params": b'{"instances": [], "params": {"a": [' + b",".join([b"[1]"] * 70) + b"]}}",
}


@pytest.mark.parametrize("case", list(CONTAINER_FLOODS))
def test_a_body_of_more_containers_than_rows_allow_is_refused_before_parsing(case: str) -> None:
    with pytest.raises(RequestProblem) as refused:
        check_containers(CONTAINER_FLOODS[case], max_rows=5)
    assert (
        refused.value.status == 413 and "at most 5 rows holds at most 69" in refused.value.problem
    )


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps([{"a": "[[[{{{" * 20, "b": 'x\\"[[' * 20}] * 5).encode()
    assert text.count(b"[") > 100
    check_containers(text, max_rows=5)


RESERVE = """
import resource, sys
from reprise.errors import RepriseError
from reprise.serving.connections import reserve_descriptors
try:
    reserve_descriptors(int(sys.argv[1]), int(sys.argv[2]))
except RepriseError as err:
    print(err)
else:
    print("soft limit", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.parametrize(
    ("hard", "answer"),
    [
        (3000, "soft limit 1576"),  # 1000 + 4 x 128 + 64, raised from 200
        (
            1000,
            "--max-connections 1000 with --backlog 128 needs 1576 file descriptors; this "
            "process may open 1000. Fix: pass a smaller --max-connections or --backlog, or "
            "raise the hard limit (ulimit -Hn).",
        ),
    ],
)
def test_the_file_limit_is_raised_for_the_connections_or_the_start_refused(
    hard: int, answer: str
) -> None:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))

    result = subprocess.run(
        [sys.executable, "-c", RESERVE, "1000", "128"],
        preexec_fn=lower,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == answer, result.stderr
