"""Fixtures of the platform tests; the code behind them is in support.py."""

import os

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
