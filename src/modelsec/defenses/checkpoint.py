"""Resumable per-epoch training checkpoints, beside the output as ``OUT.ckpt``.

A :class:`~modelsec.store.checkpoint.CheckpointFile` (one ``torch.save`` file of tensors and plain values, read
with ``torch.load(weights_only=True)``) whose state is ``TrainingState.state_dict()``: epoch, model, optimizer,
scheduler, generators, history, extra (a defense's own state, e.g. its best weights). Its ``run`` identifies the
training: defense, config, architecture, data hash, ... It is written atomically after every epoch, resumed only
when its ``run`` equals the new run's, refused with a message naming what differs otherwise, and deleted once the
model is saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelsec.defenses.training import TrainingState
from modelsec.store.checkpoint import CheckpointFile

CHECKPOINT_FORMAT = "modelsec-training-checkpoint"
CHECKPOINT_VERSION = 1


def checkpoint_path(out: Path) -> Path:
    """Where the checkpoint of a run writing ``out`` lives: ``OUT.ckpt``."""
    return out.with_name(out.name + ".ckpt")


class Checkpoint(CheckpointFile):
    """The checkpoint file of one training run, identified by ``run`` (a JSON-like dict of plain values)."""

    def __init__(self, path: Path, run: dict[str, Any]) -> None:
        super().__init__(
            path,
            run,
            format=CHECKPOINT_FORMAT,
            version=CHECKPOINT_VERSION,
            needs="the same defense, configuration and data",
        )

    def save(self, state: TrainingState) -> None:
        """Write the state after an epoch, atomically."""
        self.write(state.state_dict())
