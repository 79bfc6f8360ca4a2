"""The model to serve: which one (a release, a registry alias, a run), loaded once, its input
schema from the MLflow signature, and the checks every input row must pass.

A model whose fast path is plain arrays (a decision tree or a small forest) is compiled once per
model version and kept in the cache folder under the digest of the version's files; later loads
of that version read the arrays and import neither MLflow nor scikit-learn.
"""

from __future__ import annotations

import hashlib
import logging
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reprise import manifest, paths, tracking
from reprise.errors import RepriseError
from reprise.serving import fast, registry
from reprise.serving.fast import FastScorer, NotCompilable

log = logging.getLogger(__name__)

DEFAULT_NAME = "adult_income"
PROD_ALIAS = "prod"
# MLflow signature types -> the kind of value a column holds
INT64 = 2**63  # integers are held as int64
# Files of a model version's folder that say nothing of the model: MLflow writes this one at the
# version's first load (its name and number), which would change the folder's digest.
NOT_THE_MODEL = {"registered_model_meta"}
NUMERIC_TYPES = {"long": "integer", "integer": "integer", "double": "number", "float": "number"}


class InputError(ValueError):
    """A row or a request that does not fit the model's input schema; names field and problem."""

    def __init__(self, problem: str, field: str = "", row: int | None = None) -> None:
        self.problem = problem
        self.field = field
        self.row = row
        where = f"row {row}: " if row is not None else ""
        super().__init__(f"{where}{field + ': ' if field else ''}{problem}")


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
        out: dict[str, list[Any]] = {column: [] for column in kinds}
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise InputError("a row must be an object of column: value", row=i)
            if record.keys() != names:
                missing = [c for c in kinds if c not in record]
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
                ):
                    problem = value_problem(value, kind)
                    if problem:
                        raise InputError(problem, column, row=i)
                out[column].append(value)
        return out

    def typed(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's columns in signature order, with the dtypes training gave them."""
        out = {}
        for column, kind in self.columns.items():
            values = frame[column]
            if kind == "string":
                out[column] = values.astype("str").where(values.notna())
            elif kind == "integer":
                out[column] = values.astype("int64")
            else:
                out[column] = values.astype("float64")
        return pd.DataFrame(out)

    def bad_rows(self, frame: pd.DataFrame) -> pd.Series:
        """Per row, the reason it cannot be scored ("" for a good row), checked column-wise."""
        reasons = pd.Series("", index=frame.index, dtype=object)
        for column, kind in self.columns.items():
            values = frame[column]
            if kind == "string":
                bad = values.notna() & ~values.map(lambda v: isinstance(v, str))
                problem = "must be text or null"
            else:
                numbers = pd.to_numeric(values, errors="coerce")
                bad = numbers.isna()
                if kind == "integer":
                    bad |= numbers.notna() & (numbers % 1 != 0)
                problem = f"must be {'an integer' if kind == 'integer' else 'a number'}"
            first = bad & (reasons == "")
            reasons[first] = [
                f"{column}: {'a missing value' if pd.isna(v) else repr(v)} {problem}"
                for v in values[first]
            ]
        return reasons


def value_problem(value: Any, kind: str) -> str:
    """What is wrong with one value for a column of this kind, "" if nothing."""
    if kind == "string":
        return (
            ""
            if value is None or isinstance(value, str)
            else f"must be text or null, got {value!r}"
        )
    name = "an integer" if kind == "integer" else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be {name}, got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if kind == "integer" and not float(value).is_integer():
        return f"must be an integer, got {value!r}"
    if isinstance(value, int) and not -INT64 <= value < INT64:
        shown = str(value) if len(str(value)) <= 24 else f"{str(value)[:24]}..."
        return f"is out of range of a 64-bit integer, got {shown}"
    return ""


def resolve(release: str | None = None, model: str | None = None) -> tuple[str, dict[str, Any]]:
    """The model URI to serve and what identifies it: a release's model version, a given URI
    (models:/name@alias, models:/name/version, runs:/...), or by default name@prod. A registered
    version whose files are on this disk also gets ``artifacts``, their folder."""
    if release:
        record = manifest.load(release)
        entry = record["mlflow"]["model"]
        meta = {
            "name": entry["name"],
            "version": str(entry["version"]),
            "release": release,
            "components": {s: c["sha"] for s, c in record["components"].items()},
        }
        local = registry.local_version(meta["name"], version=meta["version"])
        if local is not None:
            meta["artifacts"] = str(local.artifacts)
        return f"models:/{entry['name']}/{entry['version']}", meta
    uri = model or f"models:/{DEFAULT_NAME}@{PROD_ALIAS}"
    if not uri.startswith("models:/"):
        return uri, {}
    name, _, rest = uri.removeprefix("models:/").partition("@")
    alias = rest or None
    version = None
    if alias is None and "/" in name:
        name, version = name.split("/", 1)
    local = registry.local_version(name, version=version, alias=alias)
    if local is not None:
        meta = {"name": name, "version": local.version, "artifacts": str(local.artifacts)}
        return uri, {**meta, "alias": alias} if alias else meta
    if alias is None:  # models:/name/N names its version; anything else is MLflow's to read
        return uri, {"name": name, "version": version} if version and version.isdigit() else {}
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    tracking.use_defaults()
    try:
        found = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        raise RepriseError(
            f"No model version of '{name}' is aliased '{alias}' in the tracking store.",
            "promote one: make promote VERSION=X.Y.Z (or pass --model / --release).",
        ) from None
    return uri, {"name": name, "version": str(found.version), "alias": alias}


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
    """Whether the model ``resolve`` gave this ``meta`` for was compiled before, and so loads
    from the cache folder in milliseconds."""
    compiled = _compiled_path(meta.get("artifacts"))
    return compiled is not None and compiled.is_file()


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
    uri_pinned = f"models:/{meta['name']}/{meta['version']}" if meta.get("version") else uri
    compiled = _compiled_path(meta.get("artifacts"))
    if compiled is not None and compiled.is_file():
        try:
            scorer, extra = FastScorer.load(compiled)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning("compiled model %s unreadable (%s); compiling it again", compiled, err)
        else:
            return _served(uri_pinned, meta, model=None, columns=extra["columns"], scorer=scorer)
    import mlflow

    tracking.use_defaults()
    try:
        sk_model = mlflow.sklearn.load_model(uri_pinned)
        signature = mlflow.models.get_model_info(uri_pinned).signature
    except Exception as err:
        raise RepriseError(
            f"Model {uri_pinned} cannot be loaded: {err}",
            "check the URI (models:/name/version, models:/name@alias, runs:/id/model).",
        ) from None
    if signature is None or signature.inputs is None:
        raise RepriseError(f"Model {uri_pinned} has no input signature.", "log it with one.")
    columns = {
        spec.name: NUMERIC_TYPES.get(spec.type.name, "string") for spec in signature.inputs.inputs
    }
    classifier = getattr(getattr(sk_model, "estimator", sk_model), "named_steps", {}).get(
        "classifier"
    )
    if hasattr(classifier, "n_jobs"):
        classifier.n_jobs = 1  # a request or a chunk is small, and the workers are the parallelism
    try:
        scorer = FastScorer.compile(sk_model)
    except NotCompilable as why:
        log.warning("model %s: no fast path (%s); scikit-learn's own path serves it", uri, why)
        return _served(uri_pinned, meta, model=sk_model, columns=columns, scorer=None)
    if compiled is not None and scorer.saveable:
        try:
            scorer.save(compiled, {"columns": columns, "uri": uri_pinned})
        except OSError as err:  # a read-only cache: compile again next time
            log.warning("compiled model not kept at %s (%s)", compiled, err)
    return _served(uri_pinned, meta, model=None, columns=columns, scorer=scorer)
