"""basic_cleaning on tables unlike Adult: floats, booleans, integers stored as floats, categories
and targets given as numbers or booleans, an ID column. Each kind is one case of a parametrised
test, so a new kind is a new row."""

from __future__ import annotations

import json

from step_kit import Schema, StepError
from step_kit.schema import as_text

import numpy as np
import pandas as pd
import pytest

from cleaning import clean


def schema_of(**roles) -> Schema:
    """A Schema as the orchestrator passes it: config group 'data' as one JSON parameter."""
    return Schema.from_json(json.dumps({"numeric": [], "categorical": [], **roles}))


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([1.5, 2.25, None, 4.0], "float64", [1.5, 2.25, np.nan, 4.0]),  # floats with a gap
        ([1.0, 2.0, 3.0, 4.0], "int64", [1, 2, 3, 4]),  # integers stored as floats
        ([1.0, None, 3.0, 4.0], "float64", [1.0, np.nan, 3.0, 4.0]),  # ... with a gap
        ([True, False, True, False], "int64", [1, 0, 1, 0]),  # booleans
        (["true", "False", "?", "TRUE"], "float64", [1.0, 0.0, np.nan, 1.0]),  # booleans as text
        (["1", " 2 ", "?", ""], "float64", [1.0, 2.0, np.nan, np.nan]),  # numbers as text
        (pd.array([1, None, 3, 4], dtype="Int64"), "float64", [1.0, np.nan, 3.0, 4.0]),
        (pd.array([True, None, False, True], dtype="boolean"), "float64", [1.0, np.nan, 0.0, 1.0]),
    ],
    ids=[
        "floats",
        "whole-floats",
        "whole-floats-gap",
        "bool",
        "bool-text",
        "text",
        "Int64",
        "boolean",
    ],
)
def test_numeric_columns_of_every_type_become_numbers(values, dtype, expected):
    raw = pd.DataFrame({"x": values, "y": ["a", "b", "a", "b"]})
    schema = schema_of(numeric=["x"], target="y", positive_class="a")
    frame, _ = clean(raw, schema, "?", drop_duplicates=False)
    assert str(frame["x"].dtype) == dtype
    np.testing.assert_array_equal(frame["x"].to_numpy(np.float64), np.array(expected, float))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2, 3, 1], ["1", "2", "3", "1"]),  # classes given as integers
        ([1.0, 2.0, None, 1.0], ["1", "2", None, "1"]),  # ... read as floats because of a gap
        ([True, False, True, True], ["True", "False", "True", "True"]),
        ([" S", "C ", "?", "Q"], ["S", "C", None, "Q"]),
        ([1.5, 2, "x", None], ["1.5", "2", "x", None]),  # mixed
    ],
    ids=["ints", "floats-gap", "bools", "text", "mixed"],
)
def test_categories_given_as_anything_become_one_spelling(values, expected):
    raw = pd.DataFrame({"c": values, "y": ["a", "b", "a", "b"]})
    schema = schema_of(categorical=["c"], target="y", positive_class="a")
    frame, _ = clean(raw, schema, "?", drop_duplicates=False)
    assert [None if pd.isna(v) else v for v in frame["c"]] == expected


@pytest.mark.parametrize(
    ("target", "positive_class", "positives"),
    [
        ([0, 1, 1, 0], 1, [0, 1, 1, 0]),
        ([0.0, 1.0, 1.0, 0.0], 1, [0, 1, 1, 0]),
        ([False, True, True, False], True, [0, 1, 1, 0]),
        (["False", "True", "True", "False"], True, [0, 1, 1, 0]),
        (["no", "yes", "yes", "no"], "yes", [0, 1, 1, 0]),
        ([0, 1, 1, 0], "1", [0, 1, 1, 0]),  # the config may quote the class
        (["died", "survived", "died", "died"], "died", [1, 0, 1, 1]),  # either label positive
    ],
    ids=["int", "float", "bool", "bool-text", "strings", "quoted", "first-label"],
)
def test_a_binary_target_in_any_form(target, positive_class, positives):
    raw = pd.DataFrame({"x": [1, 2, 3, 4], "y": target})
    schema = schema_of(numeric=["x"], target="y", positive_class=positive_class)
    frame, _ = clean(raw, schema, "?")
    assert schema.xy(frame)[1].tolist() == positives
    assert schema.positive_class == as_text(positive_class)


def test_an_id_column_is_kept_beside_the_rows_but_is_no_feature():
    raw = pd.DataFrame(
        {
            "passenger": [101, 102, 103, 104],
            "x": [1, 1, 2, 3],
            "y": ["a", "a", "b", "a"],
            "note": ["drop", "me", "please", "now"],
        }
    )
    schema = schema_of(numeric=["x"], target="y", positive_class="a", id="passenger")
    frame, counts = clean(raw, schema, "?")
    assert list(frame.columns) == ["passenger", "x", "y"]
    assert schema.features == ["x"]
    assert list(schema.xy(frame)[0].columns) == ["x"]
    # rows 0 and 1 differ only by their ID: the same values twice
    assert counts["duplicates_removed"] == 1
    assert frame["passenger"].tolist() == [101, 103, 104]


def test_duplicates_may_be_kept():
    raw = pd.DataFrame({"x": [1, 1, 2], "y": ["a", "a", "b"]})
    schema = schema_of(numeric=["x"], target="y", positive_class="a")
    frame, counts = clean(raw, schema, "?", drop_duplicates=False)
    assert len(frame) == 3 and counts["duplicates_removed"] == 0


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ({"numeric": ["x"], "categorical": ["x"], "target": "y"}, "more than one role"),
        ({"numeric": ["x"], "target": "y", "id": "y"}, "more than one role"),
        ({"target": "y"}, "names no feature"),
        ({"numeric": "age", "target": "y"}, "data.numeric is 'age', not a list of column names"),
        ({"categorical": [1], "target": "y"}, "data.categorical is [1], not a list"),
        ({"numeric": ["x"], "target": ["y"]}, "data.target is ['y'], not a column name"),
        ({"numeric": ["x"], "target": "y", "positive_class": None}, "no positive_class"),
    ],
)
def test_a_schema_with_overlapping_or_no_roles_is_refused(roles, message):
    with pytest.raises(StepError) as caught:
        schema_of(**{"positive_class": "a", **roles})
    assert message in str(caught.value)


def test_text_in_a_numeric_column_names_the_column_and_examples():
    raw = pd.DataFrame({"x": ["1", "two", "3"], "y": ["a", "b", "a"]})
    with pytest.raises(
        StepError, match=r"Column 'x' has 1 values that are not numbers, e.g. \['two'\]"
    ):
        clean(raw, schema_of(numeric=["x"], target="y", positive_class="a"), "?")
