"""The behaviour tests are what config group 'evaluation' declares: a data set without a natural
invariance or direction declares none; float and gappy columns are jittered and moved as they
are; hand-written cases may leave a number out and give classes as numbers."""

from __future__ import annotations

import dataclasses

from step_kit import StepError

import numpy as np
import pytest

from evaluation import behaviour_tests, cases, invariance
from training import fit, with_threshold


@pytest.fixture(scope="module")
def test_features(splits, schema):
    return schema.xy(splits["test"])[0]


def test_no_behaviour_declared_means_no_behaviour_test(tuned_model, test_features, schema):
    for declared in ({}, None, {"invariance": None, "directional": [], "cases": []}):
        assert behaviour_tests(tuned_model, test_features, schema, declared) == []


def test_the_declared_tests_run_in_order(tuned_model, test_features, schema, evaluation_config):
    behaviour = evaluation_config["behaviour"]
    names = [f.name for f in behaviour_tests(tuned_model, test_features, schema, behaviour)]
    assert names == [
        f"invariance.{behaviour['invariance']['column']}",
        *(f"directional.{d['column']}" for d in behaviour["directional"]),
        *(f"case.{c['name']}" for c in behaviour["cases"]),
    ]


def test_an_unknown_kind_of_behaviour_test_is_refused(tuned_model, test_features, schema):
    with pytest.raises(StepError, match=r"Unknown behaviour tests \['monotone'\]"):
        behaviour_tests(tuned_model, test_features, schema, {"monotone": []})


def test_a_float_column_with_gaps_is_jittered_not_rounded(tuned_model, test_features):
    features = test_features.copy()
    features["fnlwgt"] = features["fnlwgt"].astype("float64") + 0.25
    features.loc[features.index[::7], "fnlwgt"] = np.nan
    finding = invariance(tuned_model, features, "fnlwgt", 0.05, 0.02, 0)
    assert finding.passed, finding.detail


@pytest.fixture(scope="module")
def gappy_tree(splits, schema):
    """A tree trained on Adult with a fifth of the ages missing."""
    train = splits["train"].head(4000).copy()
    train["age"] = train["age"].astype("float64").mask(np.arange(len(train)) % 5 == 0)
    return with_threshold(fit(train, schema, "decision_tree", {"max_depth": 6}), 0.5)


def test_a_case_may_leave_a_number_out(gappy_tree, schema, evaluation_config, test_features):
    written = [dict(c) for c in evaluation_config["behaviour"]["cases"]]
    for case in written:
        case["features"] = {k: v for k, v in case["features"].items() if k != "age"}
    findings = cases(gappy_tree, schema, written, test_features)
    assert [f.name for f in findings] == [f"case.{c['name']}" for c in written]
    assert all("(P=" in f.detail for f in findings)


def test_a_case_naming_a_non_feature_is_refused(tuned_model, schema):
    with pytest.raises(StepError, match=r"names non-features \['salary'\]"):
        cases(tuned_model, schema, [{"name": "x", "expected": ">50K", "features": {"salary": 1}}])


def test_a_case_reports_the_labels_of_the_data_set(tuned_model, schema, evaluation_config):
    written = evaluation_config["behaviour"]["cases"]
    details = [f.detail for f in cases(tuned_model, schema, written)]
    assert all(d.startswith(("predicted >50K", "predicted <=50K")) for d in details), details
    no_categories = dataclasses.replace(schema, categories={})
    details = [f.detail for f in cases(tuned_model, no_categories, written)]
    assert all(d.startswith(("predicted >50K", "predicted not >50K")) for d in details), details


@pytest.mark.parametrize("kind", ["invariance", "directional"])
def test_a_behaviour_test_that_would_move_a_category_is_refused(
    tuned_model, test_features, schema, kind
):
    declared = {
        "invariance": {
            "invariance": {"column": "race", "relative_jitter": 0.05, "max_flip_share": 0.02}
        },
        "directional": {"directional": [{"column": "race", "delta": 1, "expect": "increase"}]},
    }[kind]
    with pytest.raises(StepError) as caught:
        behaviour_tests(tuned_model, test_features, schema, declared)
    assert f"{kind.capitalize()} column 'race' is a category, not a number" in str(caught.value)
