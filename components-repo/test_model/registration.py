"""Registering the model that passed: its version, then the alias that names it."""

from __future__ import annotations

import time

import mlflow
from mlflow.exceptions import MlflowException

ALIAS_ATTEMPTS = 5
ALIAS_RETRY_S = 0.2


def set_alias(client: mlflow.MlflowClient, name: str, alias: str, version: str) -> None:
    """Point ``alias`` of model ``name`` at ``version``. A tracking server moves an alias by
    deleting and inserting its row, so two pipelines setting it at the same moment can collide
    on the row's key: the loser tries again (the last to set it wins, as one after another)."""
    for attempt in range(1, ALIAS_ATTEMPTS + 1):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException:
            if attempt == ALIAS_ATTEMPTS:
                raise
            time.sleep(ALIAS_RETRY_S * attempt)
