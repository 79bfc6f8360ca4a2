"""The fast path of the inference pipeline.

The fitted ColumnTransformer (imputation + one-hot for categoricals; numbers as they are, or
imputed, with or without a 0/1 column saying a number was missing, and scaled) is compiled to
array lookups: each categorical value becomes its position among the encoder's categories, each
number its (imputed, scaled) value, each missing-indicator column 1.0 where its number is
missing (then scaled too). Decision trees and random forests are then compiled too, onto those
codes and numbers: a split on a one-hot column tests "code == category", a split on a number (or
an indicator) tests the float32 value against the threshold, exactly as scikit-learn's trees do.
Such a model is plain numpy arrays: saved to an .npz file and loaded back with neither
scikit-learn nor MLflow imported (seconds of start-up saved on every batch command). Any other
estimator (gradient boosting, a linear model) keeps its own predict_proba, fed the float64
one-hot matrix ColumnTransformer would give. Either way the probabilities are scikit-learn's.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import pyarrow as pa

# Below this many rows a dict lookup per value (and a walk per row down a tree) beats the
# vectorised numpy path, whose cost is per call.
SMALL_BATCH = 64
# Trees are walked node by node (one numpy call per node): above this many nodes in all,
# scikit-learn's compiled predict_proba is the faster way.
MAX_COMPILED_NODES = 50_000
# Of the saved file; a file of another format is not read (it is compiled again). 2: numbers
# carry the imputer's fill value and missing-indicator inputs.
FORMAT = 2
# A saved scorer's sha256 is kept in a file of its own beside it, written after it: a scorer whose
# digest file is missing, unreadable or different is not read (so it is compiled again).
DIGEST_SUFFIX = ".sha256"
# A compiled scorer serves only if it gives scikit-learn's probabilities on the model's input
# example and on this many seeded synthetic rows; beyond this difference it is not used.
CHECK_ROWS = 256
CHECK_SEED = 0
CHECK_TOLERANCE = 1e-9
MISSING_SHARE = 0.1  # of the synthetic values of a column the model imputes
UNSEEN = "<a category the model never saw>"


class NotCompilable(Exception):
    """The pipeline holds a step the fast path does not know; scikit-learn's own path is used."""


@dataclass(frozen=True)
class _Categorical:
    column: str
    offset: int  # first output column of this feature's one-hot block
    categories: pd.Index  # the encoder's categories, in output order
    lookup: dict[Any, int]  # category -> position in the block
    fill: Any  # what a missing value becomes (the imputer's fill value), None without imputer

    @property
    def fill_code(self) -> int:
        return self.lookup.get(self.fill, -1) if self.fill is not None else -1

    def codes(self, values: Any, n: int) -> np.ndarray:
        """Position of each value among the categories; -1 for an unknown one (all-zero block)."""
        if n <= SMALL_BATCH:
            fill_code = self.fill_code
            return np.array(
                [fill_code if is_missing(v) else self.lookup.get(v, -1) for v in values],
                dtype=np.int64,
            )
        series = pd.Series(values, copy=False)
        if self.fill is not None:
            series = series.where(series.notna(), self.fill)
        return np.asarray(self.categories.get_indexer(series), dtype=np.int64)

    def codes_arrow(self, values: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """As ``codes``, from an Arrow column of text (plain or dictionary-encoded)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if not pa.types.is_dictionary(values.type):
            values = pc.dictionary_encode(values)
        # each distinct value of the column looked up once; a missing one is the last entry
        found = [self.lookup.get(v, -1) for v in values.dictionary.to_pylist()]
        table = np.array([*found, self.fill_code], dtype=np.int64)
        indices = np.asarray(values.indices.fill_null(len(found)).to_numpy(zero_copy_only=False))
        return np.take(table, indices)


@dataclass(frozen=True)
class _Numeric:
    column: str
    position: int  # output column
    mean: float | None  # StandardScaler's mean_, None when passed through
    scale: float | None
    fill: float | None = None  # the imputer's statistic for a missing number; None without one
    indicator: bool = False  # this output is SimpleImputer's missing indicator of the column

    def values(self, raw: Any) -> np.ndarray:
        """The output column of these raw numbers (None or NaN where missing)."""
        values = np.asarray(raw, dtype=np.float64)
        if self.indicator:
            values = np.isnan(values).astype(np.float64)
        elif self.fill is not None:
            values = np.where(np.isnan(values), self.fill, values)
        if self.mean is not None:
            values = values - self.mean
        if self.scale is not None:
            values = values / self.scale
        return values


def _passes_through(step: Any) -> bool:
    """'passthrough', which a fitted ColumnTransformer holds as an identity FunctionTransformer."""
    from sklearn.preprocessing import FunctionTransformer

    return step == "passthrough" or (
        isinstance(step, FunctionTransformer) and step.func is None and step.kw_args is None
    )


def is_missing(value: Any) -> bool:
    """Whether one value is missing: None or a float NaN."""
    return value is None or (isinstance(value, float) and value != value)


# _Trees' left, right, feature, category, threshold and value arrays as Python lists, for the
# node-by-node walk of a few rows (a list index is faster there than a numpy one)
_TreeLists = tuple[list[int], list[int], list[int], list[int], list[float], list[float]]


@dataclass
class _Trees:
    """Decision trees over the raw inputs, all nodes of all trees in one set of arrays.

    Input ``k`` is the k-th numeric input (a number, or a missing indicator) for k < n_numeric,
    else the codes of categorical column k - n_numeric. A node goes left when ``x <= threshold``, where x is the float32
    value of a number, or 1.0/0.0 for "the code is this node's category" (its one-hot column).
    The probability of the positive class is the mean over trees of their leaves' fractions.
    """

    roots: np.ndarray  # int64, first node of each tree
    left: np.ndarray  # int64, -1 at a leaf
    right: np.ndarray
    feature: np.ndarray  # int64 input index (see above); -1 at a leaf
    category: np.ndarray  # int64 code tested by a categorical node, -1 otherwise
    threshold: np.ndarray  # float64
    value: np.ndarray  # float64, the positive class's fraction at each node (used at leaves)
    n_numeric: int

    ARRAYS = ("roots", "left", "right", "feature", "category", "threshold", "value")

    def __post_init__(self) -> None:
        self._lists: _TreeLists | None = None

    def predict(self, inputs: list[np.ndarray], n: int) -> np.ndarray:
        """Mean leaf value over the trees for each of ``n`` rows."""
        if n <= SMALL_BATCH:
            columns = [x.tolist() for x in inputs]
            return np.array([self._predict_row([x[i] for x in columns]) for i in range(n)])
        out = np.zeros(n, dtype=np.float64)
        left, right, feature = self.left, self.right, self.feature
        category, threshold, value = self.category, self.threshold, self.value
        n_numeric = self.n_numeric
        for root in self.roots.tolist():
            stack = [(root, np.arange(n))]
            while stack:
                node, rows = stack.pop()
                k = feature[node]
                if k < 0:
                    out[rows] += value[node]
                    continue
                x = inputs[k][rows]
                if k >= n_numeric:
                    x = x == category[node]
                go_left = x <= threshold[node]
                stack.append((right[node], rows[~go_left]))
                stack.append((left[node], rows[go_left]))
        out /= len(self.roots)
        return out

    def _predict_row(self, row: list[Any]) -> float:
        """One row, walked in Python: the same tests as ``predict``, without numpy's per-call
        overhead."""
        if self._lists is None:
            self._lists = (
                self.left.tolist(),
                self.right.tolist(),
                self.feature.tolist(),
                self.category.tolist(),
                self.threshold.tolist(),
                self.value.tolist(),
            )
        left, right, feature, category, threshold, value = self._lists
        n_numeric = self.n_numeric
        total = 0.0
        for node in self.roots.tolist():
            k = feature[node]
            while k >= 0:
                x = row[k]
                if k >= n_numeric:
                    x = 1.0 if x == category[node] else 0.0
                node = left[node] if x <= threshold[node] else right[node]
                k = feature[node]
            total += value[node]
        return total / len(self.roots)


def _compile_trees(
    classifier: Any, inputs_of: list[tuple[int, int]], n_numeric: int
) -> _Trees | None:
    """The fitted tree or forest as a _Trees, or None for another estimator (or a forest too big
    to walk node by node). ``inputs_of[f]`` is (input index, category code or -1) of one-hot
    column f; the first ``n_numeric`` inputs are numbers."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    if isinstance(classifier, DecisionTreeClassifier):
        trees = [classifier]
    elif isinstance(classifier, RandomForestClassifier | ExtraTreesClassifier):
        trees = list(classifier.estimators_)
    else:
        return None
    if classifier.n_outputs_ != 1 or sum(t.tree_.node_count for t in trees) > MAX_COMPILED_NODES:
        return None
    positive = list(classifier.classes_).index(1)
    n_classes = len(classifier.classes_)
    roots: list[int] = []
    parts: dict[str, list[np.ndarray]] = {name: [] for name in _Trees.ARRAYS if name != "roots"}
    offset = 0
    for tree in trees:
        t = tree.tree_
        leaf = t.children_left < 0
        # DecisionTreeClassifier.predict_proba: the leaf's values, each row divided by its sum
        fractions = t.value[:, 0, :n_classes].copy()
        normalizer = fractions.sum(axis=1)[:, np.newaxis]
        normalizer[normalizer == 0.0] = 1.0
        fractions /= normalizer
        mapped = np.array([inputs_of[f] if f >= 0 else (-1, -1) for f in t.feature], dtype=np.int64)
        roots.append(offset)
        parts["left"].append(np.where(leaf, -1, t.children_left + offset))
        parts["right"].append(np.where(leaf, -1, t.children_right + offset))
        parts["feature"].append(np.where(leaf, -1, mapped[:, 0]))
        parts["category"].append(np.where(leaf, -1, mapped[:, 1]))
        parts["threshold"].append(t.threshold.astype(np.float64))
        parts["value"].append(fractions[:, positive])
        offset += t.node_count
    arrays = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    for name in ("left", "right", "feature", "category"):
        arrays[name] = arrays[name].astype(np.int64)
    return _Trees(roots=np.array(roots, dtype=np.int64), n_numeric=n_numeric, **arrays)


class FastScorer:
    """Scores rows given as a DataFrame, a mapping of column -> values, or an Arrow table."""

    def __init__(
        self,
        threshold: float,
        numeric: list[_Numeric],
        categorical: list[_Categorical],
        width: int,
        trees: _Trees | None = None,
        classifier: Any = None,
        at_threshold: bool = True,
    ) -> None:
        if (trees is None) == (classifier is None):
            raise ValueError("give compiled trees or a fitted classifier, one of the two")
        self.threshold = threshold
        # FixedThresholdClassifier says positive at proba >= threshold; a bare classifier's
        # predict takes the likelier class, the negative one on a tie: proba > 0.5
        self.at_threshold = at_threshold
        self.numeric = numeric
        self.categorical = categorical
        self.width = width
        self.trees = trees
        self.classifier = classifier
        if classifier is not None:
            self.positive_index = list(classifier.classes_).index(1)

    # --- compiling ----------------------------------------------------------------------------
    @classmethod
    def compile(cls, model: Any) -> FastScorer:
        """The fast path of a fitted [FixedThresholdClassifier of a] preprocess + classifier
        Pipeline; NotCompilable when it holds a step this module does not know."""
        from sklearn.model_selection import FixedThresholdClassifier
        from sklearn.pipeline import Pipeline

        at_threshold = isinstance(model, FixedThresholdClassifier)
        if at_threshold:
            threshold = float(model.threshold)
            pipeline = model.estimator
        else:
            threshold = 0.5
            pipeline = model
        if not isinstance(pipeline, Pipeline) or "preprocess" not in pipeline.named_steps:
            raise NotCompilable("not a preprocess + classifier pipeline")
        classifier = pipeline.named_steps["classifier"]
        numeric: list[_Numeric] = []
        categorical: list[_Categorical] = []
        position = 0
        for name, step, columns in pipeline.named_steps["preprocess"].transformers_:
            if name == "remainder":
                if step != "drop":
                    raise NotCompilable("a remainder that is not dropped")
                continue
            if len(columns) == 0:  # ColumnTransformer leaves such a branch unfitted and empty
                continue
            if not _is_categorical(step):
                specs = _numeric_specs(step, list(columns), position)
                numeric += specs
                position += len(specs)
                continue
            imputer, encoder = _categorical_steps(step)
            for i, column in enumerate(columns):
                categories = pd.Index(encoder.categories_[i])
                lookup = {value: j for j, value in enumerate(categories)}
                fill = imputer.statistics_[i] if imputer is not None else None
                categorical.append(_Categorical(column, position, categories, lookup, fill))
                position += len(categories)
        inputs_of: list[tuple[int, int]] = [(-1, -1)] * position
        for k, number in enumerate(numeric):
            inputs_of[number.position] = (k, -1)
        for k, category in enumerate(categorical):
            for j in range(len(category.categories)):
                inputs_of[category.offset + j] = (len(numeric) + k, j)
        trees = _compile_trees(classifier, inputs_of, len(numeric))
        if trees is not None:
            return cls(threshold, numeric, categorical, position, trees, None, at_threshold)
        return cls(threshold, numeric, categorical, position, None, classifier, at_threshold)

    # --- saving ------------------------------------------------------------------------------------
    @property
    def saveable(self) -> bool:
        """Plain arrays only: compiled trees, text categories."""
        return self.trees is not None and all(
            all(isinstance(v, str) for v in spec.categories)
            and (spec.fill is None or isinstance(spec.fill, str))
            for spec in self.categorical
        )

    def save(self, path: Path, extra: dict[str, Any]) -> None:
        """Write the scorer (and ``extra``, JSON) to ``path`` (.npz), atomically."""
        if not self.saveable:
            raise NotCompilable("only compiled trees over text categories are saved")
        assert self.trees is not None
        header = {
            "format": FORMAT,
            "threshold": self.threshold,
            "at_threshold": self.at_threshold,
            "width": self.width,
            "numeric": [
                [s.column, s.position, s.mean, s.scale, s.fill, s.indicator] for s in self.numeric
            ],
            "categorical": [[s.column, s.offset, s.fill] for s in self.categorical],
            "extra": extra,
        }
        arrays = {f"tree_{name}": getattr(self.trees, name) for name in _Trees.ARRAYS}
        for k, spec in enumerate(self.categorical):
            arrays[f"categories_{k}"] = np.array(list(spec.categories), dtype=np.str_)
        buffer = io.BytesIO()
        np.savez(buffer, header=np.array(json.dumps(header)), **arrays)
        data = buffer.getvalue()
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, data)
        # after the scorer: a kill between the two leaves a scorer without digest, never read
        _write_atomically(digest_path(path), f"{hashlib.sha256(data).hexdigest()}\n".encode())

    @classmethod
    def load(cls, path: Path) -> tuple[FastScorer, dict[str, Any]]:
        """The scorer saved at ``path`` and its ``extra``; ValueError if it is not one, or if
        its bytes differ from the digest kept beside it."""
        data = path.read_bytes()  # read once: the bytes checked are the bytes used
        kept = digest_path(path)
        try:
            expected = kept.read_text().strip()
        except (OSError, UnicodeDecodeError):
            raise ValueError(f"no readable digest {kept.name} kept beside it") from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise ValueError(
                f"its sha256 differs from the digest kept in {kept.name}: edited or damaged"
            )
        with np.load(io.BytesIO(data), allow_pickle=False) as saved:
            header = json.loads(str(saved["header"]))
            if header.get("format") != FORMAT:
                raise ValueError(f"{path}: format {header.get('format')}, not {FORMAT}")
            numeric = [_Numeric(*spec) for spec in header["numeric"]]
            categorical = []
            for k, (column, offset, fill) in enumerate(header["categorical"]):
                categories = pd.Index(saved[f"categories_{k}"].tolist(), dtype=object)
                lookup = {value: j for j, value in enumerate(categories)}
                categorical.append(_Categorical(column, offset, categories, lookup, fill))
            trees = _Trees(
                n_numeric=len(numeric),
                **{name: saved[f"tree_{name}"] for name in _Trees.ARRAYS},
            )
        scorer = cls(
            header["threshold"],
            numeric,
            categorical,
            header["width"],
            trees=trees,
            at_threshold=header["at_threshold"],
        )
        return scorer, header["extra"]

    # --- scoring -----------------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """The input columns the model reads."""
        return list(
            dict.fromkeys(
                [*(s.column for s in self.numeric), *(s.column for s in self.categorical)]
            )
        )

    @property
    def imputed(self) -> frozenset[str]:
        """The numeric columns whose missing values the model fills (so may be scored)."""
        return frozenset(s.column for s in self.numeric if s.fill is not None)

    def _inputs(self, rows: pd.DataFrame | Mapping[str, Sequence[Any]]) -> list[np.ndarray]:
        """Numbers (scaled) then category codes, one array per column."""
        first = self.numeric[0].column if self.numeric else self.categorical[0].column
        n = len(rows[first])
        numbers = [spec.values(rows[spec.column]) for spec in self.numeric]
        return numbers + [spec.codes(rows[spec.column], n) for spec in self.categorical]

    def _inputs_arrow(self, table: pa.Table) -> list[np.ndarray]:
        """As ``_inputs``, from an Arrow table (a null number is NaN, filled as the imputer
        fills it)."""
        numbers = [spec.values(table.column(spec.column).to_numpy()) for spec in self.numeric]
        return numbers + [spec.codes_arrow(table.column(spec.column)) for spec in self.categorical]

    def transform(self, rows: pd.DataFrame | Mapping[str, Sequence[Any]]) -> np.ndarray:
        """The float64 matrix scikit-learn's ColumnTransformer would give for these rows."""
        return self._matrix(self._inputs(rows))

    def _matrix(self, inputs: list[np.ndarray]) -> np.ndarray:
        n = len(inputs[0])
        matrix = np.zeros((n, self.width), dtype=np.float64)
        for number, values in zip(self.numeric, inputs, strict=False):
            matrix[:, number.position] = values
        for category, codes in zip(self.categorical, inputs[len(self.numeric) :], strict=True):
            hit = codes >= 0
            matrix[np.flatnonzero(hit), category.offset + codes[hit]] = 1.0
        return matrix

    def _proba(self, inputs: list[np.ndarray]) -> np.ndarray:
        n = len(inputs[0])
        if self.trees is not None:
            # scikit-learn's trees read float32: each number rounded as they round it
            rounded = [v.astype(np.float32).astype(np.float64) for v in inputs[: len(self.numeric)]]
            return self.trees.predict(rounded + inputs[len(self.numeric) :], n)
        return np.asarray(
            self.classifier.predict_proba(self._matrix(inputs))[:, self.positive_index]
        )

    def predict_proba(self, rows: pd.DataFrame | Mapping[str, Sequence[Any]]) -> np.ndarray:
        """Probability of the positive class for each row."""
        return self._proba(self._inputs(rows))

    def predict_proba_arrow(self, table: pa.Table) -> np.ndarray:
        """As ``predict_proba``, from an Arrow table (text plain or dictionary-encoded)."""
        return self._proba(self._inputs_arrow(table))

    def predict(self, proba: np.ndarray) -> np.ndarray:
        """Labels at the model's threshold, by the model's own rule."""
        positive = proba >= self.threshold if self.at_threshold else proba > self.threshold
        return positive.astype(np.int64)

    # --- checking against scikit-learn -----------------------------------------------------------
    def synthetic_rows(
        self,
        kinds: Mapping[str, str],
        example: pd.DataFrame | None = None,
        n: int = CHECK_ROWS,
        seed: int = CHECK_SEED,
    ) -> pd.DataFrame:
        """``n`` seeded rows of the columns ``kinds`` names ("integer" | "number" | "string"),
        numbers as int64 or float64 and text as objects (None where missing):
        each category the scorer knows, missing and unseen ones; numbers at, next to and between
        the thresholds its trees split at (else around its scaler's mean, or the example's), and
        missing (NaN, so float64) in a column the model imputes."""
        rng = np.random.default_rng(seed)
        numeric = {spec.column: k for k, spec in enumerate(self.numeric) if not spec.indicator}
        imputed = self.imputed
        categorical = {spec.column: spec for spec in self.categorical}
        out: dict[str, Any] = {}
        for column, kind in kinds.items():
            if column in categorical:
                known = list(categorical[column].categories)
                choices = np.array([*known, None, UNSEEN], dtype=object)
                weights = np.array([0.85 / len(known)] * len(known) + [0.1, 0.05])
                out[column] = rng.choice(choices, size=n, p=weights / weights.sum())
            elif column in numeric:
                anchors = self._anchors(numeric[column], example, column)
                out[column] = _around(anchors, kind, n, rng)
                if column in imputed:
                    out[column] = np.where(rng.random(n) < MISSING_SHARE, np.nan, out[column])
            elif example is not None and column in example and len(example):
                out[column] = rng.choice(example[column].to_numpy(dtype=object), size=n)
            else:
                out[column] = np.full(n, "" if kind == "string" else 0, dtype=object)
        dtypes = {"integer": np.int64, "number": np.float64}
        return pd.DataFrame(
            {
                c: np.asarray(v, dtype=np.float64 if c in imputed else dtypes.get(kinds[c], object))
                for c, v in out.items()
            }
        )

    def _anchors(self, k: int, example: pd.DataFrame | None, column: str) -> np.ndarray:
        """The values of numeric input ``k`` where the model's answer may change, in raw units."""
        spec = self.numeric[k]
        if self.trees is not None:
            found = self.trees.threshold[self.trees.feature == k]
            if spec.scale is not None:
                found = found * spec.scale
            if spec.mean is not None:
                found = found + spec.mean
        elif spec.mean is not None and spec.scale is not None:
            found = spec.mean + spec.scale * np.array([-3.0, -1.0, 0.0, 1.0, 3.0])
        else:
            found = np.array([])
        if example is not None and column in example:
            found = np.concatenate([found, pd.to_numeric(example[column]).to_numpy(np.float64)])
        found = found[np.isfinite(found)]
        return found if len(found) else np.array([0.0])

    def disagreement(self, model: Any, rows: pd.DataFrame) -> str:
        """Where this scorer and scikit-learn's fitted ``model`` differ on ``rows``, read whole,
        a few at a time and as Arrow; "" when they agree."""
        import pyarrow as pa

        expected = model.predict_proba(rows)[:, list(model.classes_).index(1)]
        labels = np.asarray(model.predict(rows), dtype=np.int64)
        few = rows.iloc[:SMALL_BATCH]
        try:
            whole = self.predict_proba(rows)
            ways = [
                ("whole", whole, expected),
                ("a few rows", self.predict_proba({c: few[c].tolist() for c in few}), expected),
                ("as Arrow", self.predict_proba_arrow(pa.Table.from_pandas(rows)), expected),
                ("as labels", self.predict(whole), labels),
            ]
        except Exception as err:  # a scorer that cannot score what scikit-learn scores
            return f"it fails on rows scikit-learn scores: {err!r}"
        for way, got, wanted in ways:
            wanted = wanted[: len(got)]
            wrong = np.flatnonzero(~(np.abs(got - wanted) <= CHECK_TOLERANCE))
            if len(wrong):
                i = int(wrong[0])
                return (
                    f"row {i} of {len(rows)} checked, {way}: {got[i]:.6g} where scikit-learn "
                    f"gives {wanted[i]:.6g} ({len(wrong)} rows differ)"
                )
        return ""


def _around(anchors: np.ndarray, kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` numbers: a third exactly at an anchor, a third just beside one (the next float, or
    the next integer), a third anywhere over the anchors' range and a little beyond."""
    integer = kind == "integer"
    low, high = float(anchors.min()), float(anchors.max())
    margin = 0.1 * (high - low) + 1.0
    picked = rng.choice(anchors, size=n)
    step = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    beside = picked + step if integer else np.nextafter(picked, picked + step)
    spread = rng.uniform(low - margin, high + margin, size=n)
    which = rng.integers(0, 3, size=n)
    values = np.where(which == 0, picked, np.where(which == 1, beside, spread))
    if integer:
        # a threshold of an integer column lies between two integers: each side is drawn
        values = np.clip(
            np.where(rng.random(n) < 0.5, np.floor(values), np.ceil(values)), -(2**62), 2**62
        )
    return values


def digest_path(path: Path) -> Path:
    """The file beside a saved scorer that keeps its sha256."""
    return path.with_name(path.name + DIGEST_SUFFIX)


def _write_atomically(path: Path, data: bytes) -> None:
    """``data`` at ``path`` whole or not at all: written beside it, then renamed over it."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _categorical_steps(step: Any) -> tuple[Any, Any]:
    """(SimpleImputer or None, OneHotEncoder) of a categorical branch the fast path knows."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    steps = list(step.named_steps.values()) if isinstance(step, Pipeline) else [step]
    imputer = steps[0] if isinstance(steps[0], SimpleImputer) else None
    encoder = steps[-1]
    known = len(steps) == (2 if imputer is not None else 1)
    if not (known and isinstance(encoder, OneHotEncoder)):
        raise NotCompilable(f"categorical step {step!r}")
    if imputer is not None and imputer.strategy != "constant":
        raise NotCompilable("an imputer that is not constant")
    if encoder.handle_unknown != "ignore" or encoder.drop is not None:
        raise NotCompilable("a one-hot encoder that does not ignore unknowns or drops one")
    return imputer, encoder


def _is_categorical(step: Any) -> bool:
    """Whether a ColumnTransformer branch ends in a one-hot encoder (the categorical branch)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    last = step.steps[-1][1] if isinstance(step, Pipeline) and step.steps else step
    return isinstance(last, OneHotEncoder)


def _numeric_steps(step: Any) -> tuple[Any, Any]:
    """(SimpleImputer or None, StandardScaler or None) of a numeric branch the fast path knows:
    'passthrough', a scaler, an imputer, or a Pipeline of an imputer then a scaler."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if _passes_through(step):
        return None, None
    steps = [s for _, s in step.steps] if isinstance(step, Pipeline) else [step]
    steps = [s for s in steps if not (s is None or _passes_through(s))]
    imputer = steps.pop(0) if steps and isinstance(steps[0], SimpleImputer) else None
    scaler = steps.pop(0) if steps and isinstance(steps[0], StandardScaler) else None
    if steps:
        raise NotCompilable(f"numeric step {step!r}")
    if imputer is not None:
        statistics = np.asarray(imputer.statistics_, dtype=np.float64)
        # a NaN statistic drops its column (keep_empty_features off): positions would shift
        if not is_missing(imputer.missing_values) or not np.isfinite(statistics).all():
            raise NotCompilable("an imputer of numbers that is not NaN -> a finite statistic")
    return imputer, scaler


def _numeric_specs(step: Any, columns: list[str], position: int) -> list[_Numeric]:
    """The outputs of a numeric branch from ``position`` on: its columns (imputed), then the
    imputer's indicator columns, each scaled when a scaler follows, as scikit-learn orders them."""
    imputer, scaler = _numeric_steps(step)
    outputs = [(i, False) for i in range(len(columns))]
    if imputer is not None and imputer.add_indicator:
        outputs += [(int(i), True) for i in imputer.indicator_.features_]
    if scaler is not None and scaler.n_features_in_ != len(outputs):
        raise NotCompilable("a scaler of another width than the numbers it follows")
    specs = []
    for j, (i, indicator) in enumerate(outputs):
        mean = None if scaler is None or scaler.mean_ is None else float(scaler.mean_[j])
        scale = None if scaler is None or scaler.scale_ is None else float(scaler.scale_[j])
        fill = None if imputer is None or indicator else float(imputer.statistics_[i])
        specs.append(_Numeric(columns[i], position + j, mean, scale, fill, indicator))
    return specs


def imputed_columns(model: Any) -> frozenset[str]:
    """The numeric columns whose missing values a fitted [FixedThresholdClassifier of a]
    preprocess + classifier pipeline fills first thing (a SimpleImputer of NaN, whatever
    follows it); none for a pipeline of another shape."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    pipeline = getattr(model, "estimator", model)
    preprocess = getattr(pipeline, "named_steps", {}).get("preprocess")
    found: set[str] = set()
    for _, step, columns in getattr(preprocess, "transformers_", []):
        if len(columns) == 0 or isinstance(step, str) or _is_categorical(step):
            continue
        first = step.steps[0][1] if isinstance(step, Pipeline) and step.steps else step
        if isinstance(first, SimpleImputer) and is_missing(first.missing_values):
            found.update(columns)
    return frozenset(found)
