"""The pure parts of team mode: which folder PostgreSQL (run as another user) cannot reach, and
what a run tells its user to open for the store it used."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reprise import tracking
from reprise.team_server import closed_parent

OTHER = (65534, 65534)  # nobody's uid and gid on Debian


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A folder every user may enter, outside pytest's (which are closed to others)."""
    base = Path(tempfile.mkdtemp(prefix="reprise-closed-parent-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize(
    ("mode", "user", "closed"),
    [
        (0o755, OTHER, False),  # others may enter
        (0o711, OTHER, False),  # enter without listing is enough
        (0o750, OTHER, True),  # only owner and group
        (0o700, OTHER, True),
        (0o700, "self", False),  # its owner
        (0o070, "self", True),  # the owner's bits count for the owner, not the group's
        (0o710, "group", False),  # a member of its group
        (0o701, "group", True),  # the group's bits count for the group, not the others'
    ],
)
def test_closed_parent_reads_the_bits_that_apply_to_the_user(
    open_base: Path, mode: int, user: object, closed: bool
) -> None:
    middle = open_base / "middle"
    middle.mkdir()
    target = middle / "server"
    me = (os.getuid(), os.getgid())
    who = {"self": me, "group": (OTHER[0], me[1])}.get(user, OTHER)  # type: ignore[call-overload]
    middle.chmod(mode)
    try:
        assert closed_parent(target, who) == (middle if closed else None)
    finally:
        middle.chmod(0o755)


def test_closed_parent_names_the_first_closed_folder(open_base: Path) -> None:
    outer = open_base / "outer"
    inner = outer / "inner"
    inner.mkdir(parents=True)
    inner.chmod(0o700)
    outer.chmod(0o700)
    try:
        assert closed_parent(inner / "server", OTHER) == outer
    finally:
        outer.chmod(0o755)
        inner.chmod(0o755)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://127.0.0.1:5000", "open http://127.0.0.1:5000 in a browser"),
        ("https://mlflow.example.org/team", "open https://mlflow.example.org/team in a browser"),
        ("http://alice:s3cret@127.0.0.1:5000", "open http://127.0.0.1:5000 in a browser"),
        ("sqlite:////tmp/state/mlflow.db", "mlflow ui --backend-store-uri sqlite:////tmp/state/mlflow.db"),
        ("postgresql://reprise@db:5432/mlflow", "mlflow ui --backend-store-uri postgresql://***@db:5432/mlflow"),
    ],
)  # fmt: skip
def test_a_run_shows_a_servers_url_and_a_stores_ui_command(uri: str, shown: str) -> None:
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        assert tracking.ui_command() == shown
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.mark.parametrize("kind", ["file", "folder of other files"])
def test_a_server_folder_that_is_not_its_own_is_refused_before_anything_is_written(
    tmp_path: Path, kind: str
) -> None:
    from reprise import team_server
    from reprise.errors import RepriseError

    where = tmp_path / "server"
    if kind == "file":
        where.write_text("mine\n")
    else:
        where.mkdir()
        (where / "notes.txt").write_text("mine\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(RepriseError) as refused:
        team_server.start(port=1, where=where)
    assert "Fix: give REPRISE_SERVER_DIR a folder of its own (new or empty)." in str(refused.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    with pytest.raises(RepriseError):
        team_server.stop(where)
