"""Every path of the platform, derived from one root and two environment variables."""

from __future__ import annotations

import os
from pathlib import Path

# The repository root: the folder that holds project/, components-repo/ and reprise/.
ROOT = Path(__file__).resolve().parent.parent
PROJECT_DIR = ROOT / "project"
COMPONENTS_DIR = ROOT / "components-repo"
RELEASES_DIR = ROOT / "releases"


def state_dir() -> Path:
    """Where local run state goes (sqlite store, artifacts, W&B offline runs): REPRISE_STATE_DIR,
    else the repository root."""
    return Path(os.environ.get("REPRISE_STATE_DIR") or ROOT).resolve()


def cache_dir() -> Path:
    """Where fetched component checkouts are kept: REPRISE_CACHE_DIR, else ~/.cache/reprise."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reprise"
    return Path(os.environ.get("REPRISE_CACHE_DIR") or default).resolve()
