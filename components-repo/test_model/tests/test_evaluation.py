"""test_model: test scores are scikit-learn's metrics of the model's class-1 probabilities."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn import metrics
from sklearn.dummy import DummyClassifier

from evaluation import score
from step_kit import StepError


def test_scores_match_sklearn(model, splits, schema):
    test = splits["test"]
    scores = score(model, test, schema)
    assert sorted(scores) == ["test.accuracy", "test.average_precision", "test.f1", "test.roc_auc"]

    truth = test[schema.target].eq(schema.positive_class).astype(int)
    proba = model.predict_proba(test[schema.features])[:, 1]
    predicted = model.predict(test[schema.features])  # the tree's own 0/1 decision
    assert scores["test.roc_auc"] == pytest.approx(metrics.roc_auc_score(truth, proba))
    assert scores["test.average_precision"] == pytest.approx(
        metrics.average_precision_score(truth, proba)
    )
    assert scores["test.f1"] == pytest.approx(metrics.f1_score(truth, predicted))
    assert scores["test.accuracy"] == pytest.approx(metrics.accuracy_score(truth, predicted))
    assert 0.88 <= scores["test.roc_auc"] < 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_constant_model_scores_chance(splits, schema):
    features, target = schema.xy(splits["train"])
    constant = DummyClassifier(strategy="prior").fit(features, target)
    test = splits["test"]
    scores = score(constant, test, schema)
    share = test[schema.target].eq(schema.positive_class).mean()
    assert scores["test.roc_auc"] == 0.5
    assert scores["test.average_precision"] == pytest.approx(share)
    assert scores["test.accuracy"] == pytest.approx(1 - share)  # always the majority class


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_tie_at_one_half_is_scored_as_predict_decides(splits, schema):
    """A probability of exactly 0.5 is the negative class, as in the model's own predict()."""
    train = splits["train"]
    positive = train[schema.target].eq(schema.positive_class)
    balanced = pd.concat([train[~positive].head(int(positive.sum())), train[positive]])
    features, target = schema.xy(balanced)
    coin = DummyClassifier(strategy="prior").fit(features, target)
    test = splits["test"]
    assert (coin.predict_proba(test[schema.features])[:, 1] == 0.5).all()
    assert not coin.predict(test[schema.features]).any()
    scores = score(coin, test, schema)
    share = test[schema.target].eq(schema.positive_class).mean()
    assert scores["test.accuracy"] == pytest.approx(1 - share)
    assert scores["test.f1"] == 0.0


def test_table_without_target(model, splits, schema):
    with pytest.raises(StepError, match=f"lacks the columns \\['{schema.target}'\\]"):
        score(model, splits["test"].drop(columns=schema.target), schema)
