"""Fixtures of the platform tests; the code behind them is in support.py."""

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
