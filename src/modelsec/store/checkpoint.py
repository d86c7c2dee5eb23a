"""A checkpoint file: one ``torch.save`` file of tensors and plain values, tied to the run that wrote it.

Shared by resumable training (:mod:`modelsec.defenses.checkpoint`) and resumable audits
(:mod:`modelsec.audits.checkpoint`). The file holds::

    {
        "format": "modelsec-...-checkpoint",
        "version": 1,
        "run": {...},     # what identifies the run: plain values (options, hashes, versions)
        "state": {...},   # what the run needs to continue: tensors and plain values
    }

It is read back with ``torch.load(weights_only=True)`` (no pickle code runs), written atomically (a temporary file
renamed into place, so a crash or kill during a write leaves the previous checkpoint intact), resumed only when its
``run`` equals the new run's, refused with a message naming what differs otherwise, and deleted by the run once
its outputs are written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from modelsec.core.errors import ConfigError, printable


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys where two nested dicts of plain values differ.

    >>> differences({"config": {"seed": 0, "eps": [0.1]}, "v": 1}, {"config": {"seed": 1, "eps": [0.1]}, "v": 1})
    ['config.seed']
    """
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            out += differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class CheckpointFile:
    """The checkpoint file of one run.

    Args:
        path: where it lives.
        run: what identifies the run (a JSON-like dict of plain values).
        format: the file's format name (``"modelsec-training-checkpoint"``, ...).
        version: the format's version; a file of another version is refused.
        needs: what resuming needs to be the same, for the message when ``run`` differs ("the same defense,
            configuration and data").
    """

    def __init__(self, path: Path, run: dict[str, Any], *, format: str, version: int, needs: str) -> None:
        self.path = Path(path)
        self.run = run
        self.format = format
        self.version = version
        self.needs = needs

    def load(self) -> dict[str, Any] | None:
        """The saved state if a checkpoint of this same run exists, ``None`` if there is none; a
        :class:`ConfigError` if it belongs to another run or cannot be read (truncated, not a checkpoint)."""
        if not self.path.exists():
            return None
        hint = f"delete {self.path} or pass --no-resume (resume=False) to start over"
        what = self.format.removeprefix("modelsec-").replace("-", " ")
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated file, or one that is not a plain-data checkpoint
            raise ConfigError(
                f"cannot read the checkpoint {self.path} ({type(e).__name__}: {printable(e, 200)}); {hint}"
            ) from None
        if not isinstance(saved, dict) or saved.get("format") != self.format:
            raise ConfigError(f"{self.path} is not a modelsec {what}; {hint}")
        if saved.get("version") != self.version:
            raise ConfigError(
                f"{self.path} is a version {saved.get('version')} checkpoint; this modelsec reads version "
                f"{self.version}; {hint}"
            )
        differ = differences(saved.get("run"), self.run)
        if differ:
            raise ConfigError(
                f"{self.path} is the checkpoint of a different run (it differs in {', '.join(differ)}); "
                f"resuming needs {self.needs}; {hint}"
            )
        if not isinstance(saved.get("state"), dict):
            raise ConfigError(f"{self.path} holds no state; {hint}")
        return dict(saved["state"])

    def write(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        payload = {"format": self.format, "version": self.version, "run": self.run, "state": state}
        torch.save(payload, tmp)
        os.replace(tmp, self.path)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)
