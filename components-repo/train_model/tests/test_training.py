"""train_model: the configured estimators fit the real data, the threshold is chosen on
validation as each strategy promises, the thresholded model serves odd inputs and round-trips."""

from __future__ import annotations

import warnings
from importlib.metadata import version

from step_kit import StepError, persist

import mlflow
import numpy as np
import pytest
import sklearn
from sklearn.metrics import f1_score, fbeta_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from training import (
    BASELINES,
    ESTIMATORS,
    THRESHOLD_STRATEGIES,
    build_pipeline,
    choose_threshold,
    feature_importances,
    fit,
    pinned_requirements,
    with_threshold,
)

# Fewer trees / boosting rounds than the config's, so the suite stays fast; all else as configured.
FAST = {"random_forest": {"n_estimators": 50}, "hist_gradient_boosting": {"max_iter": 50}}
TREES = ("decision_tree", "random_forest", "hist_gradient_boosting")
# Gradient boosting's OpenMP threads crawl on a busy two-core machine (another test process is
# enough): one thread is 20x faster there and gives the same model.
ONE_THREAD = {"limits": 1, "user_api": "openmp"}


@pytest.fixture(scope="module")
def val_proba(model, val_xy):
    return model.predict_proba(val_xy[0])[:, 1]


@pytest.fixture(scope="module")
def ensembles(splits, schema, model_options):
    """random_forest and hist_gradient_boosting from their config files, fitted on train."""
    fitted = {}
    for option, override in FAST.items():
        name, hyperparameters = model_options[option]
        with threadpool_limits(**ONE_THREAD):
            fitted[name] = fit(splits["train"], schema, name, {**hyperparameters, **override})
    return fitted


@pytest.fixture(scope="module")
def dummy_roc_auc(splits, schema, val_xy):
    baseline = fit(splits["train"], schema, "dummy_prior", BASELINES["dummy_prior"])
    return roc_auc_score(val_xy[1], baseline.predict_proba(val_xy[0])[:, 1])


# --- fitting ------------------------------------------------------------------------------------
def test_default_tree_validation_roc_auc(model, model_name, val_xy, val_proba):
    assert model_name == "decision_tree"
    _, target = val_xy
    assert roc_auc_score(target, val_proba) >= 0.88
    accuracy = float(np.mean(model.predict(val_xy[0]) == target))
    assert accuracy > 1 - target.mean()  # better than always saying "<=50K"


def test_hyperparameters_reach_the_tree(model, hyperparameters):
    params = model.named_steps["classifier"].get_params()
    assert {key: params[key] for key in hyperparameters} == hyperparameters
    assert model.named_steps["classifier"].get_depth() <= hyperparameters["max_depth"]


@pytest.mark.parametrize("option", sorted(FAST))
def test_ensembles_beat_the_dummy_baseline(ensembles, model_options, option, val_xy, dummy_roc_auc):
    name, hyperparameters = model_options[option]
    fitted = ensembles[name]
    params = fitted.named_steps["classifier"].get_params()
    expected = {**hyperparameters, **FAST[option]}
    assert type(fitted.named_steps["classifier"]) is ESTIMATORS[name]
    assert {key: params[key] for key in expected} == expected
    with threadpool_limits(**ONE_THREAD):
        roc_auc = roc_auc_score(val_xy[1], fitted.predict_proba(val_xy[0])[:, 1])
    assert dummy_roc_auc == pytest.approx(0.5)
    assert roc_auc > dummy_roc_auc + 0.3, f"{name}: {roc_auc:.4f}"


def _numeric_block(pipeline, features, schema):
    """The numeric columns as the fitted preprocessing step hands them to the estimator."""
    preprocess = pipeline.named_steps["preprocess"].fit(features)
    names = list(preprocess.get_feature_names_out())
    out = preprocess.transform(features)
    return out[:, [names.index(column) for column in schema.numeric]]


def test_logistic_regression_baseline_scales_numerics(schema, splits):
    features, _ = schema.xy(splits["train"])
    pipeline = build_pipeline(schema, "logistic_regression", BASELINES["logistic_regression"])
    numeric = dict((n, t) for n, t, _ in pipeline.named_steps["preprocess"].transformers)
    assert isinstance(numeric["numeric"].steps[-1][1], StandardScaler)
    block = _numeric_block(pipeline, features, schema)
    np.testing.assert_allclose(block.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(block.std(axis=0), 1, atol=1e-9)


@pytest.mark.parametrize("option", TREES)
def test_tree_pipelines_pass_numerics_unscaled(schema, splits, model_options, option):
    features, _ = schema.xy(splits["train"].head(2000))
    name, hyperparameters = model_options[option]
    pipeline = build_pipeline(schema, name, hyperparameters)
    numeric = dict((n, t) for n, t, _ in pipeline.named_steps["preprocess"].transformers)
    assert not any(isinstance(step, StandardScaler) for _, step in numeric["numeric"].steps)
    block = _numeric_block(pipeline, features, schema)
    np.testing.assert_array_equal(block, features[list(schema.numeric)].to_numpy())


# --- hyperparameter errors ----------------------------------------------------------------------
def test_unknown_model_name_lists_the_estimators(schema):
    with pytest.raises(StepError) as caught:
        build_pipeline(schema, "xgboost", {})
    message = str(caught.value)
    assert "Unknown model 'xgboost'" in message
    for name in ESTIMATORS:
        assert f"'{name}'" in message


def test_unknown_hyperparameter_is_named(splits, schema, model_name, hyperparameters):
    with pytest.raises(StepError) as caught:
        fit(splits["train"], schema, model_name, {**hyperparameters, "max_dept": 3, "leaves": 9})
    message = str(caught.value)
    assert "Unknown decision_tree hyperparameters ['leaves', 'max_dept']" in message
    assert "'max_depth'" in message  # the fix lists the valid names


@pytest.mark.parametrize(
    "bad", [{"max_depth": -1}, {"criterion": "variance"}, {"min_samples_leaf": "fifty"}]
)
def test_invalid_hyperparameter_value_fails_before_fitting(
    splits, schema, model_name, hyperparameters, bad
):
    # No rows at all: had the estimator started fitting, sklearn would complain about the data.
    with pytest.raises(StepError, match="decision_tree rejects its hyperparameters") as caught:
        fit(splits["train"].head(0), schema, model_name, {**hyperparameters, **bad})
    key, value = next(iter(bad.items()))
    assert key in str(caught.value) and repr(value) in str(caught.value)


# --- the decision threshold ---------------------------------------------------------------------
def test_max_f1_picks_the_best_f1_of_its_curve(model, val_xy, val_proba):
    features, target = val_xy
    choice = choose_threshold(model, features, target, "max_f1")
    assert choice.metric == "f1"
    curve = [f1_score(target, val_proba >= t, zero_division=0) for t in choice.thresholds]
    np.testing.assert_allclose(choice.scores, curve)
    chosen = f1_score(target, with_threshold(model, choice.threshold).predict(features))
    assert chosen == pytest.approx(max(curve))
    assert chosen == pytest.approx(choice.score)
    # the tuned threshold beats the estimator's own 0.5
    assert chosen >= f1_score(target, model.predict(features))


def test_max_fbeta_below_one_favours_precision(model, val_xy, threshold_choice):
    features, target = val_xy
    f1_choice = choose_threshold(model, features, target, "max_f1")
    choice = choose_threshold(model, features, target, "max_fbeta", beta=0.5)
    assert choice.metric == "f0.5"
    assert choice.threshold >= f1_choice.threshold
    labels = with_threshold(model, choice.threshold).predict(features)
    assert fbeta_score(target, labels, beta=0.5) == pytest.approx(choice.score)
    assert fbeta_score(target, labels, beta=0.5) == pytest.approx(max(choice.scores))


def test_recall_at_precision_keeps_the_precision(model, val_xy, val_proba):
    features, target = val_xy
    choice = choose_threshold(model, features, target, "recall_at_precision", min_precision=0.8)
    labels = with_threshold(model, choice.threshold).predict(features)
    assert precision_score(target, labels) >= 0.8
    assert recall_score(target, labels) == pytest.approx(choice.score)
    # the highest recall among the thresholds that keep precision 0.8
    precise = [
        recall_score(target, val_proba >= t)
        for t in choice.thresholds
        if precision_score(target, val_proba >= t, zero_division=0) >= 0.8
    ]
    assert choice.score == pytest.approx(max(precise))


def test_unreachable_precision_names_the_best_one(model, val_xy, val_proba):
    features, target = val_xy
    best = max(precision_score(target, val_proba >= t) for t in np.unique(val_proba))
    assert best < 0.999
    with pytest.raises(StepError) as caught:
        choose_threshold(model, features, target, "recall_at_precision", min_precision=0.999)
    message = str(caught.value)
    assert "precision 0.999" in message
    assert f"the highest is {best:.4f}" in message


def test_unknown_strategy_lists_the_three(model, val_xy):
    features, target = val_xy
    with pytest.raises(StepError, match="Unknown threshold strategy 'max_auc'") as caught:
        choose_threshold(model, features, target, "max_auc")
    assert THRESHOLD_STRATEGIES == ("max_f1", "max_fbeta", "recall_at_precision")
    for strategy in THRESHOLD_STRATEGIES:
        assert strategy in str(caught.value)


def test_with_threshold_predicts_at_or_above_it(model, val_xy, val_proba, threshold_choice):
    features, _ = val_xy
    leaves = np.unique(val_proba)
    leaf = float(leaves[len(leaves) // 2])  # a probability some rows have exactly
    for threshold in (threshold_choice.threshold, leaf, 0.5, 0.05):
        tuned = with_threshold(model, threshold)
        assert isinstance(tuned, FixedThresholdClassifier)
        np.testing.assert_array_equal(
            tuned.predict(features), (val_proba >= threshold).astype(int), err_msg=f"{threshold}"
        )
        np.testing.assert_array_equal(tuned.predict_proba(features), model.predict_proba(features))
    assert (val_proba == leaf).any()


# --- serving ------------------------------------------------------------------------------------
def test_unknown_categories_at_predict_time(model, val_xy, schema):
    features, _ = val_xy
    odd = features.head(200).copy()
    for column in schema.categorical:
        odd[column] = f"never-seen-{column}"
    proba = model.predict_proba(odd)
    assert proba.shape == (200, 2)
    assert np.isfinite(proba).all()
    # An unknown value encodes as no category at all, whatever its text.
    other = odd.copy()
    other[schema.categorical[0]] = "another unseen value"
    np.testing.assert_array_equal(model.predict_proba(other), proba)


def test_missing_categorical_values_at_predict_time(model, val_xy, schema):
    features, _ = val_xy
    rows = features.head(200).copy()
    gappy = rows.copy()
    gappy.loc[gappy.index[::2], list(schema.categorical)] = None
    proba = model.predict_proba(gappy)
    assert np.isfinite(proba).all()
    np.testing.assert_array_equal(proba[1::2], model.predict_proba(rows)[1::2])
    # Missing is imputed as its own category, the one the training data's missing values got.
    as_text = rows.copy()
    as_text.loc[as_text.index[::2], list(schema.categorical)] = "missing"
    np.testing.assert_array_equal(proba, model.predict_proba(as_text))


def test_missing_values_as_object_columns(tuned_model, val_xy, schema):
    """A caller (e.g. MLflow's pyfunc from JSON) may send plain object columns with None."""
    features, _ = val_xy
    rows = features.head(50).astype({column: object for column in schema.categorical})
    rows.loc[rows.index[:10], "occupation"] = None
    assert np.isfinite(tuned_model.predict_proba(rows)).all()
    assert set(tuned_model.predict(rows)) <= {0, 1}


def test_pinned_requirements():
    pins = pinned_requirements()
    assert f"scikit-learn=={sklearn.__version__}" in pins
    assert f"skops=={version('skops')}" in pins
    assert f"mlflow=={version('mlflow')}" in pins
    assert all(pin.count("==") == 1 for pin in pins)


def test_thresholded_model_round_trips_through_mlflow_skops(tuned_model, val_xy, tmp_path):
    """The types persist.trusted_types declares are all skops needs to load the logged model."""
    features, _ = val_xy
    path = tmp_path / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's notes on the environment it records
        mlflow.sklearn.save_model(
            tuned_model,
            str(path),
            serialization_format="skops",
            skops_trusted_types=persist.trusted_types(tuned_model),
            pip_requirements=pinned_requirements(),
        )
    assert not list(path.rglob("*.pkl"))
    loaded = mlflow.sklearn.load_model(str(path))
    assert isinstance(loaded, FixedThresholdClassifier)
    assert loaded.threshold == tuned_model.threshold
    np.testing.assert_array_equal(loaded.predict(features), tuned_model.predict(features))
    np.testing.assert_array_equal(
        loaded.predict_proba(features), tuned_model.predict_proba(features)
    )


# --- what the model learned ---------------------------------------------------------------------
def test_tree_importances_are_impurity_per_one_hot_feature(model, val_xy, schema):
    features, target = val_xy
    names, importances, kind = feature_importances(model, features, target)
    assert kind == "impurity"
    assert names == list(model.named_steps["preprocess"].get_feature_names_out())
    assert len(names) == len(importances) > len(schema.features)
    for column in schema.numeric:
        assert column in names
    for column in schema.categorical:
        assert column not in names
        assert any(name.startswith(f"{column}_") for name in names)
    assert "marital-status_Married-civ-spouse" in names
    assert (importances >= 0).all()
    assert importances.sum() == pytest.approx(1.0)


def test_boosting_importances_are_permutation_per_column(ensembles, val_xy):
    features, target = (part.head(2000) for part in val_xy)
    with threadpool_limits(**ONE_THREAD):
        names, importances, kind = feature_importances(
            ensembles["hist_gradient_boosting"], features, target
        )
    assert kind.startswith("permutation")
    assert names == list(features.columns)
    assert importances.shape == (len(names),)
    assert np.isfinite(importances).all()
    # the census sampling weight carries next to no signal; the strongest column clearly does
    top = importances.max()
    assert top > 0.02
    assert importances[names.index("fnlwgt")] < top / 5
