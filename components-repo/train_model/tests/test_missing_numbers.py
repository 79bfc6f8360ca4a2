"""The inference pipeline takes rows with missing numbers: every estimator of config group
'model' and every baseline trains on a real table whose numbers have gaps, and scores rows with
gaps, however config group 'preprocess' fills them."""

from __future__ import annotations

from step_kit import StepError

import numpy as np
import pandas as pd
import pytest

from training import BASELINES, IMPUTATIONS, Preprocess, fit


@pytest.fixture(scope="module")
def gappy(splits, schema) -> dict[str, pd.DataFrame]:
    """2,000 train and 500 validation rows of Adult with a fifth of each number missing."""
    rng = np.random.default_rng(7)
    out = {}
    for name, rows in (("train", 2000), ("val", 500)):
        frame = splits[name].head(rows).copy()
        for column in schema.numeric:
            frame[column] = frame[column].astype("float64").mask(rng.random(rows) < 0.2)
        out[name] = frame
    return out


ESTIMATORS = ["decision_tree", "random_forest", "hist_gradient_boosting"]


@pytest.mark.parametrize("option", ESTIMATORS)
def test_every_estimator_trains_and_scores_rows_with_missing_numbers(
    gappy, schema, model_options, option
):
    name, hyperparameters = model_options[option]
    hyperparameters = {
        **hyperparameters,
        **({"n_estimators": 20} if "n_estimators" in hyperparameters else {}),
    }
    model = fit(gappy["train"], schema, name, hyperparameters)
    features, target = schema.xy(gappy["val"])
    assert features[list(schema.numeric)].isna().any().all()
    proba = model.predict_proba(features)[:, 1]
    assert np.isfinite(proba).all()
    # it learned something from the gappy rows: better than chance on the gappy validation rows
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(target, proba) > 0.75


@pytest.mark.parametrize("baseline", sorted(BASELINES))
def test_every_baseline_trains_and_scores_rows_with_missing_numbers(gappy, schema, baseline):
    model = fit(gappy["train"], schema, baseline, BASELINES[baseline])
    proba = model.predict_proba(schema.xy(gappy["val"])[0])[:, 1]
    assert np.isfinite(proba).all()


@pytest.mark.parametrize("strategy", IMPUTATIONS)
@pytest.mark.parametrize("indicator", [False, True])
def test_a_missing_number_becomes_the_configured_value(gappy, schema, strategy, indicator):
    settings = Preprocess(
        numeric_imputation=strategy, numeric_fill_value=-1.0, missing_indicator=indicator
    )
    model = fit(gappy["train"], schema, "decision_tree", {"max_depth": 4}, settings)
    preprocess = model.named_steps["preprocess"]
    features = schema.xy(gappy["val"])[0]
    names = list(preprocess.get_feature_names_out())
    out = pd.DataFrame(preprocess.transform(features), columns=names)
    train_age = gappy["train"]["age"].dropna()
    expected = {
        "median": train_age.median(),
        "mean": train_age.mean(),
        "most_frequent": train_age.mode().min(),
        "constant": -1.0,
    }[strategy]
    gaps = features["age"].isna().to_numpy()
    np.testing.assert_allclose(out.loc[gaps, "age"], expected)
    np.testing.assert_array_equal(out.loc[~gaps, "age"], features.loc[~gaps, "age"])
    if indicator:
        np.testing.assert_array_equal(out["missingindicator_age"], gaps.astype(float))
    else:
        assert not any(n.startswith("missingindicator_") for n in names)


def test_a_number_missing_only_after_training_is_filled_too(splits, schema):
    model = fit(splits["train"].head(2000), schema, "decision_tree", {"max_depth": 4})
    features = schema.xy(splits["val"].head(50))[0].copy()
    features["age"] = np.nan  # never missing in training
    assert np.isfinite(model.predict_proba(features)).all()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"numeric_imputation": "zero"}, "Unknown numeric imputation 'zero'"),
        ({"numeric_fill_value": "x"}, "numeric_fill_value is 'x', not a finite number"),
        ({"numeric_fill_value": True}, "numeric_fill_value is True, not a finite number"),
        ({"numeric_fill_value": float("inf")}, "numeric_fill_value is inf, not a finite number"),
        ({"numeric_fill_value": float("nan")}, "numeric_fill_value is nan, not a finite number"),
        ({"missing_indicator": "yes"}, "missing_indicator is 'yes'"),
        ({"impute": "median"}, "Unknown preprocess settings ['impute']"),
    ],
)
def test_bad_preprocess_settings_are_named(raw, message):
    with pytest.raises(StepError) as caught:
        Preprocess.from_dict(raw)
    assert message in str(caught.value)


def test_no_preprocess_settings_mean_median_without_indicator():
    assert Preprocess.from_dict({}) == Preprocess("median", 0.0, False)


def test_a_positive_class_the_target_never_holds_is_named(splits, schema):
    import dataclasses

    wrong = dataclasses.replace(schema, positive_class="> 50K")
    with pytest.raises(StepError) as caught:
        fit(splits["train"].head(500), wrong, "decision_tree", {})
    assert (
        "The train table holds one class only: 0 of 500 rows are the positive class '> 50K'"
        in str(caught.value)
    )
