"""Release manifests (releases/X.Y.Z.yaml): where they are, and which one a checkout is at."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import yaml

from reprise import paths
from reprise.components import without_credentials
from reprise.errors import RepriseError
from reprise.versioning import current_version

log = logging.getLogger(__name__)

BUMPVERSION_CFG = ".bumpversion.cfg"


def manifest_path(version: str, root: Path = paths.ROOT) -> Path:
    return root / "releases" / f"{version}.yaml"


def load(version: str, root: Path = paths.ROOT) -> dict[str, Any]:
    """The manifest of release ``version``, or an error listing the releases there are."""
    path = manifest_path(version, root)
    if not path.is_file():
        known = sorted(p.stem for p in (root / "releases").glob("*.yaml"))
        raise RepriseError(
            f"There is no release {version} (no {path.relative_to(root)}).",
            f"name one of: {', '.join(known) or '(none yet: make release PART=...)'}.",
        )
    return yaml.safe_load(path.read_text())


def dump(manifest: dict[str, Any], path: Path) -> None:
    """Write ``manifest`` to ``path``, every URI in it stripped of its credentials: a manifest is
    committed and pushed, and a rerun takes credentials from git (helper, GIT_ASKPASS, netrc)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = without_credentials(manifest)
    path.write_text(yaml.dump(clean, Dumper=_PlainDumper, sort_keys=False, width=100))


class _PlainDumper(yaml.SafeDumper):
    """Plain YAML for people to read: a value met twice is written twice, never as an anchor
    (``&id001``) and an alias (``*id001``)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def tracking_record(uri: str) -> str:
    """The tracking store as a manifest records it: a server's URI without credentials; for a store
    on the cutting machine's disk (sqlite, a folder) only its kind, as its path means nothing
    on another machine."""
    scheme = uri.partition("://")[0] if "://" in uri else "file"
    if scheme in ("http", "https"):
        return str(without_credentials(uri))
    return f"{scheme} store of the machine that cut the release"


def _git(root: Path, *args: str) -> str | None:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    return result.stdout.strip() if result.returncode == 0 else None


def current_release(root: Path = paths.ROOT) -> dict[str, Any] | None:
    """The manifest of the release this checkout is, or None: HEAD must carry the tag of the
    version in .bumpversion.cfg, that version's manifest must exist, and the tree be clean."""
    config = root / BUMPVERSION_CFG
    if not config.is_file():
        return None
    version = current_version(config)
    if not manifest_path(version, root).is_file():
        return None
    tags = (_git(root, "tag", "--points-at", "HEAD") or "").split()
    if version not in tags:
        return None
    if _git(root, "status", "--porcelain", "--untracked-files=no"):
        log.warning("release %s: the work tree has changes, so this is not a rerun of it", version)
        return None
    return load(version, root)
