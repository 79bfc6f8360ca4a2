"""Shared fixtures of the component tests: the project's config groups and the bundled data.

Thresholds, ranges, the schema and the hyperparameters come from project/config, never copied
into a test, so a test checks the components against the configuration the pipeline runs with.
The data fixtures are session-scoped: a test that changes a table works on a ``.copy()``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from step_kit import Schema

COMPONENTS = Path(__file__).resolve().parent
CONFIG_DIR = COMPONENTS.parent / "project" / "config"
DATA_DIR = COMPONENTS / "get_data" / "data"


def load_config(group: str, name: str) -> dict[str, Any]:
    """One option of a config group, e.g. ``load_config("data", "adult")``."""
    return yaml.safe_load((CONFIG_DIR / group / f"{name}.yaml").read_text())


# --- configuration ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def data_config() -> dict[str, Any]:
    return load_config("data", "adult")


@pytest.fixture(scope="session")
def schema(data_config: dict[str, Any]) -> Schema:
    """The schema as the orchestrator passes it: config group 'data' as one JSON parameter."""
    return Schema.from_json(json.dumps(data_config))


@pytest.fixture(scope="session")
def etl_config() -> dict[str, Any]:
    return load_config("etl", "default")


@pytest.fixture(scope="session")
def check_config() -> dict[str, Any]:
    return load_config("data_check", "default")


@pytest.fixture(scope="session")
def split_config() -> dict[str, Any]:
    return load_config("split", "default")


@pytest.fixture(scope="session")
def hyperparameters() -> dict[str, Any]:
    return load_config("model", "decision_tree")["hyperparameters"]


# --- data ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def raw_full() -> pd.DataFrame:
    """sample2.parquet: the full UCI Adult set, 48,842 rows, missing values as '?'."""
    return pd.read_parquet(DATA_DIR / "sample2.parquet")


@pytest.fixture(scope="session")
def raw_sample() -> pd.DataFrame:
    """sample1.parquet: 10,000 rows sampled from the full set."""
    return pd.read_parquet(DATA_DIR / "sample1.parquet")


@pytest.fixture(scope="session")
def reference(raw_sample: pd.DataFrame, etl_config: dict[str, Any]) -> pd.DataFrame:
    """The drift reference as data_check's run.py prepares it: the missing token made missing."""
    return raw_sample.replace(etl_config["missing_token"], None)


@pytest.fixture(scope="session")
def clean_full(raw_full: pd.DataFrame, schema: Schema, etl_config: dict[str, Any]) -> pd.DataFrame:
    """basic_cleaning's output on the full set with the configured token and ranges."""
    from cleaning import clean

    frame, _ = clean(raw_full, schema, etl_config["missing_token"], etl_config["ranges"])
    return frame


@pytest.fixture(scope="session")
def splits(clean_full: pd.DataFrame, schema: Schema, split_config: dict[str, Any]):
    """train / val / test tables of the clean full set, with the configured shares and seed."""
    from splitting import split

    return split(
        clean_full,
        schema.target,
        split_config["val_size"],
        split_config["test_size"],
        split_config["random_seed"],
    )


@pytest.fixture(scope="session")
def model(splits: dict[str, pd.DataFrame], schema: Schema, hyperparameters: dict[str, Any]):
    """The inference pipeline fitted on the train table with the configured hyperparameters."""
    from training import fit

    return fit(splits["train"], schema, hyperparameters)
