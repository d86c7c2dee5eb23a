"""In-memory labelled data sets and the member / non-member / population splits an audit needs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled records: ``x`` float32 of shape ``(n, *input_shape)`` inside ``bounds``, ``y`` int64 in
    ``[0, num_classes)``. Construct through the loaders in :mod:`modelsec.data`, which validate."""

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    bounds: tuple[float, float]
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x.shape[1:])

    def subset(self, indices: np.ndarray, name: str | None = None) -> Dataset:
        """The records at ``indices`` (a copy), keeping the metadata."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(
            name=name or self.name,
            x=np.ascontiguousarray(self.x[idx]),
            y=np.ascontiguousarray(self.y[idx]),
            num_classes=self.num_classes,
            bounds=self.bounds,
            class_names=self.class_names,
        )

    def record_hashes(self) -> list[bytes]:
        """One SHA-256 digest per record over its input bytes (labels excluded: the same input under two
        labels is the same record to a membership attacker)."""
        x = np.ascontiguousarray(self.x, dtype=np.float32)
        return [hashlib.sha256(row.tobytes()).digest() for row in x]

    def sha256(self) -> str:
        """A content hash of the whole set (inputs and labels, in order)."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.x, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(self.y, dtype=np.int64).tobytes())
        return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Splits:
    """The three disjoint sets a security audit needs.

    - ``members``: the target model's training data (positives for membership inference);
    - ``nonmembers``: held out, never trained on (negatives; robustness is measured on these);
    - ``population``: further data from the same distribution that the attacker may use as reference data.

    ``seed`` is the seed of the split itself; ``source`` names where the data came from.
    """

    source: str
    seed: int
    members: Dataset
    nonmembers: Dataset
    population: Dataset

    @property
    def num_classes(self) -> int:
        return self.members.num_classes

    def with_members_used(self, used: int) -> Splits:
        """The splits of a model that trained on only the first ``used`` members: those stay members and the rest,
        never trained on, join the population (they are neither members nor the held-out test set)."""
        if not 0 < used < len(self.members):
            return self
        rest = self.members.subset(np.arange(used, len(self.members)))
        population = Dataset(
            name=self.population.name,
            x=np.concatenate([self.population.x, rest.x]),
            y=np.concatenate([self.population.y, rest.y]),
            num_classes=self.population.num_classes,
            bounds=self.population.bounds,
            class_names=self.population.class_names,
        )
        return Splits(self.source, self.seed, self.members.subset(np.arange(used)), self.nonmembers, population)

    @property
    def bounds(self) -> tuple[float, float]:
        return self.members.bounds

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.members.input_shape

    def overlaps(self) -> dict[str, int]:
        """Number of records (by input content hash) that each pair of splits shares."""
        sets = {
            "members": set(self.members.record_hashes()),
            "nonmembers": set(self.nonmembers.record_hashes()),
            "population": set(self.population.record_hashes()),
        }
        pairs = [("members", "nonmembers"), ("members", "population"), ("nonmembers", "population")]
        return {f"{a}/{b}": len(sets[a] & sets[b]) for a, b in pairs}
