"""step_kit.persist: models go to disk with skops and come back only if every type in the file
that skops does not trust by default is in the model group's list; anything else is refused on
saving and on loading."""

from __future__ import annotations

import os

from step_kit import StepError, persist

import numpy as np
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer


class Doubler:
    """A transformer of no trusted package: loading it would import and run this module."""

    def fit(self, features, target=None):
        return self

    def transform(self, features):
        return features * 2


@pytest.fixture(scope="module")
def small_xy():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 3))
    return features, (features[:, 0] > 0).astype(int)


def test_round_trip_of_the_real_pipeline(tuned_model, val_xy, tmp_path):
    features, _ = val_xy
    path = persist.save(tuned_model, tmp_path / "model.skops")
    assert path == tmp_path / "model.skops" and path.stat().st_size > 0
    loaded = persist.load(path)
    assert isinstance(loaded, FixedThresholdClassifier)
    assert isinstance(loaded.estimator, Pipeline)
    assert isinstance(loaded.estimator.named_steps["preprocess"], ColumnTransformer)
    np.testing.assert_array_equal(loaded.predict(features), tuned_model.predict(features))
    np.testing.assert_array_equal(
        loaded.predict_proba(features), tuned_model.predict_proba(features)
    )


def test_trusted_types_of_the_real_pipeline_are_in_the_list(tuned_model):
    types = persist.trusted_types(tuned_model)
    assert types == sio.get_untrusted_types(data=sio.dumps(tuned_model))
    assert "sklearn.tree._tree.Tree" in types  # the fitted tree is not trusted by skops itself
    assert set(types) <= persist.TRUSTED_TYPES


# smaller ensembles than the config's: the types a model holds do not depend on their size
SMALLER = {"n_estimators": 3, "max_iter": 5}


def test_the_list_is_exactly_what_the_model_group_needs(model_options, splits, schema):
    """Every estimator of config group 'model' (with its threshold, as logged) and every
    baseline (as saved), fitted on real rows: the union of the types skops does not trust by
    default is the list, no more and no less."""
    from training import BASELINES, fit, with_threshold

    train = splits["train"].head(3000)
    needed = set()
    for name, hyperparameters in model_options.values():
        smaller = {k: SMALLER.get(k, v) for k, v in hyperparameters.items()}
        model = with_threshold(fit(train, schema, name, smaller), 0.4)
        needed |= set(sio.get_untrusted_types(data=sio.dumps(model)))
    for name, hyperparameters in BASELINES.items():
        baseline = fit(train, schema, name, hyperparameters)
        needed |= set(sio.get_untrusted_types(data=sio.dumps(baseline)))
    assert needed == persist.TRUSTED_TYPES


FOREIGN = {
    "lambda": (lambda: FunctionTransformer(lambda x: x + 1), "<lambda>"),
    "custom_class": (Doubler, f"{__name__}.Doubler"),
    "shell": (lambda: FunctionTransformer(os.system), "posix.system"),
    "builtin_eval": (lambda: FunctionTransformer(eval), "builtins.eval"),
    "sklearn_type_outside_the_list": (
        lambda: KNeighborsClassifier(algorithm="kd_tree"),
        "sklearn.neighbors._kd_tree.KDTree",
    ),
}


def _holding(kind: str, small_xy) -> tuple[object, str]:
    make, type_name = FOREIGN[kind]
    step = make()
    if isinstance(step, KNeighborsClassifier):
        return step.fit(*small_xy), type_name
    # not fitted as a whole: fitting would run the function (os.system on an array, say)
    return make_pipeline(step, LogisticRegression().fit(*small_xy)), type_name


@pytest.mark.parametrize("kind", list(FOREIGN), ids=list(FOREIGN))
def test_foreign_types_are_refused_on_saving(small_xy, tmp_path, kind):
    model, type_name = _holding(kind, small_xy)
    with pytest.raises(StepError, match="outside the trusted types of the model group") as caught:
        persist.trusted_types(model)
    assert type_name in str(caught.value)
    path = tmp_path / "model.skops"
    with pytest.raises(StepError) as caught:
        persist.save(model, path)
    message = str(caught.value)
    assert type_name in message and "the model is refused" in message and "\n" not in message
    assert not path.exists()  # nothing written


def test_numpy_functions_are_stored(small_xy, tmp_path):
    model = make_pipeline(FunctionTransformer(np.tanh), LogisticRegression()).fit(*small_xy)
    loaded = persist.load(persist.save(model, tmp_path / "model.skops"))
    np.testing.assert_array_equal(
        loaded.predict_proba(small_xy[0]), model.predict_proba(small_xy[0])
    )


@pytest.mark.parametrize("kind", list(FOREIGN), ids=list(FOREIGN))
def test_a_file_with_a_foreign_type_is_refused_on_loading(small_xy, tmp_path, kind):
    model, type_name = _holding(kind, small_xy)
    path = tmp_path / "foreign.skops"
    sio.dump(model, path)  # written around persist.save, e.g. by someone else's code
    with pytest.raises(StepError) as caught:
        persist.load(path)
    message = str(caught.value)
    assert message.startswith("Model file foreign.skops holds ")
    assert type_name in message and "the model is refused" in message


def _saved_with_mlflow(model, path):
    """``model`` saved as train_model logs it: skops, its MLmodel listing the vetted types."""
    import warnings

    import mlflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's notes on the environment it records
        mlflow.sklearn.save_model(
            model,
            str(path),
            serialization_format="skops",
            skops_trusted_types=persist.trusted_types(model),
        )
    return path


def test_a_logged_model_loads_as_logged(tuned_model, val_xy, tmp_path):
    features, _ = val_xy
    loaded = persist.load_logged(str(_saved_with_mlflow(tuned_model, tmp_path / "model")))
    np.testing.assert_array_equal(
        loaded.predict_proba(features), tuned_model.predict_proba(features)
    )


def test_a_logged_model_whose_mlmodel_trusts_posix_system_is_refused(tuned_model, tmp_path):
    """MLflow's own loader trusts the list the MLmodel file carries; load_logged never does."""
    import mlflow
    import yaml

    folder = _saved_with_mlflow(tuned_model, tmp_path / "model")
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["sklearn"]
    flavor["skops_trusted_types"].append("posix.system")
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    shell = make_pipeline(FunctionTransformer(os.system), tuned_model)
    sio.dump(shell, folder / flavor["pickled_model"])
    assert mlflow.sklearn.load_model(str(folder)).steps[0][1].func is os.system
    with pytest.raises(StepError) as caught:
        persist.load_logged(str(folder))
    message = str(caught.value)
    assert message.startswith(f"Model {folder} holds posix.system, outside the trusted types")
    assert "the model is refused" in message and "\n" not in message


@pytest.mark.parametrize(
    "flavor",
    [{"serialization_format": "cloudpickle"}, {"pickled_model": "../elsewhere.skops"}],
    ids=["pickle", "outside_the_folder"],
)
def test_a_logged_model_not_in_skops_inside_its_folder_is_refused(tuned_model, tmp_path, flavor):
    import yaml

    folder = _saved_with_mlflow(tuned_model, tmp_path / "model")
    (tmp_path / "elsewhere.skops").write_bytes((folder / "model.skops").read_bytes())
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"].update(flavor)
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(StepError, match="is not a skops file inside its folder .*refused"):
        persist.load_logged(str(folder))
