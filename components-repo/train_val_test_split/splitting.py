"""Pure splitting logic: one table in, stratified train, validation and test tables out."""

from __future__ import annotations

from step_kit import StepError

import pandas as pd
from sklearn.model_selection import train_test_split


def split(
    frame: pd.DataFrame, target: str, val_size: float, test_size: float, seed: int
) -> dict[str, pd.DataFrame]:
    """Stratified train/val/test tables; val_size and test_size are shares of all rows."""
    if target not in frame:
        raise StepError(
            f"Target column '{target}' is not in the table.",
            "name the target of config group 'data'.",
        )
    if not (0 < val_size < 1 and 0 < test_size < 1 and val_size + test_size < 1):
        raise StepError(
            f"val_size={val_size} and test_size={test_size} leave no rows for training.",
            "choose two shares above 0 whose sum is below 1.",
        )
    smallest = frame[target].value_counts(dropna=False)
    if smallest.min() < 3:
        raise StepError(
            f"Class {smallest.idxmin()!r} of '{target}' has {smallest.min()} row(s); a stratified "
            "three-way split needs at least 3 of each class.",
            "use more data (etl.sample) or drop that class in cleaning.",
        )
    rest, test = train_test_split(
        frame, test_size=test_size, stratify=frame[target], random_state=seed
    )
    train, val = train_test_split(
        rest, test_size=val_size / (1 - test_size), stratify=rest[target], random_state=seed
    )
    return {
        name: part.reset_index(drop=True)
        for name, part in (("train", train), ("val", val), ("test", test))
    }
