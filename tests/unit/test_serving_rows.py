"""The row checks the server and batch scoring share (reprise/serving/rows.py): a CSV text's
lines against its header, and the columns a row or a file lacks."""

from __future__ import annotations

import io

import pytest

from reprise.serving.rows import MiscountedLine, csv_records, missing_columns


def test_csv_records_skip_blank_lines_as_readers_do():
    text = "a,b\n1,2\n\n3,4\n"
    assert list(csv_records(io.StringIO(text))) == [["1", "2"], ["3", "4"]]


@pytest.mark.parametrize(
    ("text", "line", "fields"),
    [("a,b\n1,2\n1,2,3\n", 3, 3), ("a,b\n\n1\n", 3, 1), ('a,b\n"x\ny",2\n1\n', 4, 1)],
)
def test_the_first_miscounted_line_is_named_by_its_number(text: str, line: int, fields: int):
    with pytest.raises(MiscountedLine) as raised:
        list(csv_records(io.StringIO(text)))
    assert (raised.value.line, raised.value.fields, raised.value.header) == (line, fields, 2)
    assert str(raised.value) == f"line {line} holds {fields} fields, the header 2"


def test_missing_columns_keep_the_models_order():
    assert missing_columns(["age", "workclass", "fnlwgt"], {"fnlwgt": 1, "other": 2}) == [
        "age",
        "workclass",
    ]
    assert missing_columns(["age"], ["age", "extra"]) == []
