"""Helpers the benchmark scripts share: importing ART without writing to $HOME, and a stopwatch."""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any


def import_art(*submodules: str) -> Any:
    """Import ART and ``art.<submodule>`` for each name given, with HOME pointed at a temporary folder
    (``art.config`` creates ``~/.art`` on import) and matplotlib's config folder at another (ART imports
    matplotlib where it is installed)."""
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="modelsec-bench-mpl-"))
    saved = os.environ.get("HOME")
    os.environ["HOME"] = tempfile.mkdtemp(prefix="modelsec-bench-art-")
    try:
        import art

        for name in submodules:
            importlib.import_module(f"art.{name}")
    finally:
        if saved is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved
    return art


@contextlib.contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["seconds"]``: wall time of the block."""
    box: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - start
