"""A content-addressed cache of per-record signal arrays (reference models' logits), beside the run store.

Training reference models is the expensive part of a membership audit; their logits on a record pool depend only
on the pool's content, the membership matrix, the architecture and the training recipe. The audit hashes exactly
those into a key and keeps the arrays as ``<key>.npz`` (loaded without pickle), so a second attack or a re-run
with the same data and settings costs no training and no forward pass.

>>> import tempfile, pathlib
>>> cache = SignalCache(pathlib.Path(tempfile.mkdtemp()))
>>> key = cache_key({"pool": "abc", "models": 2})
>>> cache.load(key) is None
True
>>> cache.save(key, {"logits": np.zeros((2, 3), np.float32)})
>>> cache.load(key)["logits"].shape
(2, 3)
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from modelsec.core.errors import StoreError, printable

CACHE_FORMAT = 1  # bump when what the arrays mean changes, so that old entries are never misread


def cache_key(parts: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``parts`` (and the cache format)."""
    text = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class SignalCache:
    """``<directory>/<key>.npz`` files; a corrupt or unreadable entry counts as missing."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()

    def __repr__(self) -> str:
        return f"SignalCache({str(self.directory)!r})"

    def _path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.directory / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError):
            return None

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Write atomically (a temporary file renamed into place)."""
        path = self._path(key)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".npz.tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, path)
        except OSError as exc:
            raise StoreError(f"cannot write the signal cache {self.directory}: {printable(exc)}") from exc
