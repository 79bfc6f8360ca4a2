"""The model to serve: which one (a release, a registry alias, a run), loaded once, its input
schema from the MLflow signature, and the checks every input row must pass.

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
import math
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from reprise import manifest, paths, tracking
from reprise.errors import RepriseError
from reprise.serving import fast, registry
from reprise.serving.fast import FastScorer, NotCompilable

log = logging.getLogger(__name__)

PROD_ALIAS = "prod"
# MLflow signature types -> the kind of value a column holds
INT64 = 2**63  # integers are held as int64
# Below this a float holds every integer exactly; above it, 9007199254740993 arrives as ...992
# and 9.3e18 may stand for any of 1024 integers, so an integer column refuses such floats.
FLOAT_EXACT = 2**53
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
                f"{column}: {_file_value_problem(v, n, kind)}"
                for v, n in zip(values[first], numbers[first], strict=True)
            ]
        return reasons


def unfit_numbers(numbers: Any, kind: str) -> np.ndarray:
    """Per value of an array of numbers, whether a column of ``kind`` ("integer" or "number")
    refuses it: missing, not finite, or for an integer column not a whole number that an int64
    holds exactly (a float only below 2**53). The one rule of requests, rows and files."""
    values = np.asarray(numbers)
    if values.dtype.kind == "b":
        return np.ones(values.shape, dtype=bool)
    if values.dtype.kind == "i":
        return np.zeros(values.shape, dtype=bool)
    if values.dtype.kind == "u":
        return values >= np.uint64(INT64)
    if values.dtype.kind != "f":  # objects (Decimal, None, text): as numbers, or missing
        values = pd.to_numeric(pd.Series(values.ravel()), errors="coerce").to_numpy(np.float64)
    with np.errstate(invalid="ignore"):  # inf % 1 is NaN, as it should be here
        return ~_fit_floats(values, kind)


def refused_numbers(values: Any, numbers: Any, kind: str, imputes: bool) -> np.ndarray:
    """Per value of a number column, whether the row checks refuse it: ``unfit_numbers`` of
    ``numbers`` (its parse), except a missing value (None, NaN) where the model ``imputes``
    the column (text that parses to no number stays refused)."""
    refused = unfit_numbers(numbers, kind)
    if imputes:
        refused &= ~np.asarray(pd.isna(values), dtype=bool)
    return refused


def _fit_floats(values: Any, kind: str) -> Any:
    """Whether floats fit a column of ``kind``, written once for one float and for an array:
    finite, and for an integer column whole and below 2**53 in size."""
    fit = abs(values) < math.inf  # false for NaN too
    if kind == "integer":
        fit = fit & (values % 1 == 0) & (abs(values) < FLOAT_EXACT)
    return fit


def _number_problem(value: Any, kind: str) -> str:
    """What is wrong with one value for a number column, "" if nothing (no "got ...")."""
    name = "an integer" if kind == "integer" else "a number"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be {name}"
    if isinstance(value, int):  # exact, whatever its size: only the range counts
        return "" if -INT64 <= value < INT64 else "is out of range of a 64-bit integer"
    if _fit_floats(value, kind):
        return ""
    if not math.isfinite(value):
        return "must be a finite number"
    if not value.is_integer():
        return "must be an integer"
    # beyond 2**53 floats skip integers: the value sent may not be the one meant
    return "is not an integer a 64-bit integer holds exactly (as a float, within ±2**53)"


def _file_value_problem(value: Any, number: Any, kind: str) -> str:
    """What is wrong with a value of a file's row (``number`` its parse), with the value as the
    file holds it."""
    if kind == "string":
        return f"must be text or null, got {value!r}"
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return f"must be {'an integer' if kind == 'integer' else 'a number'}, got a missing value"
    problem = _number_problem(value if pd.isna(number) else number, kind)
    return f"{problem or 'must be a number'}, got {_shown(value)}"


def _shown(value: Any) -> str:
    """A value as an error shows it: its repr, cut after 24 characters."""
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:24]}..."


def value_problem(value: Any, kind: str) -> str:
    """What is wrong with one value for a column of this kind, "" if nothing."""
    if kind == "string":
        return (
            ""
            if value is None or isinstance(value, str)
            else f"must be text or null, got {value!r}"
        )
    problem = _number_problem(value, kind)
    return f"{problem}, got {_shown(value)}" if problem else ""


def default_uri() -> str:
    """``models:/NAME@prod`` for the project's registered model (main.registered_model_name of
    project/config/config.yaml)."""
    config = paths.PROJECT_DIR / "config" / "config.yaml"
    try:
        name = (
            (yaml.safe_load(config.read_text()) or {}).get("main", {}).get("registered_model_name")
        )
    except (OSError, yaml.YAMLError) as err:
        raise RepriseError(f"Cannot read {config} ({err}).", "restore it from git.") from None
    if not name:
        raise RepriseError(
            f"No model to serve by default: main.registered_model_name is empty in {config}.",
            "name a model: --model models:/NAME@prod, or --release X.Y.Z.",
        )
    return f"models:/{name}@{PROD_ALIAS}"


def resolve(release: str | None = None, model: str | None = None) -> tuple[str, dict[str, Any]]:
    """The model URI to serve and what identifies it: a release's model version, a given URI
    (models:/name@alias, models:/name/version, runs:/...), or by default name@prod. A registered
    version whose files are on this disk also gets ``artifacts``, their folder."""
    if release:
        from mlflow.tracking import MlflowClient

        record = manifest.load(release)
        entry = record["mlflow"]["model"]
        # the version of this store that is the release's model: in another store the
        # manifest's number may be another model
        tracking.use_defaults()
        entry = {**entry, "version": manifest.registered_version(MlflowClient(), record)}
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
    uri = model or default_uri()
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
    signature = info.signature
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
