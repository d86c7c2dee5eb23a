"""In-memory labelled data sets and the member / non-member / population splits an audit needs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

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

    @classmethod
    def empty(cls, name: str, like: Dataset) -> Dataset:
        """A set without records, of the same input shape, classes and bounds as ``like``."""
        return cls(
            name=name,
            x=np.zeros((0, *like.input_shape), dtype=np.float32),
            y=np.zeros(0, dtype=np.int64),
            num_classes=like.num_classes,
            bounds=like.bounds,
            class_names=like.class_names,
        )


@dataclass(frozen=True)
class SourceFile:
    """A file (or image folder) a split was read from, and the SHA-256 of what it holds
    (:func:`modelsec.data.files.source_sha256`)."""

    path: str
    sha256: str


@dataclass(frozen=True, eq=False)
class Splits:
    """The three disjoint sets a security audit needs, and optionally a fourth.

    - ``members``: the target model's training data (positives for membership inference);
    - ``nonmembers``: held out, never trained on (negatives; robustness is measured on these unless there is a
      ``test`` set);
    - ``population``: further data from the same distribution that the attacker may use as reference data (may be
      empty when the user gives none);
    - ``test``: held-out records to measure robustness on instead of the non-members (``None``: the non-members).

    ``seed`` is the seed of the split itself (0 for a split the user gave as files); ``source`` names where the data
    came from; ``files``: for a split the user gave as files (:func:`modelsec.data.user_splits`), the file each split
    was read from, by split name (empty otherwise).
    """

    source: str
    seed: int
    members: Dataset
    nonmembers: Dataset
    population: Dataset
    test: Dataset | None = None
    files: dict[str, SourceFile] = field(default_factory=dict)

    @property
    def attacked(self) -> Dataset:
        """The held-out records robustness is measured on: ``test`` when given, else the non-members."""
        return self.nonmembers if self.test is None else self.test

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
        return Splits(
            self.source,
            self.seed,
            self.members.subset(np.arange(used)),
            self.nonmembers,
            population,
            test=self.test,
            files=self.files,
        )

    @property
    def bounds(self) -> tuple[float, float]:
        return self.members.bounds

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.members.input_shape

    def overlaps(self) -> dict[str, int]:
        """Number of records (by input content hash) that each pair of splits shares; with a ``test`` set also
        ``"members/test"`` (training records that robustness would be measured on)."""
        sets = {
            "members": set(self.members.record_hashes()),
            "nonmembers": set(self.nonmembers.record_hashes()),
            "population": set(self.population.record_hashes()),
        }
        pairs = [("members", "nonmembers"), ("members", "population"), ("nonmembers", "population")]
        if self.test is not None:
            sets["test"] = set(self.test.record_hashes())
            pairs.append(("members", "test"))
        return {f"{a}/{b}": len(sets[a] & sets[b]) for a, b in pairs}
