"""Pure test-evaluation logic: behaviour tests of a model, and the quality gate."""

from __future__ import annotations

from typing import Any

from step_kit import Schema, StepError
from step_kit.findings import Finding
from step_kit.schema import as_text

import numpy as np
import pandas as pd


def invariance(
    model: Any,
    features: pd.DataFrame,
    column: str,
    relative_jitter: float,
    max_flip_share: float,
    seed: int,
) -> Finding:
    """Jitter a column that must not matter by up to +-relative_jitter of each value; the share
    of predictions that flip must stay below max_flip_share."""
    _require_number_column(features, column, "Invariance")
    rng = np.random.default_rng(seed)
    jittered = features.copy()
    factor = 1 + rng.uniform(-relative_jitter, relative_jitter, len(features))
    moved = features[column] * factor  # a missing value stays missing
    if pd.api.types.is_integer_dtype(features[column]):
        moved = np.round(moved)
    jittered[column] = moved.astype(features[column].dtype)
    flipped = float(np.mean(model.predict(features) != model.predict(jittered)))
    return Finding(
        f"invariance.{column}",
        flipped < max_flip_share,
        f"{flipped:.4f} of predictions flip under +-{relative_jitter:g} jitter of {column} "
        f"(allowed < {max_flip_share:g})",
    )


def _require_number_column(features: pd.DataFrame, column: str, test: str) -> None:
    """A behaviour test moves a number: its column must be a numeric feature."""
    if column not in features:
        raise StepError(f"{test} column '{column}' is not a feature.", "name a feature column.")
    if not pd.api.types.is_numeric_dtype(features[column]):
        raise StepError(
            f"{test} column '{column}' is a category, not a number: it cannot be moved.",
            "name a numeric feature in evaluation.behaviour, or declare no such test.",
        )


def directional(
    model: Any, features: pd.DataFrame, column: str, delta: float, expect: str
) -> Finding:
    """Adding delta to a column must move the mean positive-class probability the expected way
    (``increase`` or ``decrease``)."""
    _require_number_column(features, column, "Directional")
    if expect not in ("increase", "decrease"):
        raise StepError(f"Directional expectation '{expect}'.", "use increase or decrease.")
    moved = features.copy()
    moved[column] = (features[column] + delta).astype(features[column].dtype)
    before = model.predict_proba(features)[:, 1]
    after = model.predict_proba(moved)[:, 1]
    change = float(np.mean(after) - np.mean(before))
    ok = change > 0 if expect == "increase" else change < 0
    return Finding(
        f"directional.{column}",
        ok,
        f"mean P(positive) moves by {change:+.4f} when {column} += {delta:g} (expected {expect})",
    )


def cases(
    model: Any, schema: Schema, written: list[dict[str, Any]], like: pd.DataFrame | None = None
) -> list[Finding]:
    """Hand-written rows with the label a sensible model must give them. A feature a case leaves
    out (or gives as null) is missing; each column takes the dtype it has in ``like`` (the test
    table), so a case is scored as a row of the data is."""
    findings = []
    for case in written:
        given = case.get("features") or {}
        unknown = sorted(set(given) - set(schema.features))
        if unknown:
            raise StepError(
                f"Behaviour case '{case.get('name')}' names non-features {unknown}.",
                f"use only the features {schema.features} in evaluation.behaviour.cases.",
            )
        row = pd.DataFrame([{c: given.get(c) for c in schema.features}])
        for column in schema.numeric:
            number = pd.to_numeric(row[column], errors="coerce").astype("float64")
            dtype = like[column].dtype if like is not None and column in like else None
            whole = number.notna().all() and (number % 1 == 0).all()
            row[column] = number.astype("int64") if whole and dtype == "int64" else number
        for column in schema.categorical:
            row[column] = row[column].map(as_text, na_action="ignore").astype("str")
        expected = 1 if as_text(case["expected"]) == schema.positive_class else 0
        got = int(model.predict(row)[0])
        proba = float(model.predict_proba(row)[0, 1])
        label = schema.positive_class if got else schema.negative_class
        findings.append(
            Finding(
                f"case.{case['name']}",
                got == expected,
                f"predicted {label} (P={proba:.3f}), expected {as_text(case['expected'])}",
            )
        )
    return findings


def behaviour_tests(
    model: Any, features: pd.DataFrame, schema: Schema, behaviour: dict[str, Any]
) -> list[Finding]:
    """The behaviour tests config group 'evaluation' declares: an invariance (or none), any
    number of directional tests and of hand-written cases. A data set without a natural
    invariance or direction declares none."""
    behaviour = behaviour or {}
    unknown = sorted(set(behaviour) - {"invariance", "directional", "cases"})
    if unknown:
        raise StepError(
            f"Unknown behaviour tests {unknown}.",
            "use invariance, directional and cases in evaluation.behaviour.",
        )
    findings = []
    inv = behaviour.get("invariance")
    if inv:
        findings.append(
            invariance(
                model,
                features,
                inv["column"],
                inv["relative_jitter"],
                inv["max_flip_share"],
                inv.get("seed", 0),
            )
        )
    for d in behaviour.get("directional") or []:
        findings.append(directional(model, features, d["column"], d["delta"], d["expect"]))
    findings += cases(model, schema, behaviour.get("cases") or [], features)
    return findings


def gate(
    metrics: dict[str, float], rules: dict[str, Any], prod: dict[str, float] | None
) -> list[Finding]:
    """The quality gate: minimum test ROC AUC and F1, and at most max_drop_vs_prod ROC AUC lost
    against the model aliased prod (when there is one)."""
    findings = [
        Finding(
            "gate.min_roc_auc",
            metrics["test.roc_auc"] >= rules["min_roc_auc"],
            f"test ROC AUC {metrics['test.roc_auc']:.4f}, minimum {rules['min_roc_auc']:g}",
        ),
        Finding(
            "gate.min_f1",
            metrics["test.f1"] >= rules["min_f1"],
            f"test F1 {metrics['test.f1']:.4f} at the chosen threshold, minimum {rules['min_f1']:g}",
        ),
    ]
    if prod is not None:
        drop = prod["test.roc_auc"] - metrics["test.roc_auc"]
        findings.append(
            Finding(
                "gate.max_drop_vs_prod",
                # tolerance: a subtraction's float error (0.91 - 0.90 > 0.01) must not fail it
                drop <= rules["max_drop_vs_prod"] + 1e-12,
                f"test ROC AUC {metrics['test.roc_auc']:.4f} vs {prod['test.roc_auc']:.4f} of "
                f"the prod model: drop {drop:+.4f}, allowed {rules['max_drop_vs_prod']:g}",
            )
        )
    return findings
