"""Reading a logged scikit-learn model without trusting its files: skops only, trusting only the
model group's types as the components list them (components-repo/step_kit/trusted_types.json,
which step_kit.persist reads too), never the ``skops_trusted_types`` a model's MLmodel carries.
"""

from __future__ import annotations

import json
import logging
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from reprise import paths
from reprise.errors import RepriseError

log = logging.getLogger(__name__)

TRUSTED_TYPES_FILE = paths.COMPONENTS_DIR / "step_kit" / "trusted_types.json"


@cache
def trusted_types() -> frozenset[str]:
    """The types beyond skops' defaults that a model of the model group may hold."""
    return frozenset(json.loads(TRUSTED_TYPES_FILE.read_text())["types"])


def _refused(uri: str, cause: str, fix: str) -> RepriseError:
    return RepriseError(f"Model {uri} {cause}; the model is refused.", fix)


def load_sklearn(folder: Path, uri: str) -> Any:
    """The scikit-learn model of the MLflow model in ``folder`` (``uri`` names it in errors),
    read with skops trusting only ``trusted_types()``; RepriseError naming any other type."""
    try:
        flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["sklearn"]
        fmt, name = flavor.get("serialization_format"), flavor["pickled_model"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise RepriseError(
            f"Model {uri} has no readable scikit-learn flavor in its MLmodel file ({err!r}).",
            "log it with mlflow.sklearn.log_model(..., serialization_format='skops').",
        ) from None
    if fmt != "skops":
        # pickle runs whatever code the file holds: no list of types can make it safe
        raise _refused(
            uri,
            f"is stored as {fmt!r}, not skops",
            "log it again with mlflow.sklearn.log_model(..., serialization_format='skops').",
        )
    path = (folder / str(name)).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise _refused(uri, f"names a model file outside its folder ({name!r})", "log it again.")
    trusted = trusted_types()
    import skops.io as sio

    try:
        found = sio.get_untrusted_types(file=path)
        foreign = sorted(set(found) - trusted)
        if foreign:
            raise _refused(
                uri,
                f"holds {', '.join(foreign)}, outside the trusted types of the model group",
                "serve a model trained by the model group's estimators; a new type is trusted "
                f"only once reviewed and added to {TRUSTED_TYPES_FILE.name} in step_kit.",
            )
        model = sio.load(path, trusted=found)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise RepriseError(
            f"Model {uri}: its skops file {name} cannot be read ({err}).",
            "log the model again; the file is damaged or not a skops file.",
        ) from None
    listed = sorted(set(flavor.get("skops_trusted_types") or []) - trusted)
    if listed:  # harmless while the file holds none of them, but someone edited it
        log.warning("model %s: its MLmodel file trusts %s too; ignored", uri, ", ".join(listed))
    return model
