"""step_kit.persist: models go to disk with skops and come back only if every type in the file
is scikit-learn's or numpy's; anything else is refused on saving and on loading."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer

from step_kit import StepError, persist


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


def test_trusted_types_of_the_real_pipeline_are_sklearn_and_numpy(tuned_model):
    types = persist.trusted_types(tuned_model)
    assert types == sio.get_untrusted_types(data=sio.dumps(tuned_model))
    assert "sklearn.tree._tree.Tree" in types  # the fitted tree is not trusted by skops itself
    assert all(t.startswith(("sklearn.", "numpy.")) for t in types)


@pytest.mark.parametrize(
    ("step", "type_name"),
    [(FunctionTransformer(lambda x: x + 1), "<lambda>"), (Doubler(), "Doubler")],
    ids=["lambda", "custom_class"],
)
def test_foreign_types_are_refused_on_saving(small_xy, tmp_path, step, type_name):
    model = make_pipeline(step, LogisticRegression()).fit(*small_xy)
    with pytest.raises(StepError, match="outside scikit-learn") as caught:
        persist.trusted_types(model)
    assert type_name in str(caught.value)
    path = tmp_path / "model.skops"
    with pytest.raises(StepError) as caught:
        persist.save(model, path)
    assert type_name in str(caught.value)
    assert not path.exists()  # nothing written


def test_numpy_functions_are_stored(small_xy, tmp_path):
    model = make_pipeline(FunctionTransformer(np.tanh), LogisticRegression()).fit(*small_xy)
    loaded = persist.load(persist.save(model, tmp_path / "model.skops"))
    np.testing.assert_array_equal(
        loaded.predict_proba(small_xy[0]), model.predict_proba(small_xy[0])
    )


def test_a_file_with_a_foreign_type_is_refused_on_loading(small_xy, tmp_path):
    model = make_pipeline(Doubler(), LogisticRegression()).fit(*small_xy)
    path = tmp_path / "foreign.skops"
    sio.dump(model, path)  # written around persist.save, e.g. by someone else's code
    with pytest.raises(StepError) as caught:
        persist.load(path)
    message = str(caught.value)
    assert "foreign.skops" in message
    assert f"{Doubler.__module__}.Doubler" in message
