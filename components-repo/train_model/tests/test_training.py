"""train_model: the inference pipeline fits the real data, serves odd inputs, and round-trips."""

from __future__ import annotations

import warnings
from importlib.metadata import version

import mlflow
import numpy as np
import pytest
import sklearn

from step_kit import StepError
from step_kit.metrics import binary_scores
from training import SKOPS_TRUSTED_TYPES, build_pipeline, fit, pinned_requirements


@pytest.fixture(scope="module")
def val_xy(splits, schema):
    return schema.xy(splits["val"])


def test_validation_roc_auc(model, val_xy):
    features, target = val_xy
    scores = binary_scores(target.to_numpy(), model.predict_proba(features)[:, 1])
    assert scores["roc_auc"] >= 0.88
    assert scores["accuracy"] > 1 - target.mean()  # better than always saying "<=50K"


def test_hyperparameters_reach_the_tree(model, hyperparameters):
    params = model.named_steps["classifier"].get_params()
    assert {key: params[key] for key in hyperparameters} == hyperparameters
    assert model.named_steps["classifier"].get_depth() <= hyperparameters["max_depth"]


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


def test_missing_values_as_object_columns(model, val_xy, schema):
    """A caller (e.g. MLflow's pyfunc from JSON) may send plain object columns with None."""
    features, _ = val_xy
    rows = features.head(50).astype({column: object for column in schema.categorical})
    rows.loc[rows.index[:10], "occupation"] = None
    assert np.isfinite(model.predict_proba(rows)).all()


def test_unknown_hyperparameter_is_listed(splits, schema, hyperparameters):
    with pytest.raises(StepError) as caught:
        fit(splits["train"], schema, {**hyperparameters, "max_dept": 3, "leaves": 9})
    message = str(caught.value)
    assert "Unknown decision-tree hyperparameters ['leaves', 'max_dept']" in message
    assert "'max_depth'" in message  # the fix lists the valid names


def test_unknown_hyperparameter_fails_before_fitting(schema):
    with pytest.raises(StepError, match="max_dept"):
        build_pipeline(schema, {"max_dept": 3})


@pytest.mark.parametrize(
    "bad", [{"max_depth": -1}, {"criterion": "variance"}, {"min_samples_leaf": "fifty"}]
)
def test_invalid_hyperparameter_value(splits, schema, hyperparameters, bad):
    with pytest.raises(StepError, match="The decision tree rejects its hyperparameters"):
        fit(splits["train"].head(500), schema, {**hyperparameters, **bad})


def test_pinned_requirements():
    pins = pinned_requirements()
    assert f"scikit-learn=={sklearn.__version__}" in pins
    assert f"skops=={version('skops')}" in pins
    assert all(pin.count("==") == 1 for pin in pins)


def test_skops_round_trip_with_trusted_types(model, val_xy, tmp_path):
    """The declared trusted types are all skops needs to load the fitted pipeline."""
    features, _ = val_xy
    path = tmp_path / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's notes on the environment it records
        mlflow.sklearn.save_model(
            model,
            str(path),
            serialization_format="skops",
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=pinned_requirements(),
        )
    assert not list(path.rglob("*.pkl"))
    loaded = mlflow.sklearn.load_model(str(path))
    np.testing.assert_array_equal(loaded.predict_proba(features), model.predict_proba(features))
    np.testing.assert_array_equal(loaded.predict(features), model.predict(features))
