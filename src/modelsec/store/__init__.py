"""The SQLite run store: every audit, its result and the hashes of the files it wrote.

The store lives at :func:`default_store_path` unless a path is given: ``$MODELSEC_STORE`` if set,
else ``$XDG_DATA_HOME/modelsec/runs.sqlite``, else ``~/.local/share/modelsec/runs.sqlite``.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelsec.store.cache import SignalCache, cache_key
from modelsec.store.runs import (
    STORE_VERSION,
    ArtifactRecord,
    RunStore,
    RunSummary,
    StoredRun,
    new_run_id,
)

__all__ = [
    "STORE_VERSION",
    "ArtifactRecord",
    "RunStore",
    "RunSummary",
    "SignalCache",
    "StoredRun",
    "cache_key",
    "default_store_path",
    "new_run_id",
]


def default_store_path() -> Path:
    """Where the run store lives when no path is given.

    ``$MODELSEC_STORE`` (a file path) if set and not empty; else ``runs.sqlite`` in
    ``$XDG_DATA_HOME/modelsec`` when ``XDG_DATA_HOME`` is an absolute path (the XDG spec says to
    ignore a relative one); else in ``~/.local/share/modelsec``.
    """
    explicit = os.environ.get("MODELSEC_STORE", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "modelsec" / "runs.sqlite"
