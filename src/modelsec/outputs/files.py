"""Writing files atomically, one at a time or as the files of a run's folder.

Every file a run writes goes first to a hidden temporary file beside it (``.NAME.tmp``) and is renamed into place
(``os.replace``, atomic on POSIX file systems) once complete: a crash, a kill or a full disk never leaves half a
``result.json`` or a truncated ``adversarial.npz`` under the final name, and a file from an earlier run stays whole
until its replacement is. Files are created with the process's umask, as ``open`` would.

>>> import tempfile
>>> folder = OutputFolder(Path(tempfile.mkdtemp()) / "run")
>>> path = folder.write_text("result", "result.json", '{"ok": true}\\n')
>>> path.read_text(), sorted(folder.files), sorted(p.name for p in folder.path.iterdir())
('{"ok": true}\\n', ['result'], ['result.json'])
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

Writer = Callable[[BinaryIO], object]
"""Writes a file's bytes to the open (binary) file it is given (what it returns is ignored)."""


def write_atomically(path: str | Path, write: Writer) -> Path:
    """Write ``path`` with ``write`` (given the open temporary file) and rename it into place; return the path.

    The folder must exist. On any error the temporary file is removed and ``path`` is left as it was.
    """
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with tmp.open("wb") as f:
            write(f)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


class OutputFolder:
    """The folder one run writes into: created on the first write, every file written atomically
    (:func:`write_atomically`), and :attr:`files` mapping each file's key (``"result"``, ``"report"``, ...) to its
    path, in the order written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.files: dict[str, Path] = {}

    def write(self, key: str, name: str, write: Writer) -> Path:
        """Write the file ``name`` in the folder with ``write`` and list it under ``key``."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.files[key] = write_atomically(self.path / name, write)
        return self.files[key]

    def write_text(self, key: str, name: str, text: str) -> Path:
        """Write ``text`` as UTF-8 (line endings unchanged) to the file ``name`` and list it under ``key``."""
        data = text.encode("utf-8")
        return self.write(key, name, lambda f: f.write(data))
