"""Fixtures of the platform tests (the code behind them is in support.py), and their order."""

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

# The xdist groups (each runs whole in one worker), longest first: xdist hands work out in
# collection order, so a long group collected last would run alone while the other worker idles;
# the many short tests then fill both workers to the end.
LONGEST_FIRST = (
    "git",
    "release",
    "team",
    "evaluation",
    "second_project",
    "fresh_machine",
    "team-sweeps",
    "components-standalone",
    "served",
    "components-release",
    "make-run",
    "titanic",
    "new-component",
)


def _group_rank(item: pytest.Item) -> int:
    marker = item.get_closest_marker("xdist_group")
    group = (marker.args[0] if marker.args else marker.kwargs.get("name")) if marker else None
    return LONGEST_FIRST.index(group) if group in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_group_rank)  # stable: each file's tests keep their order
