"""Canaries for the one-run privacy audit: records made to be memorised, each included in training with
probability 1/2 (Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One (1) Training Run").

A canary is useful when the model can only predict its label by having trained on it, so that its score separates
the included canaries from the excluded ones as much as the training algorithm allows:

- ``mislabelled``: copies of held-out records (never trained on otherwise) with a wrong label drawn uniformly from
  the other classes; a model predicts that label only if it memorised the record (the paper's black-box,
  input-space canaries).
- ``out-of-distribution``: inputs drawn uniformly at random in the data's bounds (noise images) with labels drawn
  uniformly at random: far from every real record, so no real record teaches their labels; in high dimension they
  are also nearly orthogonal to each other, so each one's influence is its own.

Everything is seeded by an explicit ``numpy`` generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelsec.core.errors import ConfigError
from modelsec.data.dataset import Dataset

CANARY_KINDS = ("mislabelled", "out-of-distribution")


@dataclass(frozen=True, eq=False)
class Canaries:
    """``m`` canary records (``data``, with their canary labels) and who was included in training.

    ``source_indices``: for mislabelled canaries, the index of each one's original record in the pool it was
    copied from (``None`` for out-of-distribution canaries). ``original_labels``: the original records' labels.
    """

    kind: str
    data: Dataset
    included: np.ndarray  # (m,) bool
    source_indices: np.ndarray | None = None
    original_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.data)

    @property
    def members(self) -> Dataset:
        """The included canaries: what joins the training set."""
        return self.data.subset(np.flatnonzero(self.included), name=f"{self.data.name}/included")


def draw_canaries(
    kind: str,
    m: int,
    *,
    like: Dataset,
    rng: np.random.Generator,
    pool: Dataset | None = None,
) -> Canaries:
    """Draw ``m`` canaries of ``kind`` shaped like ``like`` (input shape, classes, bounds), each included with
    probability 1/2 independently (one Bernoulli draw per canary from ``rng``, after the canaries themselves).

    ``pool``: held-out records to copy for ``mislabelled`` canaries (required for that kind; ``m`` of them are drawn
    without replacement).

    >>> import numpy as np
    >>> toy = Dataset("toy", np.zeros((10, 3), np.float32), np.arange(10) % 3, 3, (0.0, 1.0))
    >>> c = draw_canaries("mislabelled", 6, like=toy, pool=toy, rng=np.random.default_rng(0))
    >>> bool(np.all(c.data.y != c.original_labels)), len(c), c.included.dtype
    (True, 6, dtype('bool'))
    """
    if kind not in CANARY_KINDS:
        raise ConfigError(f"canary kind must be one of {', '.join(CANARY_KINDS)}, got {kind!r}")
    if m < 1:
        raise ConfigError(f"the audit needs at least one canary, got {m}")
    k = like.num_classes
    if k < 2:
        raise ConfigError("canaries need at least two classes (a wrong or random label)")
    if kind == "mislabelled":
        if pool is None or len(pool) < m:
            have = 0 if pool is None else len(pool)
            raise ConfigError(
                f"{m} mislabelled canaries need {m} held-out records to copy, only {have} available; use fewer "
                "canaries or out-of-distribution ones"
            )
        idx = np.sort(rng.choice(len(pool), size=m, replace=False))
        original = np.asarray(pool.y[idx], dtype=np.int64)
        labels = (original + rng.integers(1, k, size=m)) % k  # uniform over the other k - 1 classes
        x = np.ascontiguousarray(pool.x[idx], dtype=np.float32)
        source: np.ndarray | None = idx
        orig: np.ndarray | None = original
    else:
        low, high = like.bounds
        x = rng.uniform(low, high, size=(m, *like.input_shape)).astype(np.float32)
        labels = rng.integers(0, k, size=m)
        source = orig = None
    included = rng.random(m) < 0.5
    data = Dataset(
        name=f"canaries/{kind}",
        x=x,
        y=np.asarray(labels, dtype=np.int64),
        num_classes=k,
        bounds=like.bounds,
        class_names=like.class_names,
    )
    return Canaries(kind=kind, data=data, included=included, source_indices=source, original_labels=orig)


def with_canaries(data: Dataset, canaries: Canaries) -> Dataset:
    """``data`` followed by the included canaries: the training set of the audited run."""
    extra = canaries.members
    return Dataset(
        name=f"{data.name}+canaries",
        x=np.concatenate([np.asarray(data.x, dtype=np.float32), extra.x]),
        y=np.concatenate([np.asarray(data.y, dtype=np.int64), extra.y]),
        num_classes=data.num_classes,
        bounds=data.bounds,
        class_names=data.class_names,
    )
