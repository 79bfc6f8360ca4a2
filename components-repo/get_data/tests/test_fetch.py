"""get_data: a source (bundled sample, local path, file:// or http:// URL) becomes a local file."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import socket
import threading
from pathlib import Path

from step_kit import StepError, read_table, sha256_file

import pytest

from fetch import BUNDLED_DIR, fetch

# A row of DATA.md's table: | `name.parquet` | rows | what | `sha256` |
DATA_MD_ROW = re.compile(
    r"^\|\s*`([^`]+\.parquet)`\s*\|\s*([\d,]+)\s*\|.*\|\s*`([0-9a-f]{64})`\s*\|$"
)


def _documented() -> dict[str, tuple[int, str]]:
    """Bundled file name -> (rows, sha256), as DATA.md states them."""
    rows = {}
    for line in (BUNDLED_DIR / "DATA.md").read_text().splitlines():
        match = DATA_MD_ROW.match(line.strip())
        if match:
            rows[match[1]] = (int(match[2].replace(",", "")), match[3])
    return rows


DOCUMENTED = _documented()


def test_data_md_documents_both_samples():
    assert sorted(DOCUMENTED) == ["sample1.parquet", "sample2.parquet"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # the base class logs each request to stderr
        pass


@pytest.fixture
def http_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real HTTP server on 127.0.0.1 serving a folder holding a copy of sample1.parquet.

    Yields (base URL, served folder); the server is shut down on teardown.
    """
    # A proxy from the environment must not intercept requests to this machine.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = tmp_path / "served"
    root.mkdir()
    shutil.copyfile(BUNDLED_DIR / "sample1.parquet", root / "sample1.parquet")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def closed_port() -> int:
    """A 127.0.0.1 port that nothing listens on: bound by the OS, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- sources that resolve -----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_bundled_sample_is_copied_byte_for_byte(name, tmp_path):
    rows, digest = DOCUMENTED[name]
    dest = tmp_path / "raw"
    path = fetch(name, dest)
    assert path == dest / name
    assert sha256_file(path) == digest
    assert len(read_table(path)) == rows


def test_bundled_sample_ignores_surrounding_whitespace(tmp_path):
    path = fetch("  sample1.parquet\n", tmp_path)
    assert sha256_file(path) == DOCUMENTED["sample1.parquet"][1]


def test_local_path_is_copied(tmp_path):
    source = tmp_path / "elsewhere" / "my data.parquet"
    source.parent.mkdir()
    shutil.copyfile(BUNDLED_DIR / "sample1.parquet", source)
    path = fetch(str(source), tmp_path / "dest")
    assert path == tmp_path / "dest" / "my data.parquet"
    assert path.read_bytes() == source.read_bytes()


def test_relative_local_path_resolves_from_working_directory(tmp_path, monkeypatch):
    shutil.copyfile(BUNDLED_DIR / "sample1.parquet", tmp_path / "mine.parquet")
    monkeypatch.chdir(tmp_path)
    path = fetch("mine.parquet", tmp_path / "dest")
    assert path.read_bytes() == (tmp_path / "mine.parquet").read_bytes()


def test_file_url_is_copied(tmp_path):
    source = tmp_path / "in" / "adult data.parquet"
    source.parent.mkdir()
    shutil.copyfile(BUNDLED_DIR / "sample1.parquet", source)
    path = fetch(source.as_uri(), tmp_path / "dest")  # as_uri() percent-encodes the space
    assert path == tmp_path / "dest" / "adult data.parquet"
    assert sha256_file(path) == DOCUMENTED["sample1.parquet"][1]


def test_http_url_is_downloaded(http_root, tmp_path):
    base, _ = http_root
    path = fetch(f"{base}/sample1.parquet", tmp_path / "dest", timeout=10)
    assert path == tmp_path / "dest" / "sample1.parquet"
    assert sha256_file(path) == DOCUMENTED["sample1.parquet"][1]
    assert len(read_table(path)) == DOCUMENTED["sample1.parquet"][0]


# --- sources that fail, with a message that says why --------------------------------------------
def test_unknown_sample_name_lists_the_bundled_samples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file of that name in the working directory either
    with pytest.raises(StepError) as caught:
        fetch("sample3.parquet", tmp_path / "dest")
    message = str(caught.value)
    assert "'sample3.parquet'" in message
    for name in DOCUMENTED:
        assert name in message
    assert not (tmp_path / "dest").exists()


def test_empty_source_lists_the_bundled_samples(tmp_path):
    with pytest.raises(StepError) as caught:
        fetch("  ", tmp_path)
    for name in DOCUMENTED:
        assert name in str(caught.value)


def test_unreachable_url(closed_port, tmp_path):
    url = f"http://127.0.0.1:{closed_port}/sample1.parquet"
    with pytest.raises(StepError) as caught:
        fetch(url, tmp_path / "dest", timeout=5)
    assert f"Cannot download {url}" in str(caught.value)


def test_http_not_found(http_root, tmp_path):
    base, _ = http_root
    url = f"{base}/absent.parquet"
    with pytest.raises(StepError, match=re.escape(f"Cannot download {url}: HTTP 404")):
        fetch(url, tmp_path / "dest", timeout=10)
    assert not (tmp_path / "dest" / "absent.parquet").exists()


def test_file_url_to_missing_file(tmp_path):
    url = (tmp_path / "absent.parquet").as_uri()
    with pytest.raises(StepError, match=re.escape(f"Cannot download {url}")):
        fetch(url, tmp_path / "dest")


def test_local_file_with_non_table_suffix(tmp_path):
    source = tmp_path / "notes.txt"
    source.write_text("not a table")
    with pytest.raises(StepError, match="'notes.txt' is neither a Parquet nor a CSV file"):
        fetch(str(source), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_bundled_non_table_file(tmp_path):
    """DATA.md sits next to the samples but is not one."""
    with pytest.raises(StepError, match="'DATA.md' is neither a Parquet nor a CSV file"):
        fetch("DATA.md", tmp_path / "dest")


def test_url_with_non_table_suffix_is_not_downloaded(http_root, tmp_path):
    base, root = http_root
    (root / "data.json").write_text("{}")
    with pytest.raises(StepError, match="'data.json' is neither a Parquet nor a CSV file"):
        fetch(f"{base}/data.json", tmp_path / "dest", timeout=10)
    assert not (tmp_path / "dest").exists()


# --- step_kit.read_table on what get_data fetched -----------------------------------------------
def test_truncated_parquet_is_a_step_error_naming_the_file(tmp_path):
    intact = (BUNDLED_DIR / "sample1.parquet").read_bytes()
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(intact[: len(intact) // 2])
    with pytest.raises(StepError) as caught:
        read_table(broken)
    assert f"Data file {broken} cannot be read as parquet" in str(caught.value)


def test_missing_file_is_a_step_error_naming_the_file(tmp_path):
    with pytest.raises(StepError, match=re.escape(f"Data file {tmp_path / 'x.parquet'} does not")):
        read_table(tmp_path / "x.parquet")


# --- a file an installed package ships ----------------------------------------------------------
def test_a_package_file_is_copied_without_importing_the_package(tmp_path):
    import importlib.util
    import sys

    # scikit-learn (a dependency of every component) ships the iris table as a CSV
    origin = Path(importlib.util.find_spec("sklearn").origin).parent / "datasets/data/iris.csv"
    imported = "sklearn" in sys.modules
    path = fetch("package://sklearn/datasets/data/iris.csv", tmp_path)
    assert path == tmp_path / "iris.csv"
    assert sha256_file(path) == sha256_file(origin)
    assert ("sklearn" in sys.modules) == imported


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("package://no_such_package_13/x.csv", "no package 'no_such_package_13' is installed"),
        ("package://sklearn/datasets/data/none.csv", "package 'sklearn' has no file"),
        ("package://sklearn/../../../../etc/passwd", "package 'sklearn' has no file"),
        ("package://sklearn/datasets", "package 'sklearn' has no file"),
        ("package://sklearn", "names no file of a package"),
        ("package://not-a-name/x.csv", "names no file of a package"),
    ],
)
def test_a_package_source_that_names_no_shipped_file_is_refused(tmp_path, source, message):
    with pytest.raises(StepError) as caught:
        fetch(source, tmp_path)
    assert message in str(caught.value)
    assert "package://<installed package>/<path of a file inside it>" in str(caught.value)
    assert not any(tmp_path.iterdir())
