"""Shared fixtures of the component tests: a pipeline's config groups and the bundled data.

Thresholds, ranges, the schema and the hyperparameters come from testing/config, the config a
pipeline passes the components (one file per option of a group, as a Hydra project lays them
out; today copies of the Adult project's), never from a test's own literals. This repository
ships them, so a clone of it tests itself without any project. The data fixtures are
session-scoped: a test that changes a table works on a ``.copy()``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from step_kit import Schema

import pandas as pd
import pytest
import yaml

COMPONENTS = Path(__file__).resolve().parent
CONFIG_DIR = COMPONENTS / "testing" / "config"
DATA_DIR = COMPONENTS / "get_data" / "data"


def load_config(group: str, name: str) -> dict[str, Any]:
    """One option of a config group, e.g. ``load_config("data", "adult")``."""
    return yaml.safe_load((CONFIG_DIR / group / f"{name}.yaml").read_text())


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Skip the ``step_kit`` link of each component folder: step_kit's tests run once, from the
    folder itself, whatever this repository's folder is called."""
    return True if collection_path.is_symlink() else None


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
def preprocess_config() -> dict[str, Any]:
    return load_config("preprocess", "default")


@pytest.fixture(scope="session")
def split_config() -> dict[str, Any]:
    return load_config("split", "default")


def model_option(name: str) -> tuple[str, dict[str, Any]]:
    """(model name, hyperparameters) of one option of config group 'model', split as the
    orchestrator splits it: ``name`` is the estimator, every other key a hyperparameter."""
    option = load_config("model", name)
    return option["name"], {key: value for key, value in option.items() if key != "name"}


@pytest.fixture(scope="session")
def model_options() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every option of config group 'model', by file name: (model name, hyperparameters)."""
    return {path.stem: model_option(path.stem) for path in sorted(CONFIG_DIR.glob("model/*.yaml"))}


@pytest.fixture(scope="session")
def model_name() -> str:
    """The default model of the Adult pipeline (its config.yaml's defaults: model: decision_tree)."""
    return model_option("decision_tree")[0]


@pytest.fixture(scope="session")
def hyperparameters() -> dict[str, Any]:
    return model_option("decision_tree")[1]


@pytest.fixture(scope="session")
def evaluation_config() -> dict[str, Any]:
    return load_config("evaluation", "default")


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
def val_xy(splits: dict[str, pd.DataFrame], schema: Schema) -> tuple[pd.DataFrame, pd.Series]:
    """Features and 0/1 target of the validation table."""
    return schema.xy(splits["val"])


@pytest.fixture(scope="session")
def model(
    splits: dict[str, pd.DataFrame],
    schema: Schema,
    model_name: str,
    hyperparameters: dict[str, Any],
):
    """The inference pipeline fitted on the train table with the configured hyperparameters."""
    from training import fit

    return fit(splits["train"], schema, model_name, hyperparameters)


@pytest.fixture(scope="session")
def threshold_choice(model, val_xy, evaluation_config: dict[str, Any]):
    """The decision threshold train_model picks on validation with the configured strategy."""
    from training import choose_threshold

    features, target = val_xy
    threshold = evaluation_config["threshold"]
    return choose_threshold(
        model,
        features,
        target,
        threshold["strategy"],
        evaluation_config["beta"],
        threshold.get("min_precision", 0.0),
    )


@pytest.fixture(scope="session")
def tuned_model(model, threshold_choice):
    """The model train_model logs: the fitted pipeline with the chosen threshold inside."""
    from training import with_threshold

    return with_threshold(model, threshold_choice.threshold)
