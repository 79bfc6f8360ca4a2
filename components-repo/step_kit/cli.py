"""Command-line arguments of a component, read from its MLproject.

The MLproject is the one place where a parameter's name, type, default and description live; the
thin run.py of each component gets the same flags from it, so `python run.py --help` and
`mlflow run` can never disagree.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from step_kit.errors import StepError

import yaml

_TYPES = {"string": str, "str": str, "path": str, "uri": str, "float": float, "int": int}


def parse_args(component_dir: Path, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``--name value`` flags for the ``main`` entry point of the MLproject in component_dir."""
    spec = yaml.safe_load((component_dir / "MLproject").read_text())
    parser = argparse.ArgumentParser(prog=spec["name"], description=spec.get("description"))
    kinds = {}
    for name, param in spec["entry_points"]["main"].get("parameters", {}).items():
        kind = kinds[name] = _TYPES[param.get("type", "string")]
        default = param.get("default")
        parser.add_argument(
            f"--{name}",
            type=kind,
            required=default is None,
            default=None if default is None else kind(default),
            help=param.get("description", ""),
        )
    args = parser.parse_args(argv)
    for name, value in vars(args).items():
        if value == []:  # Python < 3.12 drops the value of --name=-- (a separator, it thinks)
            try:
                setattr(args, name, kinds[name]("--"))
            except ValueError:
                parser.error(f"argument --{name}: invalid {kinds[name].__name__} value: '--'")
    return args


def json_param(name: str, text: str) -> Any:
    """Decode a JSON-valued parameter; a syntax error names the parameter."""
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as err:
        raise StepError(
            f"Parameter '{name}' is not valid JSON ({err.msg} at char {err.pos}): {text[:80]!r}.",
            f"pass '{name}' as a JSON object, as the project's orchestrator builds it from config.",
        ) from None


def flag_param(name: str, text: str) -> bool:
    """A yes/no parameter: true/false (any case; 1/0 too), as a config boolean arrives."""
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise StepError(
        f"Parameter '{name}' is {text[:40]!r}, not true or false.", f"pass {name}=true or false."
    )
