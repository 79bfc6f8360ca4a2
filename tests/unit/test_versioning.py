"""Release preconditions on a real git work tree."""

from pathlib import Path

import pytest

from reprise.errors import RepriseError
from reprise.versioning import require_clean
from support import git


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git("init", "--quiet", cwd=tmp_path)
    for name in ("README.md", "with space.txt", "x.py"):
        (tmp_path / name).write_text("one\n")
    git("add", ".", cwd=tmp_path)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "one", cwd=tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "change",
    [
        "modified",  # " M README.md": the leading space is what was lost
        "staged",  # "M  README.md"
        "both",  # "MM README.md"
        "untracked",  # "?? README.md"
    ],
)
def test_a_dirty_tree_is_refused_naming_each_file_whole(repo: Path, change: str) -> None:
    name = "README.md"
    if change == "untracked":
        name = "NEW.md"
        (repo / name).write_text("new\n")
    else:
        (repo / name).write_text("two\n")
        if change in ("staged", "both"):
            git("add", name, cwd=repo)
        if change == "both":
            (repo / name).write_text("three\n")
    (repo / "with space.txt").write_text("two\n")
    with pytest.raises(RepriseError) as refused:
        require_clean(repo)
    assert f"uncommitted changes ({name}, " in str(refused.value) or (
        f", {name})" in str(refused.value)
    )
    assert "with space.txt" in str(refused.value)


def test_a_clean_tree_passes(repo: Path) -> None:
    require_clean(repo)
