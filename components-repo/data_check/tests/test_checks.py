"""data_check: the clean full set passes; each kind of bad data fails its check, and only it."""

from __future__ import annotations

import pandas as pd
import pytest

from checks import check_row_count, run_checks


def failures(results) -> dict[str, str]:
    """Failed checks by name, with their detail."""
    return {r.name: r.detail for r in results if not r.passed}


@pytest.fixture
def frame(clean_full) -> pd.DataFrame:
    """A copy of the clean full set, for a test to damage."""
    return clean_full.copy()


# The checks of a table without an ID column, in their order (drift after them, with a reference)
CHECKS = ["schema", "columns", "missing", "categories", "ranges", "row_count", "target"]


def test_clean_full_set_passes_every_check(clean_full, schema, check_config, reference):
    results = run_checks(clean_full, schema, check_config, reference)
    assert failures(results) == {}
    names = [r.name for r in results]
    assert names == [*CHECKS, *(f"drift.{column}" for column in schema.features)]


def test_without_reference_no_drift_check(clean_full, schema, check_config):
    results = run_checks(clean_full, schema, check_config)
    assert [r.name for r in results] == CHECKS


def test_check_results_serialise(clean_full, schema, check_config):
    report = [r.as_dict() for r in run_checks(clean_full, schema, check_config)]
    assert report[5] == {
        "name": "row_count",
        "passed": True,
        "detail": f"{len(clean_full)} rows, expected "
        f"{check_config['min_rows']}..{check_config['max_rows']}",
    }


def test_unknown_category(frame, schema, check_config, reference):
    frame.loc[[10, 20], "workclass"] = "Space-force"
    frame.loc[30, "race"] = "Martian"
    assert failures(run_checks(frame, schema, check_config, reference)) == {
        "categories": "'workclass' has unknown values ['Space-force']; "
        "'race' has unknown values ['Martian']"
    }


def test_out_of_range_value(frame, schema, check_config, reference):
    low, high = check_config["ranges"]["capital-loss"]
    frame.loc[0, "capital-loss"] = high + 1
    frame.loc[1, "capital-loss"] = low - 1
    assert failures(run_checks(frame, schema, check_config, reference)) == {
        "ranges": f"'capital-loss' has 2 values outside [{low}, {high}] "
        f"(seen {low - 1}..{high + 1})"
    }


def test_range_on_absent_column(clean_full, schema, check_config):
    config = {**check_config, "ranges": {"salary": [0, 1]}}
    assert failures(run_checks(clean_full, schema, config)) == {
        "ranges": "'salary' is not a column"
    }


def test_too_few_rows(clean_full, schema, check_config, reference):
    low, high = check_config["min_rows"], check_config["max_rows"]
    few = clean_full.sample(n=low - 1, random_state=0)
    assert failures(run_checks(few, schema, check_config, reference)) == {
        "row_count": f"{low - 1} rows, expected {low}..{high}"
    }
    exactly = clean_full.sample(n=low, random_state=0)
    assert "row_count" not in failures(run_checks(exactly, schema, check_config))


def test_too_many_rows(clean_full):
    assert not check_row_count(clean_full.head(11), 1, 10).passed
    assert check_row_count(clean_full.head(10), 1, 10).passed


def _with_positive_share(clean_full, schema, share: float) -> pd.DataFrame:
    """Rows of the clean set, one class thinned out so the positive share is about ``share``."""
    is_positive = clean_full[schema.target].eq(schema.positive_class)
    positives, negatives = clean_full[is_positive], clean_full[~is_positive]
    if share > is_positive.mean():
        negatives = negatives.head(round(len(positives) * (1 - share) / share))
    else:
        positives = positives.head(round(len(negatives) * share / (1 - share)))
    return pd.concat([negatives, positives], ignore_index=True)


@pytest.mark.parametrize("bound", ["low", "high"])
def test_target_share_out_of_bounds(clean_full, schema, check_config, bound):
    low, high = check_config["positive_share"]
    wanted = low / 2 if bound == "low" else (1 + high) / 2
    frame = _with_positive_share(clean_full, schema, wanted)
    share = frame[schema.target].eq(schema.positive_class).mean()
    assert share == pytest.approx(wanted, abs=1e-3)
    assert failures(run_checks(frame, schema, check_config)) == {
        "target": f"share of '{schema.positive_class}' {share:.4f}, expected {low}..{high}"
    }


@pytest.mark.parametrize("bound", ["low", "high"])
def test_target_share_just_within_bounds(clean_full, schema, check_config, bound):
    low, high = check_config["positive_share"]
    frame = _with_positive_share(clean_full, schema, low + 0.01 if bound == "low" else high - 0.01)
    assert failures(run_checks(frame, schema, check_config)) == {}


def test_unknown_target_label(frame, schema, check_config):
    frame.loc[0, schema.target] = ">50K."
    found = failures(run_checks(frame, schema, check_config))
    assert found["target"] == "unknown labels ['>50K.']"


def test_missing_and_extra_columns(frame, schema, check_config, reference):
    frame = frame.drop(columns="fnlwgt").assign(row_id=range(len(frame)))
    assert failures(run_checks(frame, schema, check_config, reference)) == {
        "schema": "missing columns ['fnlwgt']; unexpected columns ['row_id']"
    }


def test_categorical_column_of_numbers(frame, schema, check_config):
    frame["gender"] = frame["gender"].eq("Male").astype("int64")
    found = failures(run_checks(frame, schema, check_config))
    assert found["schema"] == "'gender' is int64, expected text"


def test_numeric_column_of_text(frame, schema, check_config, reference):
    """A column of text where a number belongs fails the schema check; no check may crash."""
    frame["age"] = frame["age"].astype("str")
    found = failures(run_checks(frame, schema, check_config, reference))
    assert found["schema"] == f"'age' is {frame['age'].dtype}, expected a number"
    assert set(found) == {"schema", "ranges", "drift.age"}
    assert f"'age' is {frame['age'].dtype}, not a number" in found["ranges"]
    assert found["drift.age"].startswith("not tested")


def test_age_shift_fails_age_drift_only(frame, schema, check_config, reference):
    _, high = check_config["ranges"]["age"]
    frame["age"] = (frame["age"] + 10).clip(upper=high)  # ten years older, still within range
    found = failures(run_checks(frame, schema, check_config, reference))
    assert list(found) == ["drift.age"]
    assert found["drift.age"].startswith("KS p=")
    assert found["drift.age"].endswith(f"alpha={check_config['ks_alpha']}/{len(schema.features)}")


def test_dominant_category_fails_its_drift_only(frame, schema, check_config, reference):
    white = frame.index[frame["race"].eq("White")]
    frame.loc[white[::2], "race"] = "Asian-Pac-Islander"  # half the White rows change race
    found = failures(run_checks(frame, schema, check_config, reference))
    assert list(found) == ["drift.race"]
    assert found["drift.race"].startswith("chi-square p=")
    assert found["drift.race"].endswith(
        f"alpha={check_config['chi2_alpha']}/{len(schema.features)}"
    )


def test_reference_missing_token_is_not_a_category(clean_full, raw_sample, schema, check_config):
    """Why run.py replaces '?' in the reference: left in, it is a category the data lacks."""
    found = failures(run_checks(clean_full, schema, check_config, raw_sample))
    assert {"drift.workclass", "drift.occupation", "drift.native-country"} <= set(found)
