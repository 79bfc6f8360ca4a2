"""A Hydra config node as plain Python: OmegaConf's ``to_container`` may return a dict, a list, a
string or None, and a caller that needs settings by name narrows it here, once."""

from __future__ import annotations

from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf

from reprise.errors import RepriseError


def plain_dict(node: DictConfig | ListConfig, where: str) -> dict[str, Any]:
    """The settings of ``node`` (the config's ``where``), resolved, as a dict keyed by name."""
    value = OmegaConf.to_container(node, resolve=True)
    if not isinstance(value, dict):
        raise RepriseError(
            f"{where} is a {type(value).__name__}, where settings by name were expected.",
            f"write {where} as a mapping (name: value lines) in the config.",
        )
    if others := [key for key in value if not isinstance(key, str)]:
        raise RepriseError(
            f"{where} has keys that are not names: {', '.join(map(repr, others))}.",
            f"quote those keys of {where} in the config.",
        )
    # every key was checked to be a str just above
    return cast(dict[str, Any], value)
