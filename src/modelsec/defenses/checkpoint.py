"""Resumable per-epoch training checkpoints, beside the output as ``OUT.ckpt``.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python values, so it is read back with
``torch.load(weights_only=True)`` (no pickle code runs)::

    {
        "format": "modelsec-training-checkpoint",
        "version": 1,
        "run": {...},        # what identifies the run: defense, config, architecture, data hash, ...
        "state": {...},      # TrainingState.state_dict(): epoch, model, optimizer, scheduler, generators,
                             # history, extra (a defense's own state, e.g. its best weights)
    }

It is written atomically (a temporary file renamed into place) after every epoch, resumed only when its ``run``
equals the new run's, refused with a message naming what differs otherwise, and deleted once the model is saved.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from modelsec.errors import ConfigError, printable
from modelsec.training import TrainingState

CHECKPOINT_FORMAT = "modelsec-training-checkpoint"
CHECKPOINT_VERSION = 1


def checkpoint_path(out: Path) -> Path:
    """Where the checkpoint of a run writing ``out`` lives: ``OUT.ckpt``."""
    return out.with_name(out.name + ".ckpt")


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


class Checkpoint:
    """The checkpoint file of one run, identified by ``run`` (a JSON-like dict of plain values)."""

    def __init__(self, path: Path, run: dict[str, Any]) -> None:
        self.path = Path(path)
        self.run = run

    def load(self) -> dict[str, Any] | None:
        """The saved training state if a checkpoint of this same run exists, ``None`` if there is none; a
        :class:`ConfigError` if it belongs to another run or cannot be read."""
        if not self.path.exists():
            return None
        hint = f"delete {self.path} or pass --no-resume (resume=False) to start over"
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated file, or one that is not a plain-data checkpoint
            raise ConfigError(
                f"cannot read the checkpoint {self.path} ({type(e).__name__}: {printable(e, 200)}); {hint}"
            ) from None
        if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{self.path} is not a modelsec training checkpoint; {hint}")
        if saved.get("version") != CHECKPOINT_VERSION:
            raise ConfigError(
                f"{self.path} is a version {saved.get('version')} checkpoint; this modelsec reads version "
                f"{CHECKPOINT_VERSION}; {hint}"
            )
        differ = _differences(saved.get("run"), self.run)
        if differ:
            raise ConfigError(
                f"{self.path} is the checkpoint of a different run (it differs in {', '.join(differ)}); "
                f"resuming needs the same defense, configuration and data; {hint}"
            )
        state = saved["state"]
        return dict(state)

    def save(self, state: TrainingState) -> None:
        """Write the state after an epoch, atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "run": self.run,
            "state": state.state_dict(),
        }
        torch.save(payload, tmp)
        os.replace(tmp, self.path)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)
