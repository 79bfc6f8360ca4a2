"""train_val_test_split: stratified, disjoint, complete and reproducible train/val/test tables."""

from __future__ import annotations

from step_kit import StepError

import pandas as pd
import pytest

from splitting import split


def row_hashes(frame: pd.DataFrame) -> pd.Series:
    """One hash per row, from its values only (the parts get a fresh index)."""
    return pd.util.hash_pandas_object(frame, index=False)


def positive_share(frame: pd.DataFrame, schema) -> float:
    return float(frame[schema.target].eq(schema.positive_class).mean())


def test_parts_and_columns(splits, clean_full):
    assert list(splits) == ["train", "val", "test"]
    for part in splits.values():
        assert list(part.columns) == list(clean_full.columns)
        assert part.dtypes.equals(clean_full.dtypes)
        assert part.index.equals(pd.RangeIndex(len(part)))


def test_shares_within_a_row(splits, clean_full, split_config):
    rows = len(clean_full)
    val_size, test_size = split_config["val_size"], split_config["test_size"]
    expected = {"train": 1 - val_size - test_size, "val": val_size, "test": test_size}
    assert expected["train"] == pytest.approx(0.64)  # the 64/16/20 the config documents
    for name, share in expected.items():
        assert abs(len(splits[name]) - share * rows) <= 1, name


def test_stratified(splits, clean_full, schema):
    overall = positive_share(clean_full, schema)
    for name, part in splits.items():
        assert positive_share(part, schema) == pytest.approx(overall, abs=0.005), name


def test_disjoint_and_complete(splits, clean_full):
    original = row_hashes(clean_full)
    assert original.is_unique  # the clean set has no duplicates, so a hash identifies a row
    parts = {name: set(row_hashes(part)) for name, part in splits.items()}
    assert not parts["train"] & parts["val"]
    assert not parts["train"] & parts["test"]
    assert not parts["val"] & parts["test"]
    combined = pd.concat([row_hashes(part) for part in splits.values()])
    assert sorted(combined) == sorted(original)  # nothing lost, nothing duplicated


def test_same_seed_same_split(splits, clean_full, schema, split_config):
    again = split(
        clean_full,
        schema.target,
        split_config["val_size"],
        split_config["test_size"],
        split_config["random_seed"],
    )
    for name, part in splits.items():
        pd.testing.assert_frame_equal(again[name], part)


def test_different_seed_different_split(splits, clean_full, schema, split_config):
    other = split(
        clean_full,
        schema.target,
        split_config["val_size"],
        split_config["test_size"],
        split_config["random_seed"] + 1,
    )
    for name, part in splits.items():
        assert len(other[name]) == len(part)
        assert set(row_hashes(other[name])) != set(row_hashes(part)), name


@pytest.mark.parametrize(
    ("val_size", "test_size"),
    [(0.0, 0.2), (0.16, 0.0), (0.5, 0.5), (0.7, 0.4), (-0.1, 0.2), (0.16, 1.0), (1.2, 0.1)],
)
def test_bad_shares(clean_full, schema, val_size, test_size):
    with pytest.raises(StepError, match=f"val_size={val_size} and test_size={test_size}"):
        split(clean_full, schema.target, val_size, test_size, 0)


def test_missing_target(clean_full, schema):
    frame = clean_full.drop(columns=schema.target)
    with pytest.raises(StepError, match=f"Target column '{schema.target}' is not in the table"):
        split(frame, schema.target, 0.16, 0.2, 0)


def test_a_class_too_small_to_stratify(clean_full, schema):
    positive = clean_full[clean_full[schema.target].eq(schema.positive_class)]
    frame = pd.concat([clean_full[~clean_full.index.isin(positive.index)], positive.head(2)])
    with pytest.raises(StepError, match=r"Class '>50K' of 'income' has 2 row\(s\)"):
        split(frame, schema.target, 0.16, 0.2, 0)
