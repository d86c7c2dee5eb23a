"""Explicit seeds without touching anyone's global random state: every seed modelsec derives comes from here.

- :func:`generator`: a seeded ``torch.Generator`` (what every attack and training loop draws from);
- :func:`derived_seed` / :func:`derived_generator`: a seed (generator) for one purpose of a run, from the run's seed
  and the purpose's labels, by hashing (:func:`hashed_seed`), so that adding a purpose never shifts another's stream;
- :func:`spawned_seeds`: independent seeds for parallel workers (numpy's ``SeedSequence.spawn``);
- :func:`numpy_stream`: a numpy ``Generator`` for one numbered stream of a seed;
- :func:`seeded`: a block whose library code draws from torch's global generator, which is restored afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import numpy as np
import torch


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def hashed_seed(*parts: object) -> int:
    """A seed in ``[0, 2**63)`` from ``parts``: the first 8 bytes (little-endian) of the SHA-256 of the parts
    written out and joined by ``/``, shifted right by one bit.

    >>> hashed_seed("modelsec", "batch-loss", 0)
    2211153213237873333
    """
    text = "/".join(map(str, parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def derived_seed(seed: int, *labels: object) -> int:
    """A seed for one purpose of a run (``derived_seed(seed, "check", epoch)``), independent of the run's other
    streams and of other purposes.

    >>> derived_seed(0, "check"), derived_seed(7, "check", 3)
    (803567489226050637, 1223344520582204809)
    """
    return hashed_seed("modelsec", int(seed), *labels)


def derived_generator(seed: int, *labels: object) -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`derived_seed` (on the CPU)."""
    return generator(derived_seed(seed, *labels))


def spawned_seeds(seed: int, count: int) -> list[int]:
    """``count`` independent seeds derived from ``seed`` (numpy's ``SeedSequence(seed).spawn``), one per worker or
    model; the first ones do not depend on ``count``.

    >>> spawned_seeds(0, 3)
    [3757552657, 673228719, 3241444873]
    """
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(int(seed)).spawn(count)]


def numpy_stream(seed: int, stream: int) -> np.random.Generator:
    """A numpy ``Generator`` for the numbered ``stream`` of ``seed`` (``SeedSequence([seed, stream])``): streams
    of one seed are independent of each other.

    >>> numpy_stream(0, 0x0AE0).integers(0, 1000, 3).tolist()
    [938, 281, 389]
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream)]))


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
