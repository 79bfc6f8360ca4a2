"""`reprise new-component NAME`: a new component folder in the shape of the others, all or nothing.

The folder is written inside a scratch folder of the components folder (``.reprise-new/``, owned
by this process) and renamed into place at the end, so a component folder either exists whole or
not at all; a scratch folder left by a killed command is removed by the next one.
"""

from __future__ import annotations

import errno
import json
import keyword
import logging
import os
import re
import shutil
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from string import Template

from reprise import owners, paths
from reprise.errors import RepriseError

log = logging.getLogger(__name__)

# Lower snake case: a letter, then letters and digits in words joined by single underscores. The
# name is a folder, a module prefix, an MLflow #subdirectory (no '.') and a run name.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
MAX_NAME_LENGTH = 40  # keeps every generated line within ruff's 100 columns
SCRATCH = ".reprise-new"
# What a component needs at the least: step_kit's own imports (mlflow, pyarrow for Parquet, yaml,
# wandb) and pandas for the logic. Its lock is copied from a component that locks these.
BASE_REQUIREMENTS = frozenset({"mlflow", "pandas", "pyarrow", "pyyaml", "wandb"})
ENVIRONMENT_FILES = ("python_env.yaml", "requirements.txt")

MLPROJECT = Template("""\
name: $name
description: TODO say what $name does. For now it passes its input table through and counts its rows.
python_env: python_env.yaml

entry_points:
  main:
    parameters:
      input_artifact:
        type: string
        description: URI of the input table, an output of an earlier step (runs:/<run id>/<file>).
      input_sha256:
        type: string
        default: ""
        description: Expected sha256 of the input table; the step fails if the downloaded file differs. Empty to skip.
      example:
        type: string
        default: "?"
        description: An example parameter, the value whose cells are counted; replace it with the step's own.
    # --name={name}: MLflow quotes each value into one word, and '=' keeps a value that starts
    # with '-' (or is '--') the flag's own.
    command: >-
      python run.py --input_artifact={input_artifact} --input_sha256={input_sha256}
      --example={example}
""")

REQUIREMENTS_IN = Template("""\
# Direct imports of $name; the lock requirements.txt is made by `make lock` (uv pip compile).
$packages
""")

RUN_PY = Template('''\
"""$name: log the input table as output ${name}_data, with counts of what it holds."""

from pathlib import Path

from step_kit import Step
from step_kit.cli import parse_args

from ${name}_logic import transform

HERE = Path(__file__).resolve().parent
OUTPUT = "${name}_data"


def main() -> None:
    args = parse_args(HERE)
    with Step("$name", vars(args)) as step:
        frame = step.input_table(args.input_artifact, args.input_sha256)
        result, counts = transform(frame, args.example)
        step.log_metrics(counts)
        step.output_table(OUTPUT, result, f"{OUTPUT}.parquet")


if __name__ == "__main__":
    main()
''')

LOGIC_PY = Template('''\
"""Pure logic of $name: a table in, a table and counts out. Replace transform with the step's own;
raise step_kit.StepError(cause, fix) for a problem the user can fix."""

from __future__ import annotations

import pandas as pd


def transform(frame: pd.DataFrame, example: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Return the rows unchanged (a fresh index) and counts: rows, cells equal to ``example``."""
    counts = {
        "rows": len(frame),
        "cells_equal_example": int(frame.astype("string").eq(example).sum().sum()),
    }
    return frame.reset_index(drop=True), counts
''')

CONFTEST_PY = Template('''\
"""pytest puts this folder on the import path (a conftest.py outside a package), so the tests of
$name import ${name}_logic as run.py does, whichever folder pytest runs from."""
''')

TEST_PY = Template('''\
"""$name: the rows pass through unchanged and are counted."""

from __future__ import annotations

import pandas as pd
from ${name}_logic import transform


def test_rows_pass_through_and_are_counted() -> None:
    frame = pd.DataFrame({"size": [3, 5, 8], "colour": ["?", "red", "?"]}, index=[7, 3, 9])
    result, counts = transform(frame, "?")
    expected = frame.reset_index(drop=True)
    pd.testing.assert_frame_equal(result, expected)
    assert counts == {"rows": 3, "cells_equal_example": 2}
    assert frame.index.tolist() == [7, 3, 9]  # the input is left as it was


def test_missing_values_and_an_empty_table() -> None:
    frame = pd.DataFrame({"a": ["?", None, "x"], "b": [1.0, None, 2.0]})
    assert transform(frame, "?")[1] == {"rows": 3, "cells_equal_example": 1}
    result, counts = transform(frame.head(0), "?")
    assert result.empty
    assert counts == {"rows": 0, "cells_equal_example": 0}
''')


@dataclass(frozen=True)
class Created:
    """A component written by ``create``: its folder, its files and whose lock it copied."""

    folder: Path
    files: list[str]
    logic_module: str
    output: str
    environment_from: str


def check_name(name: str) -> None:
    """Refuse a name that is not a short lower-snake-case Python identifier."""
    shown = repr(name[:60]) + ("..." if len(name) > 60 else "")
    fix = (
        "name it in lower snake case: a letter, then letters, digits and single underscores, "
        f"at most {MAX_NAME_LENGTH} characters (e.g. feature_engineering)."
    )
    if not NAME_PATTERN.fullmatch(name) or keyword.iskeyword(name):
        raise RepriseError(
            f"Component name {shown} is not a lower-snake-case Python identifier.", fix
        )
    if len(name) > MAX_NAME_LENGTH:
        raise RepriseError(
            f"Component name {shown} is {len(name)} characters long, over {MAX_NAME_LENGTH}.", fix
        )


def create(name: str, components_dir: Path = paths.COMPONENTS_DIR) -> Created:
    """Write ``components_dir/name/`` (MLproject, environment, run.py, logic, tests), whole or not
    at all; refuse a bad name, an existing one and a missing components folder."""
    check_name(name)
    components = Path(components_dir).absolute()
    if not components.is_dir():
        raise RepriseError(
            f"Components folder {components} does not exist.",
            "run from a Reprise checkout (it holds components-repo/) or pass --components-dir.",
        )
    target = components / name
    if target.exists() or target.is_symlink():
        raise _taken(target)
    source = environment_source(components)
    try:
        files = _write_whole(target, name, source)
    except OSError as err:
        if target.exists() or target.is_symlink():  # taken while the component was written
            raise _taken(target) from None
        raise RepriseError(
            f"Component {name} cannot be written in {components}: {err.strerror or err}.",
            "make that folder writable, or pass --components-dir with one that is.",
        ) from None
    log.info("wrote component %s in %s", name, target)
    return Created(target, files, f"{name}_logic.py", f"{name}_data", source.name)


def _taken(target: Path) -> RepriseError:
    return RepriseError(
        f"{target} exists already; it is left as it is.",
        "choose another name, or remove that folder first if it is yours to remove.",
    )


def _write_whole(target: Path, name: str, source: Path) -> list[str]:
    """Write the component in a scratch folder beside ``target`` and rename it into place."""
    scratch_root = target.parent / SCRATCH
    scratch_root.mkdir(exist_ok=True)
    owners.remove_dead_scratch(scratch_root)  # what a killed command left
    scratch = Path(tempfile.mkdtemp(prefix=f"reprise-new-{os.getpid()}-", dir=scratch_root))
    try:
        (scratch / owners.OWNER_FILE).write_text(json.dumps(owners.this_process().tags()))
        built = scratch / name
        files = _write(built, name, source)
        if target.exists() or target.is_symlink():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
        built.rename(target)  # refused when a file or a folder with files took the name meanwhile
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        with suppress(OSError):  # removed only when no other command is writing a component
            scratch_root.rmdir()
    return files


def environment_source(components: Path) -> Path:
    """The component whose lock the new one copies: one whose requirements.in lists exactly the
    base requirements, else the one listing fewest packages beyond them (by name on a tie)."""
    candidates = []
    for requirements in sorted(components.glob("*/requirements.in")):
        folder = requirements.parent
        if not all((folder / f).exists() for f in ENVIRONMENT_FILES):
            continue
        packages = set(_packages(requirements.read_text()))
        if packages >= BASE_REQUIREMENTS:
            candidates.append((len(packages), folder.name, folder))
    if not candidates:
        raise RepriseError(
            f"No component in {components} has a locked environment (python_env.yaml, "
            f"requirements.txt) with {', '.join(sorted(BASE_REQUIREMENTS))}.",
            "add a component with that environment (make lock writes its requirements.txt).",
        )
    return min(candidates)[2]


def _packages(requirements_in: str) -> list[str]:
    """The package names of a requirements.in (comments and blank lines left out)."""
    lines = (line.split("#", 1)[0].strip() for line in requirements_in.splitlines())
    return [re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0].lower() for line in lines if line]


def _write(folder: Path, name: str, source: Path) -> list[str]:
    """Write the component's files into ``folder``; return their paths relative to it."""
    (folder / "tests").mkdir(parents=True)
    # relative, as the others: it resolves once the folder sits beside step_kit
    (folder / "step_kit").symlink_to(Path("..") / "step_kit")
    texts = {
        "MLproject": MLPROJECT,
        "requirements.in": REQUIREMENTS_IN,
        "run.py": RUN_PY,
        f"{name}_logic.py": LOGIC_PY,
        "conftest.py": CONFTEST_PY,
        f"tests/test_{name}_logic.py": TEST_PY,
    }
    packages = "\n".join(sorted(BASE_REQUIREMENTS))
    for relative, template in texts.items():
        (folder / relative).write_text(template.substitute(name=name, packages=packages))
    for relative in ENVIRONMENT_FILES:  # the same pins as the source: the lock stays consistent
        (folder / relative).write_bytes((source / relative).read_bytes())
    return sorted([*texts, *ENVIRONMENT_FILES, "step_kit"])
