"""step_kit.scoring: a model is scored on one job and one native thread, and gets its own jobs and
the thread pools back afterwards, whatever wraps it (pipeline, threshold, fitted clone)."""

from __future__ import annotations

from step_kit.scoring import fixed_fit_threads, fixed_order, predictions

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_info


@pytest.fixture(scope="module")
def xy(raw_sample, schema):
    """The numeric features and 0/1 target of the first 2,000 rows of the real sample."""
    features, target = schema.xy(raw_sample.head(2000))
    return features[list(schema.numeric)], target


def _forest(n_jobs: int) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=10, n_jobs=n_jobs, random_state=0)


@pytest.fixture(scope="module")
def wrapped(xy):
    """A prefit threshold around a pipeline whose transformer and forest both take n_jobs."""
    pipeline = Pipeline(
        [
            (
                "numbers",
                ColumnTransformer([("keep", "passthrough", list(xy[0].columns))], n_jobs=2),
            ),
            ("forest", _forest(2)),
        ]
    ).fit(*xy)
    return FixedThresholdClassifier(pipeline, threshold=0.3)


def _jobs(model) -> dict[str, object]:
    return {key: value for key, value in model.get_params().items() if key.endswith("n_jobs")}


def _threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info()}


def test_every_nested_n_jobs_is_one_inside_and_restored_after(wrapped):
    before, threads = _jobs(wrapped), _threads()
    assert before == {"estimator__numbers__n_jobs": 2, "estimator__forest__n_jobs": 2}
    with fixed_order(wrapped) as model:
        assert model is wrapped
        assert set(_jobs(wrapped).values()) == {1}
        assert _threads() == {1}  # OpenMP and BLAS alike
    assert _jobs(wrapped) == before
    assert _threads() == threads


def test_jobs_and_threads_are_restored_when_scoring_fails(wrapped, xy):
    before, threads = _jobs(wrapped), _threads()
    with pytest.raises(ValueError), fixed_order(wrapped):
        wrapped.predict_proba(xy[0].iloc[:, :2])  # too few columns
    assert _jobs(wrapped) == before
    assert _threads() == threads


def test_a_fitted_threshold_scores_with_its_clone_on_one_job(xy):
    # fit() clones the forest: the clone's n_jobs is out of reach of get_params()
    model = FixedThresholdClassifier(_forest(2), threshold=0.3).fit(*xy)
    with fixed_order(model):
        assert model.estimator_.n_jobs == 1
    assert model.estimator_.n_jobs == 2


def test_predictions_labels_at_half_are_the_estimator_inside_the_threshold(wrapped, xy):
    features = xy[0]
    scored = predictions(wrapped, features)
    # the same up to the order two jobs add the trees in
    assert np.allclose(scored.proba, wrapped.estimator.predict_proba(features)[:, 1], atol=1e-12)
    assert np.array_equal(scored.labels, (scored.proba >= 0.3).astype(int))
    assert np.array_equal(scored.labels_at_half, wrapped.estimator.predict(features))
    assert not np.array_equal(scored.labels, scored.labels_at_half)


def test_predictions_of_a_bare_forest_use_the_forest_itself(xy):
    # a forest's own `estimator` is its unfitted template tree, never what predicts
    forest = _forest(2).fit(*xy)
    scored = predictions(forest, xy[0])
    assert np.array_equal(scored.labels, scored.labels_at_half)
    assert np.array_equal(scored.labels, forest.predict(xy[0]))


def _threads_by_api() -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for pool in threadpool_info():
        found.setdefault(pool["user_api"], set()).add(pool["num_threads"])
    return found


def test_fitting_threads_limit_blas_only():
    before = _threads_by_api()
    with fixed_fit_threads():
        inside = _threads_by_api()
    # gradient boosting keeps its OpenMP threads (its fit is the same on 1 or 2 of them)
    assert inside == {**before, "blas": {1}}
    assert _threads_by_api() == before
