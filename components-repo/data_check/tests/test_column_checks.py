"""data_check's column checks: the share of missing values per feature against its maximum, and a
feature that is entirely missing, constant or an ID by mistake fails naming the column. The real
clean Adult table is damaged one way at a time; only the matching check fails."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from checks import check_id, check_missing, run_checks


def failures(results) -> dict[str, str]:
    return {r.name: r.detail for r in results if not r.passed}


@pytest.fixture
def frame(clean_full) -> pd.DataFrame:
    return clean_full.copy()


def test_the_report_gives_the_share_missing_of_every_feature_that_has_any(clean_full, schema):
    finding = check_missing(clean_full, schema, 0.5)
    assert finding.passed
    # Adult: '?' in workclass, occupation and native-country only
    listed = finding.detail.split(": ", 1)[1].split(";")[0]
    assert [part.split()[0] for part in listed.split(", ")] == [
        "workclass",
        "occupation",
        "native-country",
    ]


@pytest.mark.parametrize("column", ["age", "education"])  # neither has a missing value
def test_a_feature_over_the_maximum_share_fails_naming_it(frame, schema, check_config, column):
    rows = np.arange(len(frame)) % 10 < 6  # 60% missing
    frame.loc[rows, column] = None
    found = failures(run_checks(frame, schema, {**check_config, "max_missing_share": 0.5}))
    assert list(found) == ["missing"]
    assert f"'{column}' 0.600 > 0.5" in found["missing"]


def test_a_column_may_have_its_own_maximum(frame, schema, check_config):
    frame.loc[np.arange(len(frame)) % 10 < 3, "education"] = None  # 30%
    config = {**check_config, "max_missing_share": 0.1}
    assert "'education' 0.300 > 0.1" in failures(run_checks(frame, schema, config))["missing"]
    config["max_missing_share_by_column"] = {"education": 0.35}
    assert "missing" not in failures(run_checks(frame, schema, config))


def test_a_maximum_for_a_column_that_is_no_feature_is_refused(clean_full, schema):
    finding = check_missing(clean_full, schema, 0.5, {"cabin": 0.9})
    assert not finding.passed and "non-features ['cabin']" in finding.detail


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: f.assign(age=np.nan), "'age' is entirely missing"),
        (lambda f: f.assign(race="White"), "'race' is constant ('White')"),
        (lambda f: f.assign(**{"hours-per-week": 40}), "'hours-per-week' is constant (40)"),
        (
            lambda f: f.assign(fnlwgt=np.arange(len(f))),
            "'fnlwgt' has a different value in every row: an identifier, not a feature",
        ),
        (
            lambda f: f.assign(occupation=[f"p{i}" for i in range(len(f))]),
            "'occupation' has a different value in every row",
        ),
    ],
    ids=["all-missing", "constant-text", "constant-number", "integer-id", "text-id"],
)
def test_an_empty_constant_or_id_feature_fails_naming_it(
    frame, schema, check_config, damage, expected
):
    found = failures(run_checks(damage(frame), schema, {**check_config, "max_missing_share": 1.0}))
    assert "columns" in found and expected in found["columns"]


def test_a_measurement_that_never_repeats_is_no_id(frame, schema, check_config):
    rng = np.random.default_rng(0)
    frame["fnlwgt"] = rng.random(len(frame)) * 1e6  # fractions, all distinct
    assert "columns" not in failures(run_checks(frame, schema, {**check_config, "ranges": {}}))


def test_an_id_column_names_every_row_once(frame, schema):
    with_id = dataclasses.replace(schema, id="passenger")
    frame.insert(0, "passenger", np.arange(len(frame)))
    assert check_id(frame, with_id).passed
    frame.loc[[5, 9], "passenger"] = 3
    frame.loc[11, "passenger"] = None
    finding = check_id(frame, with_id)
    assert not finding.passed
    assert finding.detail == "1 rows without an ID; 2 repeated IDs, e.g. ['3.0']"


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["a", "b", "c"], "3 labels ['a', 'b', 'c']; a binary target has two"),
        (["a", "b"], "the positive class '>50K' is not among ['a', 'b']"),
    ],
)
def test_a_target_that_is_not_binary_with_the_positive_class_fails(
    frame, schema, check_config, labels, expected
):
    frame["income"] = [labels[i % len(labels)] for i in range(len(frame))]
    config = {**check_config}
    found = failures(run_checks(frame, dataclasses.replace(schema, categories={}), config))
    assert found["target"] == expected


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"max_missing_share": "half"}, "data_check.max_missing_share is 'half', not a share"),
        ({"max_missing_share": 1.5}, "data_check.max_missing_share is 1.5, not a share"),
        ({"max_missing_share": True}, "data_check.max_missing_share is True, not a share"),
        (
            {"max_missing_share_by_column": {"age": -0.1}},
            "data_check.max_missing_share_by_column.age is -0.1, not a share",
        ),
        ({"max_missing_share_by_column": [0.2]}, "max_missing_share_by_column is [0.2]"),
    ],
)
def test_a_missing_share_that_is_no_share_is_refused(
    clean_full, schema, check_config, config, message
):
    from step_kit import StepError

    with pytest.raises(StepError) as caught:
        run_checks(clean_full, schema, {**check_config, **config})
    assert message in str(caught.value)
