"""Helpers shared by every component of this repository.

Each component folder links to this package (``<component>/step_kit -> ../step_kit``), so the one
copy here reaches every component, also in a checkout fetched from a remote, without an install.
"""

from step_kit.startup import imports_paused

with imports_paused():  # mlflow, pandas, pyarrow: see step_kit/startup.py
    from step_kit.errors import StepError
    from step_kit.schema import Schema
    from step_kit.step import Step
    from step_kit.tables import read_table, sha256_file

__all__ = ["Schema", "Step", "StepError", "read_table", "sha256_file"]
