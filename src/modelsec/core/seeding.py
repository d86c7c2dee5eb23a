"""Explicit seeds without touching anyone's global random state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


@contextlib.contextmanager
def seeded(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Run a block whose library code draws from torch's global generator (layer initialisation, or a model that
    draws its own noise) with ``seed``, restoring the caller's global state afterwards (``torch.random.fork_rng``).
    On a CUDA ``device`` that device's generator is seeded and restored too; no other generator is touched."""
    dev = torch.device(device)
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(int(seed))
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(int(seed))
        yield
