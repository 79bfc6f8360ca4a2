"""The pipeline's process starts quickly: the collector stays out of the way of its imports.

Hydra, MLflow, pandas and scikit-learn make about a million objects as they import, none of them
garbage, and CPython 3.11's collector, which runs every 700 new objects, walks the growing heap
again and again. With it paused for the imports and what they made set aside (``gc.freeze``:
never walked again, also not at exit), project/main.py imports in 1.0 s of CPU instead of 1.5 s.
The steps do the same through their own step_kit (components-repo/step_kit/startup.py), whose
``imports_paused`` is this one line for line (tests/unit/test_tags.py checks): the components
repository stands alone, so neither can import the other.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def imports_paused() -> Iterator[None]:
    """Pause the collector for the block (imports), then set aside what it made and resume."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
