"""Trust in model files that can be changed (issue 10, item 8), without MLflow: a compiled scorer
is read only when its bytes match the digest kept beside it; a freshly compiled scorer is compared
with scikit-learn on seeded synthetic rows; a logged model's skops file is read trusting only the
components' own list of types, never the list its MLmodel file carries."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from step_kit import persist

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import test_fast
import yaml
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from test_fast import fitted

from reprise.errors import RepriseError
from reprise.serving import model_trust
from reprise.serving.fast import UNSEEN, FastScorer, digest_path
from reprise.serving.model import ServedModel

# test_fast's fixtures: the bundled data, cleaned, split into train rows and held-out features
schema = test_fast.schema
halves = test_fast.halves
OPTIONS = ["decision_tree", "random_forest", "hist_gradient_boosting", "logistic_regression"]


@pytest.fixture(scope="module")
def kinds(halves) -> dict[str, str]:
    """Input column -> kind, as a logged model's signature gives them (from the data's dtypes)."""
    return {
        column: "integer" if dtype.kind == "i" else "number" if dtype.kind == "f" else "string"
        for column, dtype in halves[1].dtypes.items()
    }


@pytest.fixture(scope="module")
def tree(schema, halves) -> Any:
    return fitted(schema, halves[0], "decision_tree")


def _checked_rows(scorer: FastScorer, kinds: dict[str, str], held_out: pd.DataFrame):
    """Rows as the serving side compares them: a real example, then the synthetic rows, typed."""
    rows = pd.concat([held_out.head(5), scorer.synthetic_rows(kinds, held_out.head(5))])
    served = ServedModel(uri="test", model=None, columns=kinds, scorer=scorer)
    return served.typed(rows.reset_index(drop=True))


# --- the digest kept apart from a compiled file ----------------------------------------------
def _rewrite(path: Path, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    """The compiled file with its arrays changed as ``change`` says, rewritten as a valid .npz;
    the digest file is left as it was, as someone editing the scorer would leave it."""
    with np.load(path, allow_pickle=False) as saved:
        arrays = {name: saved[name].copy() for name in saved.files}
    change(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def _header(arrays: dict[str, np.ndarray], key: str, value: Any) -> None:
    header = json.loads(str(arrays["header"]))
    header[key] = value
    arrays["header"] = np.array(json.dumps(header))


def _set(name: str, value: Any, where: Any = slice(None)) -> Callable[[dict], None]:
    def change(arrays: dict[str, np.ndarray]) -> None:
        arrays[name][where] = value

    return change


EDITS = {
    "every_leaf_scores_1": _set("tree_value", 1.0),  # the issue's case: every row scored 1
    "one_leaf_value": _set("tree_value", 0.5, -1),
    "one_split_threshold": _set("tree_threshold", -1.0, 0),
    "one_child_link": _set("tree_left", 0, 0),
    "a_category_renamed": _set("categories_0", "renamed", 0),
    "the_decision_threshold": lambda arrays: _header(arrays, "threshold", 0.0),
    "the_column_kinds": lambda arrays: _header(arrays, "extra", {"columns": {}}),
}


def test_a_saved_scorer_keeps_its_sha256_beside_it(tree, tmp_path: Path) -> None:
    path = tmp_path / "scorer.npz"
    FastScorer.compile(tree).save(path, {"columns": {}})
    assert digest_path(path) == tmp_path / "scorer.npz.sha256"
    assert digest_path(path).read_text() == hashlib.sha256(path.read_bytes()).hexdigest() + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scorer.npz", "scorer.npz.sha256"]


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_an_edited_compiled_file_is_not_read(tree, halves, tmp_path: Path, edit: str) -> None:
    path = tmp_path / "scorer.npz"
    FastScorer.compile(tree).save(path, {"columns": {"age": "integer"}})
    FastScorer.load(path)  # as saved: read
    _rewrite(path, EDITS[edit])
    with pytest.raises(
        ValueError, match=r"its sha256 differs from the digest kept in scorer\.npz\.sha256"
    ):
        FastScorer.load(path)


def test_the_issues_edit_would_score_every_row_1(tree, halves, tmp_path: Path) -> None:
    """What the digest protects from: the edited file, were it read, scores every row 1."""
    path = tmp_path / "scorer.npz"
    FastScorer.compile(tree).save(path, {})
    _rewrite(path, EDITS["every_leaf_scores_1"])
    digest_path(path).write_text(hashlib.sha256(path.read_bytes()).hexdigest())
    edited, _ = FastScorer.load(path)
    assert (edited.predict_proba(halves[1]) == 1.0).all()


@pytest.mark.parametrize(
    ("digest", "problem"),
    [
        (None, "no readable digest scorer.npz.sha256 kept beside it"),
        (b"\xff\xfe\x00binary", "no readable digest"),
        ("", "differs"),
        ("0" * 64, "differs"),
        ("not a digest at all\n", "differs"),
        (hashlib.sha256(b"another file").hexdigest(), "differs"),
    ],
    ids=["missing", "binary", "empty", "zeros", "garbage", "another_files"],
)
def test_a_missing_or_changed_digest_file_refuses_the_scorer(
    tree, tmp_path: Path, digest: str | bytes | None, problem: str
) -> None:
    """Decided: the digest file vouches for the scorer; without it, or with another digest in
    it, the scorer is not read (and so is compiled again), whatever the scorer holds."""
    path = tmp_path / "scorer.npz"
    FastScorer.compile(tree).save(path, {})
    if digest is None:
        digest_path(path).unlink()
    elif isinstance(digest, bytes):
        digest_path(path).write_bytes(digest)
    else:
        digest_path(path).write_text(digest)
    with pytest.raises(ValueError, match=problem):
        FastScorer.load(path)


def test_a_save_over_a_refused_scorer_makes_it_readable_again(tree, halves, tmp_path) -> None:
    path = tmp_path / "scorer.npz"
    scorer = FastScorer.compile(tree)
    scorer.save(path, {})
    path.write_bytes(b"damaged")
    scorer.save(path, {})
    loaded, _ = FastScorer.load(path)
    np.testing.assert_array_equal(
        loaded.predict_proba(halves[1]), tree.predict_proba(halves[1])[:, 1]
    )
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


# --- the compiled scorer against scikit-learn, when it is built -----------------------------
@pytest.fixture(scope="module", params=OPTIONS)
def built(request, schema, halves) -> tuple[str, Any]:
    return request.param, fitted(schema, halves[0], request.param)


def test_a_faithful_scorer_agrees_with_scikit_learn(built, kinds, halves) -> None:
    option, model = built
    scorer = FastScorer.compile(model)
    assert scorer.disagreement(model, _checked_rows(scorer, kinds, halves[1])) == ""


def test_synthetic_rows_are_seeded_and_reach_every_kind_of_value(tree, kinds, halves) -> None:
    scorer = FastScorer.compile(tree)
    rows = scorer.synthetic_rows(kinds, halves[1].head(5))
    pd.testing.assert_frame_equal(rows, scorer.synthetic_rows(kinds, halves[1].head(5)))
    assert not rows.equals(scorer.synthetic_rows(kinds, halves[1].head(5), seed=1))
    assert list(rows.columns) == list(kinds) and len(rows) == 256
    for spec in scorer.categorical:
        values = rows[spec.column]
        assert values.isna().any() and (values == UNSEEN).any()
        assert set(values.dropna()) - {UNSEEN} <= set(spec.categories)
    for k, spec in enumerate(scorer.numeric):
        # a column the model imputes is also missing (NaN, so float64) in some rows
        imputed = spec.column in scorer.imputed
        dtype = np.int64 if kinds[spec.column] == "integer" and not imputed else np.float64
        assert rows[spec.column].dtype == dtype
        assert rows[spec.column].isna().any() == imputed
        thresholds = scorer.trees.threshold[scorer.trees.feature == k]
        if len(thresholds):  # on both sides of the splits
            assert (rows[spec.column] <= thresholds.min()).any()
            assert (rows[spec.column] > thresholds.max()).any()


def _first(trees: Any, categorical: bool) -> int:
    """The first node (in depth-first order) that splits on a category, or on a number."""
    split = trees.feature >= 0
    on = trees.category >= 0 if categorical else trees.category < 0
    return int(np.flatnonzero(split & on)[0])


def _wrong_leaf(scorer: FastScorer, rows: pd.DataFrame) -> None:
    leaves = scorer.trees.feature < 0
    scorer.trees.value[np.flatnonzero(leaves)[0]] += 0.25


def _wrong_category(scorer: FastScorer, rows: pd.DataFrame) -> None:
    node = _first(scorer.trees, categorical=True)
    scorer.trees.category[node] += 1


def _wrong_number_split(scorer: FastScorer, rows: pd.DataFrame) -> None:
    node = _first(scorer.trees, categorical=False)
    scorer.trees.threshold[node] = np.nextafter(scorer.trees.threshold[node], -np.inf) - 1.0


def _wrong_links(scorer: FastScorer, rows: pd.DataFrame) -> None:
    trees = scorer.trees
    trees.left[0], trees.right[0] = trees.right[0], trees.left[0]


def _wrong_lookup(scorer: FastScorer, rows: pd.DataFrame) -> None:
    """Only the few-rows path reads the lookup: two categories swapped there."""
    node = _first(scorer.trees, categorical=True)
    spec = scorer.categorical[scorer.trees.feature[node] - len(scorer.numeric)]
    hit = spec.categories[scorer.trees.category[node]]
    other = next(c for c in spec.categories if c != hit)
    spec.lookup[hit], spec.lookup[other] = spec.lookup[other], spec.lookup[hit]


def _wrong_decision_threshold(scorer: FastScorer, rows: pd.DataFrame) -> None:
    scorer.threshold = 0.9


WRONG = {
    "a_leaf_value": _wrong_leaf,
    "a_category_split": _wrong_category,
    "a_number_split": _wrong_number_split,
    "the_root_children": _wrong_links,
    "the_few_rows_lookup": _wrong_lookup,
    "the_decision_threshold": _wrong_decision_threshold,
}


@pytest.mark.parametrize("wrong", list(WRONG), ids=list(WRONG))
def test_a_wrong_compiled_tree_is_caught_when_built(tree, kinds, halves, wrong: str) -> None:
    scorer = FastScorer.compile(tree)
    rows = _checked_rows(scorer, kinds, halves[1])
    WRONG[wrong](scorer, rows)
    found = scorer.disagreement(tree, rows)
    assert "where scikit-learn gives" in found and "rows differ" in found


def test_a_wrong_scaler_of_a_linear_model_is_caught_when_built(kinds, schema, halves) -> None:
    model = fitted(schema, halves[0], "logistic_regression")
    scorer = FastScorer.compile(model)
    rows = _checked_rows(scorer, kinds, halves[1])
    scorer.numeric[0] = dataclasses.replace(scorer.numeric[0], mean=scorer.numeric[0].mean + 1)
    assert "where scikit-learn gives" in scorer.disagreement(model, rows)


# --- skops: only the components' own list of types is trusted --------------------------------
class Doubler:
    """A transformer of no trusted package: loading it would import and run this module."""

    def fit(self, features, target=None):
        return self

    def transform(self, features):
        return features * 2


def _logged(folder: Path, model: Any, trusted: list[str], fmt: str = "skops") -> Path:
    """A folder as mlflow.sklearn.log_model writes it, its MLmodel listing ``trusted``."""
    folder.mkdir()
    sio.dump(model, folder / "model.skops")
    flavor = {
        "pickled_model": "model.skops",
        "serialization_format": fmt,
        "skops_trusted_types": trusted,
    }
    (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": {"sklearn": flavor}}))
    return folder


FOREIGN = {
    "posix.system": lambda: FunctionTransformer(os.system),
    "builtins.eval": lambda: FunctionTransformer(eval),
    f"{__name__}.Doubler": Doubler,
    "sklearn.neighbors._kd_tree.KDTree": lambda: KNeighborsClassifier(algorithm="kd_tree"),
}


@pytest.mark.parametrize("type_name", list(FOREIGN), ids=list(FOREIGN))
def test_a_type_outside_the_list_is_refused_whatever_mlmodel_lists(
    tree, type_name: str, tmp_path: Path
) -> None:
    """The MLmodel file lists the foreign type as trusted (MLflow would load it): refused."""
    x = np.random.default_rng(0).normal(size=(30, 3))
    step = FOREIGN[type_name]()
    tampered = (
        step.fit(x, x[:, 0] > 0)
        if isinstance(step, KNeighborsClassifier)
        else Pipeline([("foreign", step), ("model", tree)])
    )
    found = sio.get_untrusted_types(data=sio.dumps(tampered))
    assert type_name in found
    folder = _logged(tmp_path / "model", tampered, found)
    with pytest.raises(RepriseError) as caught:
        model_trust.load_sklearn(folder, "models:/adult_income/7")
    message = str(caught.value)
    assert message.startswith("Model models:/adult_income/7 holds ")
    assert type_name in message and "the model is refused" in message
    assert "check the URI" not in message and "\n" not in message


def test_a_clean_model_loads_and_an_extra_listed_type_is_ignored(
    tree,
    halves,
    tmp_path: Path,
    caplog,
) -> None:
    folder = _logged(tmp_path / "model", tree, [*persist.trusted_types(tree), "posix.system"])
    with caplog.at_level(logging.WARNING, logger="reprise.serving.model_trust"):
        loaded = model_trust.load_sklearn(folder, "runs:/abc/model")
    np.testing.assert_array_equal(loaded.predict_proba(halves[1]), tree.predict_proba(halves[1]))
    assert "its MLmodel file trusts posix.system too; ignored" in caplog.text


@pytest.mark.parametrize(
    ("flavor", "problem"),
    [
        ({"serialization_format": "cloudpickle"}, "is stored as 'cloudpickle', not skops"),
        ({"serialization_format": "pickle"}, "is stored as 'pickle', not skops"),
        (
            {"pickled_model": "../outside.skops"},
            "names a model file outside its folder ('../outside.skops')",
        ),
    ],
    ids=["cloudpickle", "pickle", "outside_the_folder"],
)
def test_a_model_not_in_skops_inside_its_folder_is_refused(
    tree, tmp_path: Path, flavor: dict[str, str], problem: str
) -> None:
    folder = _logged(tmp_path / "model", tree, [])
    (tmp_path / "outside.skops").write_bytes((folder / "model.skops").read_bytes())
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"].update(flavor)
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(RepriseError, match=re.escape(f"{problem}; the model is refused")):
        model_trust.load_sklearn(folder, "runs:/abc/model")


def test_serving_and_components_trust_the_same_one_list() -> None:
    assert model_trust.trusted_types() == persist.TRUSTED_TYPES
    assert model_trust.TRUSTED_TYPES_FILE.resolve() == persist.TRUSTED_TYPES_FILE


def test_a_damaged_skops_file_is_one_line(tree, tmp_path: Path) -> None:
    folder = _logged(tmp_path / "model", tree, [])
    (folder / "model.skops").write_bytes(b"not a zip")
    with pytest.raises(RepriseError, match="its skops file model.skops cannot be read") as caught:
        model_trust.load_sklearn(folder, "runs:/abc/model")
    assert "\n" not in str(caught.value)
