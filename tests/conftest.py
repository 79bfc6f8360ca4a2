"""Fixtures of the platform tests (the code behind them is in support.py), and the two tiers:
tests/unit/ runs in this process in seconds; every test of tests/e2e/ is marked e2e (real git
servers, tracking stores, pipelines and HTTP servers, in processes of their own)."""

import os
from pathlib import Path

import pytest

from support import (
    components_remote,
    git_server,
    served_store,
    team_server,
    team_workspace,
    workspace,
)

__all__ = [
    "components_remote",
    "git_server",
    "served_store",
    "team_server",
    "team_workspace",
    "workspace",
]

# The environments the tests make from nothing (`make run` in a clone, a fresh machine's project
# environment, the components' own, a component's uv environment) skip compiling the bytecode of
# every installed module, ~35 s of CPU each, and Python writes the bytecode of what is imported,
# once: UV_COMPILE_BYTECODE=0 reaches make, the bootstrap and uv through the environment.
os.environ["UV_COMPILE_BYTECODE"] = "0"
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
# Three workers share two cores, and scikit-learn's OpenMP threads (gradient boosting, forests)
# spin while they wait for one another: with both cores busy, the unit tier's fits took 93 s of
# CPU instead of 20 s. Passive waiting changes no result (the same threads do the same sums); it
# reaches every process the tests start through the environment.
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of tests/e2e/ e2e, so that `-m "not e2e"` is the fast tier wherever run."""
    for item in items:
        if item.path.is_relative_to(E2E):
            item.add_marker(pytest.mark.e2e)
