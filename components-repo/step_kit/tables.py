"""Reading tables and digesting files, with errors that name the file and the fix."""

from __future__ import annotations

import hashlib
from pathlib import Path

from step_kit.errors import StepError

import pandas as pd

TABLE_SUFFIXES = (".parquet", ".csv")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def frame_digest(frame: pd.DataFrame) -> str:
    """A digest of a table's content: the same columns in the same order with the same dtypes
    and the same values row by row give the same digest, whatever file format held them."""
    digest = hashlib.sha256()
    for column, dtype in frame.dtypes.items():
        digest.update(f"{column}\x1f{dtype}\x1e".encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def array_digest(*arrays) -> str:
    """A digest of numeric arrays' exact values (dtype, shape and bytes): a model's predictions."""
    import numpy as np

    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}\x1e".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def table_suffix(name: str) -> str:
    """The table format of a file name (``.parquet`` or ``.csv``), or a StepError."""
    for suffix in TABLE_SUFFIXES:
        if name.lower().endswith(suffix) or name.lower().endswith(suffix + ".brotli"):
            return suffix
    raise StepError(
        f"'{name}' is neither a Parquet nor a CSV file.",
        "give a file whose name ends in .parquet or .csv.",
    )


def read_table(path: str | Path, name: str = "") -> pd.DataFrame:
    """Read a Parquet or CSV file, turning a missing or corrupt file into a StepError that names
    the file as the user knows it (``name``, else the path)."""
    path = Path(path)
    name = name or str(path)
    if not path.is_file():
        raise StepError(f"Data file {name} does not exist.", "check the path or sample name.")
    suffix = table_suffix(path.name)
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        # Read every column as text first: a CSV has no types; cleaning enforces them.
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:  # pyarrow and the csv parser raise many types for a bad file
        raise StepError(
            f"Data file {name} cannot be read as {suffix[1:]}: {type(err).__name__}: {err}".strip(),
            "replace the file with an intact copy (compare its sha256 with DATA.md).",
        ) from None
