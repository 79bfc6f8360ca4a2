"""Models stored with skops, never pickle: the types a file may hold are checked, not trusted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from step_kit.errors import StepError

# Beyond skops' own defaults, only scikit-learn's types and numpy's dtype are ever trusted when
# loading: never a function (numpy.load, say) or a type from anywhere else.
TRUSTED_PACKAGES = ("sklearn.",)
TRUSTED_TYPES = ("numpy.dtype",)


def _vet(types: list[str], what: str) -> list[str]:
    foreign = [t for t in types if not (t.startswith(TRUSTED_PACKAGES) or t in TRUSTED_TYPES)]
    if foreign:
        raise StepError(
            f"{what} holds types outside scikit-learn: {foreign}.",
            "store only scikit-learn estimators; these types would run code on loading.",
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
    """Read a skops file, trusting only scikit-learn types and numpy.dtype."""
    import skops.io as sio

    types = _vet(sio.get_untrusted_types(file=path), f"Model file {Path(path).name}")
    return sio.load(path, trusted=types)
