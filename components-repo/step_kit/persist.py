"""Models stored with skops, never pickle: the types a file may hold are checked, not trusted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from step_kit.errors import StepError

# The file, not a model's MLmodel, says which types beyond skops' defaults are trusted: the
# exact types the model group needs (reprise's serving reads the same file, so one list).
TRUSTED_TYPES_FILE = Path(__file__).resolve().with_name("trusted_types.json")
TRUSTED_TYPES: frozenset[str] = frozenset(json.loads(TRUSTED_TYPES_FILE.read_text())["types"])


def _vet(types: list[str], what: str) -> list[str]:
    foreign = sorted(set(types) - TRUSTED_TYPES)
    if foreign:
        raise StepError(
            f"{what} holds {', '.join(foreign)}, outside the trusted types of the model group; "
            "the model is refused.",
            "use an estimator of the model group; a new type is trusted only once reviewed and "
            f"added to {TRUSTED_TYPES_FILE.name} in step_kit.",
        )
    return types


def trusted_types(model: Any) -> list[str]:
    """The types skops does not trust by default that ``model`` holds; all must be vetted."""
    import skops.io as sio

    return _vet(sio.get_untrusted_types(data=sio.dumps(model)), f"Model {type(model).__name__}")


def save(model: Any, path: Path) -> Path:
    """Write ``model`` to ``path`` in the skops format."""
    import skops.io as sio

    trusted_types(model)
    sio.dump(model, path)
    return path


def load(path: Path) -> Any:
    """Read a skops file, trusting only the model group's types (TRUSTED_TYPES)."""
    return _read(Path(path), f"Model file {Path(path).name}")


def load_logged(uri: str) -> Any:
    """The scikit-learn model MLflow logged at ``uri`` (models:/, runs:/ or a folder), read as
    ``load`` reads a file: never trusting the types its MLmodel file lists, as MLflow does."""
    import mlflow
    import yaml

    folder = Path(mlflow.artifacts.download_artifacts(uri)).resolve()
    try:
        flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["sklearn"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise StepError(
            f"Model {uri} has no readable scikit-learn flavor in its MLmodel file ({err!r}).",
            "pass the models:/ URI of a model logged with mlflow.sklearn.log_model.",
        ) from None
    path = (folder / str(flavor.get("pickled_model", ""))).resolve()
    if flavor.get("serialization_format") != "skops" or not path.is_relative_to(folder):
        # pickle runs whatever code the file holds: no list of types makes it safe
        raise StepError(
            f"Model {uri} is not a skops file inside its folder "
            f"({flavor.get('serialization_format')!r}, {flavor.get('pickled_model')!r}); "
            "the model is refused.",
            "log it with mlflow.sklearn.log_model(..., serialization_format='skops').",
        )
    return _read(path, f"Model {uri}")


def _read(path: Path, what: str) -> Any:
    import skops.io as sio

    return sio.load(path, trusted=_vet(sio.get_untrusted_types(file=path), what))
