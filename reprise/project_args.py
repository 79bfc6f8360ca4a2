"""main.py's command line (`python main.py --steps=... --hydra_options=...`, from the project's
MLproject) turned into Hydra's arguments with no shell on the way: each MLproject parameter
reaches main.py as one argv word, and its text reaches Hydra as data, never as syntax."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from reprise.errors import RepriseError

# main.py's own flags; every other word of its command line is Hydra's
MAIN_FLAGS = ("steps", "hydra_options")


def split_options(text: str, name: str = "hydra_options") -> list[str]:
    """The Hydra arguments in ``text`` (the setting ``name``), split as a POSIX shell splits words
    (quotes group, a backslash escapes) but never expanded: no variables, commands or globs."""
    try:
        return shlex.split(text)
    except ValueError as err:
        raise RepriseError(
            f"{name} could not be split into Hydra overrides ({err}): {text[:80]!r}.",
            "close the quote, or escape a literal quote with a backslash.",
        ) from None


def quote_value(value: str) -> str:
    """``value`` as a quoted Hydra override value that OmegaConf reads back unchanged: quotes and
    the backslashes before them escaped for Hydra, ``${`` escaped so that it is never resolved
    (an interpolation such as ``${oc.env:SECRET}`` in user text would be read out)."""
    # OmegaConf: "\${" is a literal "${", and backslashes right before it must be doubled
    text = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
    # Hydra's quoted values: backslashes before a quote or at the end are escapes
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return f"'{text}'"


def steps_override(steps: str) -> str:
    """The Hydra override that selects ``steps`` (a comma-separated list, never a sweep)."""
    return f"main.steps={quote_value(steps)}"


def hydra_arguments(argv: Sequence[str]) -> list[str]:
    """Hydra's command line for main.py's ``argv``: words other than ``--steps=STEPS`` and
    ``--hydra_options=OPTIONS`` pass through as they are, then the options split into overrides,
    then the steps (when given, they override any main.steps before them)."""
    # not argparse: before Python 3.12 it reads the value of --steps=-- as nothing
    flags: dict[str, str] = {}
    hydra_own = []
    for word in argv:
        name, equals, value = word[2:].partition("=")
        if word.startswith("--") and name in MAIN_FLAGS:
            if not equals:
                raise RepriseError(
                    f"main.py got {word} without a value.", f"pass it as {word}=VALUE (with '=')."
                )
            flags[name] = value
        else:
            hydra_own.append(word)
    steps = [steps_override(flags["steps"])] if "steps" in flags else []
    return [*hydra_own, *split_options(flags.get("hydra_options", "")), *steps]
