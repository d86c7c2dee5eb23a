"""Audits that survive a crash: the checkpoint ``OUT/audit.ckpt`` and what makes two audits "the same run".

While ``modelsec audit --out OUT`` runs, ``OUT/audit.ckpt`` holds the state of the audit at its last save point
(:mod:`modelsec.core.resume`): which phase (robustness, sanity checks, membership inference), which attack at which
epsilon, which batch, and inside the long attacks which restart, target and iteration, with every array an
uninterrupted run would hold there, the ``torch.Generator`` state and the classifier's query counter. Rerunning
the same command resumes from it and writes the ``result.json`` numbers and ``adversarial.npz`` arrays of an
uninterrupted run, bit for bit on the CPU. :func:`~modelsec.audits.runner.run_audit` leaves the file in place when it
returns; the outputs layer deletes it once ``result.json`` and the other files are written
(:func:`modelsec.outputs.audit.audit_and_write`), so a crash while they are written still resumes.

When it writes: before every attack at every epsilon and between the phases (always), and inside attacks at every
batch and every restart, target and iteration of the attacks, at most once per ``MODELSEC_CHECKPOINT_INTERVAL``
seconds (default 60; 0: at every such point). So an interrupted audit loses at most about that interval plus one
iteration of one attack (one forward/backward pass of a batch), however big the model. The sanity checks after the
attacks (a few short attack runs) are redone from their start when interrupted.

Which checkpoint is the same run (:func:`audit_run_key`): the model (file sha256, or a hash of an ``nn.Module``'s
parameters and buffers, with the classifier's bounds, batch size, capability and preprocessing), the data (the
splits' content hashes, split seed and bounds), every :class:`~modelsec.audits.AuditConfig` field that changes a
number (all but ``workers``), the device, and the modelsec, torch, numpy and Python versions. A checkpoint of
another run is refused with a message naming what differs (as ``modelsec harden`` does): silently starting over
would throw away hours of attacks over a mistyped option, and an explicit ``--no-resume`` (``resume=False``)
says the user means it. A checkpoint that cannot be read (truncated, not a checkpoint) is refused the same way.

Test hooks (environment variables read by the process being tested): after writing a checkpoint whose progress
description contains ``MODELSEC_TEST_KILL_AT``, the process kills itself with SIGKILL; after one containing
``MODELSEC_TEST_PAUSE_AT`` it waits until a signal ends it. The empty string matches the first checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from modelsec.core.errors import ConfigError
from modelsec.core.resume import Payload, Resumer, Tracked
from modelsec.core.version import __version__
from modelsec.models.base import Classifier
from modelsec.results.audit import AuditResult, DataInfo, ModelInfo
from modelsec.store.checkpoint import CheckpointFile

if TYPE_CHECKING:
    from modelsec.audits.runner import AuditConfig

AUDIT_CHECKPOINT_FORMAT = "modelsec-audit-checkpoint"
AUDIT_CHECKPOINT_VERSION = 1
DEFAULT_INTERVAL = 60.0
INTERVAL_VARIABLE = "MODELSEC_CHECKPOINT_INTERVAL"
# AuditConfig fields that change no number: left out of the run key.
_NOT_IN_KEY = ("workers", "executor", "ray_address", "cpus_per_task", "gpus_per_task")


def audit_checkpoint_path(out_dir: str | Path) -> Path:
    """Where the checkpoint of an audit writing to ``out_dir`` lives: ``OUT/audit.ckpt``."""
    return Path(out_dir) / "audit.ckpt"


def checkpoint_interval() -> float:
    """Seconds between checkpoints inside attacks: ``$MODELSEC_CHECKPOINT_INTERVAL``, else 60."""
    raw = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 <= value < float("inf")):
        raise ConfigError(f"{INTERVAL_VARIABLE} must be a number of seconds >= 0, got {raw!r}")
    return value


def module_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's class name and every parameter and buffer (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, t in module.state_dict().items():
        flat = t.detach().cpu().contiguous().flatten()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def audit_run_key(
    config: AuditConfig, model: ModelInfo, data: DataInfo, classifier: Classifier, device: str
) -> dict[str, Any]:
    """What must be equal for a checkpoint to be resumed (see the module docstring); plain values only."""
    preprocess = classifier.preprocess
    options = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_IN_KEY}
    key: dict[str, Any] = {
        "model": {
            "sha256": model.sha256 or module_fingerprint(classifier.module),
            "format": model.format,
            "arch": model.arch,
            "num_classes": classifier.num_classes,
            "input_shape": list(classifier.input_shape),
            "bounds": list(classifier.bounds),
            "batch_size": classifier.batch_size,
            "capability": classifier.capability.name,
            "preprocess": None if preprocess is None else getattr(preprocess, "__qualname__", repr(preprocess)),
            "preprocess_differentiable": classifier.preprocess_differentiable,
        },
        "data": {"name": data.name, "split_seed": data.split_seed, "bounds": data.bounds, "sha256": data.sha256},
        "config": options,
        "device": str(device),
        "versions": {
            "modelsec": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    if model.endpoint is not None:  # a served model has no file: the same service (no parameters to hash)
        key["model"]["endpoint"] = model.endpoint.get("name")
    return dict(json.loads(json.dumps(key)))  # tuples become lists: the key compares as JSON would


class AuditCheckpoint:
    """The checkpoint file of one audit and the :class:`~modelsec.core.resume.Resumer` that writes it."""

    def __init__(self, out_dir: str | Path, run: dict[str, Any]) -> None:
        self.file = CheckpointFile(
            audit_checkpoint_path(out_dir),
            run,
            format=AUDIT_CHECKPOINT_FORMAT,
            version=AUDIT_CHECKPOINT_VERSION,
            needs="the same model, data and options (see `modelsec audit --help`)",
        )
        self.writes = 0
        self.where: str | None = None  # the progress description of the last checkpoint written or resumed
        self.finished: dict[str, Any] | None = None  # a finished audit kept for its caller (see ``keep``)
        self._kill_at = os.environ.get("MODELSEC_TEST_KILL_AT")
        self._pause_at = os.environ.get("MODELSEC_TEST_PAUSE_AT")

    @property
    def path(self) -> Path:
        return self.file.path

    def resumer(self, *, resume: bool, tracked: dict[str, Tracked]) -> Resumer:
        """A resumer that writes this checkpoint: from the saved state when ``resume`` and the file belongs to
        this run (a :class:`ConfigError` when it belongs to another or cannot be read), else from the start
        (an existing file is deleted)."""
        saved = self.file.load() if resume else None
        if not resume:
            self.file.delete()
        if saved is not None and "finished" in saved:
            self.finished = dict(saved["finished"])
            saved = None
        if saved is not None:
            if not (isinstance(saved.get("frames"), list) and isinstance(saved.get("tracked"), dict)):
                raise ConfigError(
                    f"{self.path} holds no audit state; delete it or pass --no-resume (resume=False) to start over"
                )
            self.writes = int(saved.get("writes", 0))
            self.where = str(saved.get("where", ""))
        return Resumer(write=self._write, saved=saved, tracked=tracked, interval=checkpoint_interval())

    def keep(self, result: AuditResult, files: Mapping[str, Path]) -> None:
        """Replace the checkpoint with the finished audit (its result, and the files written for it), for a caller
        that resumes several audits and deletes their checkpoints when all are done (``modelsec compare``)."""
        finished = {"result": json.loads(result.to_json()), "files": {k: str(v) for k, v in files.items()}}
        self.file.write({"finished": finished})  # plain values only

    def delete(self) -> None:
        self.file.delete()

    def _write(self, payload: Payload) -> None:
        self.writes += 1
        self.file.write({**payload, "writes": self.writes})
        self.where = payload["where"]
        if self._kill_at is not None and self._kill_at in self.where:
            os.kill(os.getpid(), signal.SIGKILL)
        if self._pause_at is not None and self._pause_at in self.where:
            while True:  # until a signal ends the process
                time.sleep(1.0)
