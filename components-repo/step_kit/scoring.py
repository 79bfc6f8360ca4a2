"""Scores that do not depend on the thread count: what a release records must rerun bit for bit.

A forest predicting on several threads adds its trees' probabilities in the order the threads
finish, and multi-threaded BLAS splits its sums by the thread count: the last bits then vary from
call to call and from machine to machine. Scoring runs in one fixed order instead (one job, one
native thread); fitting keeps the configured ``n_jobs`` (a forest seeds each tree, so its fit is
the same on any number of jobs) under ``fixed_fit_threads``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.model_selection import FixedThresholdClassifier, TunedThresholdClassifierCV
from threadpoolctl import threadpool_limits

# Models that carry a decision threshold of their own around the estimator they wrap.
THRESHOLDED = (FixedThresholdClassifier, TunedThresholdClassifierCV)


def _job_params(model: Any) -> list[tuple[Any, dict[str, Any]]]:
    """(estimator, its ``*n_jobs`` parameters) for ``model`` and, when it is a meta-estimator
    that predicts with a fitted clone (``estimator_``), for that clone, which its parameters miss."""
    parts = [model]
    clone = getattr(model, "estimator_", None)
    if hasattr(clone, "get_params") and clone is not getattr(model, "estimator", None):
        parts.append(clone)
    return [
        (part, {key: value for key, value in part.get_params().items() if key.endswith("n_jobs")})
        for part in parts
    ]


@contextmanager
def fixed_order(model: Any) -> Iterator[Any]:
    """Within the block, ``model`` runs in one fixed order: every ``*n_jobs`` parameter (nested
    ones of pipelines and meta-estimators included) is 1 and native thread pools (OpenMP, BLAS)
    have one thread; the parameters and pools are restored on leaving."""
    saved = _job_params(model)
    for part, jobs in saved:
        part.set_params(**dict.fromkeys(jobs, 1))
    try:
        with threadpool_limits(limits=1):
            yield model
    finally:
        for part, jobs in saved:
            part.set_params(**jobs)


@contextmanager
def fixed_fit_threads() -> Iterator[None]:
    """Within the block, BLAS has one thread: a linear model's solver then sums in the same order
    whatever the machine's core count (OpenMP keeps its threads: gradient boosting's fit is the same on 1 or 2)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


class Predictions(NamedTuple):
    """A classifier's output on a table: positive-class probability, label at the model's own
    decision threshold, and label at the usual 0.5 of the estimator inside (before the threshold;
    the same labels when the model has no threshold of its own)."""

    proba: np.ndarray
    labels: np.ndarray
    labels_at_half: np.ndarray


def predictions(model: Any, features: pd.DataFrame) -> Predictions:
    """Score ``model`` on ``features`` in the fixed order (``fixed_order``)."""
    # a fitted threshold classifier predicts with its refitted estimator_, a prefit one with
    # estimator; a forest's `estimator` is its unfitted template tree, so the type decides
    inner = (
        getattr(model, "estimator_", model.estimator) if isinstance(model, THRESHOLDED) else model
    )
    with fixed_order(model):
        return Predictions(
            proba=model.predict_proba(features)[:, 1],
            labels=model.predict(features),
            labels_at_half=inner.predict(features),
        )
