"""basic_cleaning: the raw Adult table becomes typed, de-duplicated and range-filtered."""

from __future__ import annotations

from step_kit import StepError, read_table

import numpy as np
import pandas as pd
import pytest

from cleaning import clean


@pytest.fixture(scope="module")
def cleaned(raw_full, schema, etl_config):
    """(clean table, counts) of the full set with the configured token and ranges."""
    return clean(raw_full, schema, etl_config["missing_token"], etl_config["ranges"])


def test_missing_token_becomes_missing(cleaned, raw_full, schema):
    frame, counts = cleaned
    # DATA.md: '?' stands for missing in workclass 2,799, occupation 2,809, native-country 857.
    documented = {"workclass": 2799, "occupation": 2809, "native-country": 857}
    for column in [*schema.categorical, schema.target]:
        assert counts[f"missing.{column}"] == documented.get(column, 0), column
        assert not frame[column].eq("?").any(), column
    # After removing duplicates the missing values are still there, now as missing values.
    for column in documented:
        assert 0 < frame[column].isna().sum() <= documented[column]
    assert raw_full["workclass"].eq("?").sum() == documented["workclass"]  # the input is intact


def test_exactly_the_duplicate_rows_are_removed(cleaned, raw_full):
    frame, counts = cleaned
    assert counts["rows_in"] == len(raw_full)
    assert counts["duplicates_removed"] == 52  # DATA.md: 52 exact duplicate rows
    assert counts["target_missing_removed"] == 0
    assert counts["rows_out"] == len(frame) == len(raw_full) - 52
    assert not frame.duplicated().any()
    assert frame.index.equals(pd.RangeIndex(len(frame)))


def test_columns_and_dtypes(cleaned, schema):
    frame, counts = cleaned
    assert list(frame.columns) == schema.columns
    assert counts["extra_columns_dropped"] == 0
    for column in schema.numeric:
        assert frame[column].dtype == np.int64, column
    for column in [*schema.categorical, schema.target]:
        assert isinstance(frame[column].dtype, pd.StringDtype), column


def test_values_are_stripped_and_extra_columns_dropped(raw_full, schema):
    raw = raw_full.head(200).copy()
    raw["workclass"] = "  " + raw["workclass"] + " "
    raw["row_id"] = range(len(raw))
    frame, counts = clean(raw, schema)
    assert counts["extra_columns_dropped"] == 1
    assert "row_id" not in frame
    expected = raw_full.head(200)["workclass"].replace("?", None).dropna()
    assert set(frame["workclass"].dropna()) == set(expected)


def test_configured_ranges_keep_every_row_and_their_bounds(cleaned, etl_config):
    """The full set lies within the configured ranges; the bounds themselves are inclusive."""
    frame, counts = cleaned
    for column, (low, high) in etl_config["ranges"].items():
        assert counts[f"out_of_range_removed.{column}"] == 0
        assert frame[column].min() == low
        assert frame[column].max() == high


def test_range_filter_counts(raw_full, schema, etl_config):
    ranges = {"age": (20, 60), "hours-per-week": (10, 60)}
    frame, counts = clean(raw_full, schema, etl_config["missing_token"], ranges)
    # Expected counts, computed independently: filters apply in order, after de-duplication.
    rows = raw_full.drop_duplicates()
    age_out = ~rows["age"].between(20, 60)
    rows = rows[~age_out]
    hours_out = ~rows["hours-per-week"].between(10, 60)
    assert counts["out_of_range_removed.age"] == int(age_out.sum()) > 0
    assert counts["out_of_range_removed.hours-per-week"] == int(hours_out.sum()) > 0
    assert counts["rows_out"] == len(frame) == int((~hours_out).sum())
    assert frame["age"].between(20, 60).all()
    assert frame["hours-per-week"].between(10, 60).all()


def test_missing_number_is_kept_by_the_range_filter(raw_full, schema, etl_config):
    raw = raw_full.head(100).copy()
    raw["age"] = raw["age"].astype(object)
    raw.loc[5, "age"] = "?"
    frame, counts = clean(raw, schema, etl_config["missing_token"], etl_config["ranges"])
    assert frame["age"].dtype == np.float64
    assert frame["age"].isna().sum() == 1
    assert counts["out_of_range_removed.age"] == 0


def test_missing_target_rows_are_removed(raw_full, schema):
    raw = raw_full.head(100).copy()
    raw.loc[[3, 7], "income"] = "?"
    frame, counts = clean(raw, schema)
    assert counts["missing.income"] == 2
    assert counts["target_missing_removed"] == 2
    assert frame["income"].notna().all()


def test_missing_column_is_named(raw_full, schema):
    with pytest.raises(StepError, match=r"lacks the columns \['fnlwgt'\]"):
        clean(raw_full.drop(columns="fnlwgt"), schema)


def test_non_numeric_value_in_numeric_column(raw_full, schema):
    raw = raw_full.head(100).copy()
    raw["hours-per-week"] = raw["hours-per-week"].astype(object)
    raw.loc[42, "hours-per-week"] = "forty"
    with pytest.raises(StepError) as caught:
        clean(raw, schema)
    message = str(caught.value)
    assert "Column 'hours-per-week' has 1 values that are not numbers" in message
    assert "'forty'" in message


@pytest.mark.parametrize("column", ["workclass", "income", "not-a-column"])
def test_range_filter_on_non_numeric_column(raw_full, schema, column):
    with pytest.raises(StepError, match=f"Range filter on '{column}'"):
        clean(raw_full.head(100), schema, ranges={column: (0, 1)})


def test_csv_cleans_like_parquet(cleaned, raw_full, schema, etl_config, tmp_path):
    path = tmp_path / "adult.csv"
    raw_full.to_csv(path, index=False)
    raw_csv = read_table(path)
    assert (raw_csv.dtypes == raw_csv["age"].dtype).all()  # a CSV has no types: all text
    frame, counts = clean(raw_csv, schema, etl_config["missing_token"], etl_config["ranges"])
    expected_frame, expected_counts = cleaned
    pd.testing.assert_frame_equal(frame, expected_frame)
    assert counts == expected_counts
