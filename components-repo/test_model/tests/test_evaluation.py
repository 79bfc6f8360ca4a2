"""test_model: the behaviour tests tell the real tuned tree from models that behave wrongly, and
the quality gate passes and fails on the configured bars with the numbers in its findings."""

from __future__ import annotations

import re

from step_kit import StepError

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from evaluation import Finding, cases, directional, gate, invariance


@pytest.fixture(scope="module")
def test_features(splits, schema):
    return schema.xy(splits["test"])[0]


@pytest.fixture(scope="module")
def behaviour(evaluation_config):
    return evaluation_config["behaviour"]


@pytest.fixture(scope="module")
def rules(evaluation_config):
    return evaluation_config["gate"]


@pytest.fixture(scope="module")
def fnlwgt_only(splits, schema):
    """A model that decides on the census sampling weight alone, fed the whole feature frame."""
    features, target = schema.xy(splits["train"])
    return Pipeline(
        [
            ("fnlwgt", ColumnTransformer([("fnlwgt", "passthrough", ["fnlwgt"])])),
            ("tree", DecisionTreeClassifier(random_state=0)),
        ]
    ).fit(features, target)


def _share(finding: Finding) -> float:
    """The flip share an invariance finding reports."""
    return float(re.match(r"(\d\.\d{4}) of predictions flip", finding.detail).group(1))


# --- invariance ---------------------------------------------------------------------------------
def test_invariance_passes_for_the_tuned_tree(tuned_model, test_features, behaviour):
    inv = behaviour["invariance"]
    assert inv["column"] == "fnlwgt" and inv["relative_jitter"] == 0.05
    finding = invariance(
        tuned_model,
        test_features,
        inv["column"],
        inv["relative_jitter"],
        inv["max_flip_share"],
        inv["seed"],
    )
    assert finding.name == "invariance.fnlwgt"
    assert finding.passed, finding.detail
    assert _share(finding) < inv["max_flip_share"]
    assert f"(allowed < {inv['max_flip_share']:g})" in finding.detail


def test_invariance_fails_for_a_model_of_fnlwgt_alone(fnlwgt_only, test_features, behaviour):
    inv = behaviour["invariance"]
    finding = invariance(
        fnlwgt_only,
        test_features,
        "fnlwgt",
        inv["relative_jitter"],
        inv["max_flip_share"],
        inv["seed"],
    )
    assert not finding.passed
    share = _share(finding)
    assert share >= inv["max_flip_share"]
    assert f"{share:.4f} of predictions flip under +-0.05 jitter of fnlwgt" in finding.detail
    # no jitter, no flips: the share measures the jitter's effect and nothing else
    still = invariance(fnlwgt_only, test_features, "fnlwgt", 0.0, inv["max_flip_share"], 0)
    assert still.passed and _share(still) == 0.0


def test_invariance_leaves_the_callers_table_alone(fnlwgt_only, test_features):
    before = test_features.copy()
    invariance(fnlwgt_only, test_features, "fnlwgt", 0.05, 0.02, 0)
    assert test_features.equals(before)


def test_invariance_of_an_unknown_column(tuned_model, test_features):
    with pytest.raises(StepError, match="Invariance column 'fnlweight' is not a feature"):
        invariance(tuned_model, test_features, "fnlweight", 0.05, 0.02, 0)


# --- directional --------------------------------------------------------------------------------
def _mean_change(model, features, column, delta):
    moved = features.copy()
    moved[column] = features[column] + delta
    return float(
        np.mean(model.predict_proba(moved)[:, 1]) - np.mean(model.predict_proba(features)[:, 1])
    )


def test_capital_gain_raises_the_probability(tuned_model, test_features):
    finding = directional(tuned_model, test_features, "capital-gain", 15000, "increase")
    change = _mean_change(tuned_model, test_features, "capital-gain", 15000)
    assert change > 0
    assert finding.name == "directional.capital-gain"
    assert finding.passed, finding.detail
    assert f"{change:+.4f}" in finding.detail


def test_a_wrong_expectation_fails_with_the_numbers(tuned_model, test_features):
    finding = directional(tuned_model, test_features, "capital-gain", 15000, "decrease")
    change = _mean_change(tuned_model, test_features, "capital-gain", 15000)
    assert not finding.passed
    assert f"moves by {change:+.4f} when capital-gain += 15000 (expected decrease)" in (
        finding.detail
    )


def test_configured_directions_hold_for_the_tuned_tree(tuned_model, test_features, behaviour):
    for rule in behaviour["directional"]:
        finding = directional(
            tuned_model, test_features, rule["column"], rule["delta"], rule["expect"]
        )
        assert finding.passed, finding.detail


def test_an_invalid_expectation(tuned_model, test_features):
    with pytest.raises(StepError, match="Directional expectation 'up'") as caught:
        directional(tuned_model, test_features, "capital-gain", 15000, "up")
    assert "increase or decrease" in str(caught.value)


# --- hand-written cases -------------------------------------------------------------------------
def test_configured_cases_pass_for_the_tuned_tree(tuned_model, schema, behaviour):
    findings = cases(tuned_model, schema, behaviour["cases"])
    assert [f.name for f in findings] == [f"case.{case['name']}" for case in behaviour["cases"]]
    assert {case["expected"] for case in behaviour["cases"]} == {"<=50K", ">50K"}
    for finding in findings:
        assert finding.passed, f"{finding.name}: {finding.detail}"


def test_a_case_with_the_opposite_label_fails(tuned_model, schema, behaviour):
    flip = {">50K": "<=50K", "<=50K": ">50K"}
    wrong = [{**case, "expected": flip[case["expected"]]} for case in behaviour["cases"]]
    findings = cases(tuned_model, schema, wrong)
    for finding, case in zip(findings, wrong, strict=True):
        assert not finding.passed, finding.name
        assert f"expected {case['expected']}" in finding.detail
        assert re.search(r"\(P=\d\.\d{3}\)", finding.detail)


# --- the quality gate ---------------------------------------------------------------------------
def _by_name(findings):
    return {f.name: f for f in findings}


def test_gate_passes_above_the_bars(rules):
    findings = _by_name(gate({"test.roc_auc": 0.91, "test.f1": 0.70}, rules, None))
    assert set(findings) == {"gate.min_roc_auc", "gate.min_f1"}  # no prod: no comparison
    assert all(f.passed for f in findings.values())
    assert f"test ROC AUC 0.9100, minimum {rules['min_roc_auc']:g}" in (
        findings["gate.min_roc_auc"].detail
    )
    assert f"test F1 0.7000 at the chosen threshold, minimum {rules['min_f1']:g}" in (
        findings["gate.min_f1"].detail
    )


def test_gate_passes_at_the_bars(rules):
    metrics = {"test.roc_auc": rules["min_roc_auc"], "test.f1": rules["min_f1"]}
    assert all(f.passed for f in gate(metrics, rules, None))


def test_gate_fails_below_the_bars(rules):
    metrics = {"test.roc_auc": rules["min_roc_auc"] - 0.03, "test.f1": rules["min_f1"] - 0.05}
    findings = _by_name(gate(metrics, rules, None))
    assert not findings["gate.min_roc_auc"].passed and not findings["gate.min_f1"].passed
    assert f"{metrics['test.roc_auc']:.4f}, minimum {rules['min_roc_auc']:g}" in (
        findings["gate.min_roc_auc"].detail
    )
    assert f"{metrics['test.f1']:.4f} at the chosen threshold, minimum {rules['min_f1']:g}" in (
        findings["gate.min_f1"].detail
    )


def test_gate_fails_one_bar_only(rules):
    findings = _by_name(gate({"test.roc_auc": 0.95, "test.f1": 0.40}, rules, None))
    assert findings["gate.min_roc_auc"].passed
    assert not findings["gate.min_f1"].passed


@pytest.mark.parametrize(
    ("candidate", "prod", "passed"),
    [
        (0.90, 0.93, False),  # loses 0.03
        (0.90, 0.905, True),  # loses 0.005
        (0.90, 0.88, True),  # better than prod
        (0.90, 0.91, True),  # loses exactly the allowed 0.01
    ],
)
def test_gate_against_prod(rules, candidate, prod, passed):
    metrics = {"test.roc_auc": candidate, "test.f1": 0.70}
    findings = _by_name(gate(metrics, rules, {"test.roc_auc": prod, "test.f1": 0.70}))
    assert set(findings) == {"gate.min_roc_auc", "gate.min_f1", "gate.max_drop_vs_prod"}
    comparison = findings["gate.max_drop_vs_prod"]
    assert comparison.passed is passed, comparison.detail
    drop = prod - candidate
    assert (
        f"test ROC AUC {candidate:.4f} vs {prod:.4f} of the prod model: drop {drop:+.4f}, "
        f"allowed {rules['max_drop_vs_prod']:g}"
    ) in comparison.detail


def test_findings_serialise_for_the_report(rules):
    finding = gate({"test.roc_auc": 0.91, "test.f1": 0.70}, rules, None)[0]
    assert finding.as_dict() == {
        "name": "gate.min_roc_auc",
        "passed": True,
        "detail": finding.detail,
    }


def test_directional_on_a_column_that_is_not_a_feature(tuned_model, schema, splits):
    features, _ = schema.xy(splits["test"])
    with pytest.raises(StepError, match="Directional column 'salary' is not a feature"):
        directional(tuned_model, features, "salary", 1, "increase")
