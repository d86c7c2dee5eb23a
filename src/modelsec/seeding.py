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
def seeded(seed: int) -> Iterator[None]:
    """Run a block whose library code draws from torch's global generator (layer initialisation, for example)
    with ``seed``, restoring the caller's global state afterwards (``torch.random.fork_rng``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
