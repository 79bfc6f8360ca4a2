"""The model to serve, loaded once (which one: reprise.serving.reference): its input schema from
the MLflow signature, and the checks every input row must pass (their rules: reprise.serving.rows).

A model whose fast path is plain arrays (a decision tree or a small forest) is compiled once per
model version and kept in the cache folder under the digest of the version's files; later loads
of that version read the arrays and import neither MLflow nor scikit-learn. A compiled scorer
is kept only once it gave scikit-learn's answers on the model's input example and seeded
synthetic rows, and is read back only while its bytes match the sha256 kept beside it (a
missing or other digest: compiled again). The model files are read with skops, trusting only
the components' own list of types (model_trust), never the list their MLmodel file carries.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reprise import paths, tracking
from reprise.errors import RepriseError
from reprise.serving import fast
from reprise.serving.fast import FastScorer, NotCompilable
from reprise.serving.reference import pinned_uri, signature_inputs
from reprise.serving.rows import (
    INT64,
    InputError,
    file_value_problem,
    missing_columns,
    refused_numbers,
    value_problem,
)

log = logging.getLogger(__name__)

# Files of a model version's folder that say nothing of the model: MLflow writes this one at the
# version's first load (its name and number), which would change the folder's digest.
NOT_THE_MODEL = {"registered_model_meta"}
# MLflow signature types -> the kind of value a column holds
NUMERIC_TYPES = {"long": "integer", "integer": "integer", "double": "number", "float": "number"}


@dataclass
class ServedModel:
    """A loaded model and what identifies it."""

    uri: str
    model: Any  # the scikit-learn model; None when the fast path (scorer) stands for it
    columns: dict[str, str]  # input column -> "integer" | "number" | "string", signature order
    name: str | None = None
    version: str | None = None
    release: str | None = None
    components: dict[str, str] = field(default_factory=dict)  # step -> commit
    scorer: FastScorer | None = None

    @property
    def threshold(self) -> float:
        if self.scorer is not None:
            return float(self.scorer.threshold)
        return float(getattr(self.model, "threshold", 0.5))

    def score(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(probability of the positive class, label at the model's threshold) per row."""
        if self.scorer is not None:
            proba = self.scorer.predict_proba(frame)
            return proba, self.scorer.predict(proba)
        proba = self.model.predict_proba(frame)[:, 1]
        return proba, np.asarray(self.model.predict(frame), dtype=np.int64)

    @cached_property
    def imputed(self) -> frozenset[str]:
        """The number columns whose missing values the model fills: there a missing number
        (null, NaN) is scored, elsewhere refused. Asked of the scorer when there is one (a
        loaded scorer has no scikit-learn model), else of the scikit-learn pipeline."""
        scorer = self.scorer
        found = scorer.imputed if scorer is not None else fast.imputed_columns(self.model)
        return frozenset(c for c in found if self.columns.get(c) in ("integer", "number"))

    def describe(self) -> dict[str, Any]:
        return {
            "model_uri": self.uri,
            "registered_model": self.name,
            "model_version": self.version,
            "release": self.release,
            "components": self.components,
            "threshold": self.threshold,
            "fast_path": self.scorer is not None,
        }

    # --- input checks ---------------------------------------------------------------------
    def columns_from_records(self, records: Any) -> dict[str, list[Any]]:
        """{column: values} from JSON-like records, every value checked against the signature
        without building a DataFrame; the first bad field is an InputError."""
        if not isinstance(records, list):
            raise InputError("the body must be a row object or a list of row objects")
        if not records:
            raise InputError("no rows given")
        kinds = self.columns
        names = kinds.keys()
        imputed = self.imputed
        out: dict[str, list[Any]] = {column: [] for column in kinds}
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise InputError("a row must be an object of column: value", row=i)
            if record.keys() != names:
                missing = missing_columns(kinds, record)
                if missing:
                    raise InputError("missing column", missing[0], row=i)
                extra = [k for k in record if k not in kinds]
                raise InputError(f"unknown field (the model reads {list(kinds)})", extra[0], i)
            for column, kind in kinds.items():
                value = record[column]
                kind_of = type(value)
                # obviously good values skip the checks: text (or null) for text, an int for numbers
                if not (
                    (kind_of is str or value is None)
                    if kind == "string"
                    else (kind_of is int and -INT64 <= value < INT64)
                ) and not (column in imputed and fast.is_missing(value)):
                    problem = value_problem(value, kind)
                    if problem:
                        raise InputError(problem, column, row=i)
                out[column].append(value)
        return out

    def typed(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's columns in signature order, with the dtypes training gave them (an
        integer column missing a value as float64, NaN where missing)."""
        out = {}
        for column, kind in self.columns.items():
            values = frame[column]
            if kind == "string":
                out[column] = values.astype("str").where(values.notna())
            elif kind == "integer" and not (column in self.imputed and values.isna().any()):
                out[column] = values.astype("int64")
            else:
                out[column] = values.astype("float64")
        return pd.DataFrame(out)

    def bad_rows(self, frame: pd.DataFrame, impute: bool = True) -> pd.Series:
        """Per row, the reason it cannot be scored ("" for a good row), checked column-wise;
        with ``impute`` off a missing number is refused in every column."""
        reasons = pd.Series("", index=frame.index, dtype=object)
        imputed = self.imputed if impute else frozenset()
        for column, kind in self.columns.items():
            values = frame[column]
            if kind == "string":
                numbers = values
                bad = values.notna() & ~values.map(lambda v: isinstance(v, str))
            else:
                numbers = pd.to_numeric(values, errors="coerce")
                refused = refused_numbers(values, numbers, kind, column in imputed)
                bad = pd.Series(refused, index=frame.index)
            first = bad & (reasons == "")
            reasons[first] = [
                f"{column}: {file_value_problem(v, n, kind)}"
                for v, n in zip(values[first], numbers[first], strict=True)
            ]
        return reasons


def _compiled_path(artifacts: str | None) -> Path | None:
    """Where the compiled scorer of the model files in ``artifacts`` is kept: named by their
    digest, so a folder whose files change is compiled again."""
    if not artifacts:
        return None
    digest = hashlib.sha256()
    for path in sorted(Path(artifacts).rglob("*")):
        if path.is_file() and path.name not in NOT_THE_MODEL:
            digest.update(str(path.relative_to(artifacts)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return paths.cache_dir() / "scorers" / f"v{fast.FORMAT}" / f"{digest.hexdigest()}.npz"


def compiled_on_disk(meta: dict[str, Any]) -> bool:
    """Whether the model ``resolve`` gave this ``meta`` for was compiled before (its arrays and
    their digest are in the cache folder), and so loads in milliseconds."""
    compiled = _compiled_path(meta.get("artifacts"))
    return compiled is not None and compiled.is_file() and fast.digest_path(compiled).is_file()


def _served(uri: str, meta: dict[str, Any], **loaded: Any) -> ServedModel:
    return ServedModel(
        uri=uri,
        name=meta.get("name"),
        version=meta.get("version"),
        release=meta.get("release"),
        components=meta.get("components", {}),
        **loaded,
    )


def load(uri: str, meta: dict[str, Any] | None = None) -> ServedModel:
    """Load the model at ``uri`` with its signature, and compile its fast path (from the cache
    folder when this version was compiled before)."""
    meta = meta or {}
    # an alias may move while we load: pin the version it pointed to
    uri_pinned = pinned_uri(uri, meta)
    compiled = _compiled_path(meta.get("artifacts"))
    if compiled is not None and compiled.is_file():
        try:
            scorer, extra = FastScorer.load(compiled)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning("compiled model %s unreadable (%s); compiling it again", compiled, err)
        else:
            return _served(uri_pinned, meta, model=None, columns=extra["columns"], scorer=scorer)
    import mlflow

    from reprise.serving import model_trust

    tracking.use_defaults()
    try:
        # the version's own folder when it is on this disk: the files its compiled name digests
        folder = Path(meta.get("artifacts") or mlflow.artifacts.download_artifacts(uri_pinned))
        info = mlflow.models.Model.load(str(folder))
    except Exception as err:
        raise RepriseError(
            f"Model {uri_pinned} cannot be loaded: {err}",
            "check the URI (models:/name/version, models:/name@alias, runs:/id/model).",
        ) from None
    # never mlflow.sklearn.load_model: it trusts the types the model's own MLmodel file lists
    sk_model = model_trust.load_sklearn(folder, uri_pinned)
    # a column's type is a DataType (or a numpy dtype): both have a name; others are text
    columns = {
        spec.name: NUMERIC_TYPES.get(str(getattr(spec.type, "name", "")), "string")
        for spec in signature_inputs(info, uri_pinned).inputs
    }
    classifier = getattr(getattr(sk_model, "estimator", sk_model), "named_steps", {}).get(
        "classifier"
    )
    if classifier is not None and hasattr(classifier, "n_jobs"):
        classifier.n_jobs = 1  # a request or a chunk is small, and the workers are the parallelism
    try:
        scorer = FastScorer.compile(sk_model)
    except NotCompilable as why:
        log.warning("model %s: no fast path (%s); scikit-learn's own path serves it", uri, why)
        return _served(uri_pinned, meta, model=sk_model, columns=columns, scorer=None)
    served = _served(uri_pinned, meta, model=None, columns=columns, scorer=scorer)
    differs = _differs(served, sk_model, info, folder)
    if differs:
        log.warning(
            "model %s: the compiled scorer differs from scikit-learn (%s); scikit-learn's own "
            "path serves it",
            uri,
            differs,
        )
        return _served(uri_pinned, meta, model=sk_model, columns=columns, scorer=None)
    # kept only once checked: a compiled file whose digest matches is one that agreed
    if compiled is not None and scorer.saveable:
        try:
            scorer.save(compiled, {"columns": columns, "uri": uri_pinned})
        except OSError as err:  # a read-only cache: compile again next time
            log.warning("compiled model not kept at %s (%s)", compiled, err)
    return served


def _differs(served: ServedModel, sk_model: Any, info: Any, folder: Path) -> str:
    """Why the compiled scorer of ``served`` may not stand for ``sk_model`` ("" if it may):
    both score the model's input example and seeded synthetic rows, typed as requests are."""
    assert served.scorer is not None
    try:
        example = info.load_input_example(str(folder))
    except Exception as err:  # no example file: the synthetic rows still check the scorer
        log.debug("model %s: input example not read (%s)", served.uri, err)
        example = None
    if not isinstance(example, pd.DataFrame) or not set(served.columns) <= set(example):
        example = None
    rows = served.scorer.synthetic_rows(served.columns, example)
    if example is not None:
        rows = pd.concat([example[list(served.columns)], rows], ignore_index=True)
    return served.scorer.disagreement(sk_model, served.typed(rows))
