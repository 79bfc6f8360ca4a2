"""Which files a registered model version is, read straight from the embedded sqlite store.

Importing MLflow and opening its store costs seconds; a batch command that scores a model it has
scored before needs only the version's artifact folder (whose compiled scorer is then found on
local disk by content). So for a ``sqlite:///`` store whose artifacts are local files, the two
registry tables are read with sqlite3, read-only. Anything else (a tracking server, remote
artifacts, a store whose tables look different) answers None, and the caller asks MLflow.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from reprise import tracking

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalVersion:
    name: str
    version: str
    artifacts: Path  # the folder of the model's files (MLmodel, model.skops, ...)


def local_version(
    name: str, version: str | None = None, alias: str | None = None
) -> LocalVersion | None:
    """The READY version ``version`` (or the one ``alias`` points to) of model ``name``, when the
    store is a local sqlite file and the version's files are on this disk; None otherwise."""
    uri = tracking.store_uri()
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))
    if not database.is_file():
        return None
    try:
        with sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True) as db:
            if alias is not None:
                rows = db.execute(
                    "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
                    (name, alias),
                ).fetchall()
                if len(rows) != 1:
                    return None
                version = str(rows[0][0])
            rows = db.execute(
                "SELECT storage_location, status FROM model_versions "
                "WHERE name = ? AND version = ?",
                (name, int(version or "")),
            ).fetchall()
    except (sqlite3.Error, ValueError) as err:
        log.debug("registry of %s not read directly (%s); asking MLflow", database, err)
        return None
    if len(rows) != 1 or rows[0][1] != "READY" or not rows[0][0]:
        return None
    location = urlparse(rows[0][0])
    if location.scheme != "file" or location.netloc:
        return None
    artifacts = Path(unquote(location.path))
    if not (artifacts / "MLmodel").is_file():
        return None
    return LocalVersion(name, str(version), artifacts)
