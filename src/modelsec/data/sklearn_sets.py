"""Small tabular / image sets bundled with scikit-learn, and the seeded stratified 50/25/25 audit
split.

- ``digits``: 1,797 8x8 grey-scale hand-written digits (UCI optical recognition set), pixel/16 in
  ``[0, 1]``, flattened to shape ``(n, 64)``, 10 classes.
- ``breast-cancer``: 569 Wisconsin diagnostic records of 30 features, each feature min-max scaled to
  ``[0, 1]`` over the whole set, 2 classes (malignant, benign).

Both need no download. :func:`stratified_splits` is the split used for these and for user files.
"""

from __future__ import annotations

import numpy as np

from modelsec.core.errors import DataError, printable
from modelsec.data.dataset import Dataset, Splits
from modelsec.data.validation import validated_dataset

BOUNDS = (0.0, 1.0)
# each class needs 2 records in each half of the first cut so that the second cut can stratify again
MIN_PER_CLASS = 4


def digits_dataset() -> Dataset:
    """All 1,797 digits: ``x`` float32 ``(n, 64)`` = pixel/16, ``y`` the digit."""
    from sklearn.datasets import load_digits  # here, not at import: scikit-learn takes a second to import

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)
    return validated_dataset(
        "digits",
        x,
        np.asarray(bunch.target),
        bounds=BOUNDS,
        num_classes=10,
        class_names=[str(d) for d in range(10)],
        copy=False,
    )


def breast_cancer_dataset() -> Dataset:
    """All 569 records: ``x`` float32 ``(n, 30)``, each feature min-max scaled to ``[0, 1]``."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    raw = np.asarray(bunch.data, dtype=np.float64)
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)  # a constant feature maps to 0
    x = np.clip((raw - lo) / span, 0.0, 1.0).astype(np.float32)
    return validated_dataset(
        "breast-cancer",
        x,
        np.asarray(bunch.target),
        bounds=BOUNDS,
        num_classes=2,
        class_names=[str(c) for c in bunch.target_names],
        copy=False,
    )


def stratified_splits(dataset: Dataset, *, seed: int, source: str) -> Splits:
    """Split ``dataset`` into 50% members, 25% nonmembers and 25% population, each with the class
    proportions of the whole (scikit-learn's ``train_test_split`` with ``stratify`` and
    ``random_state=seed``).

    Records are split by position: exact duplicates in ``dataset`` can land in two splits (the
    caller checks with :meth:`Splits.overlaps`). Raises :class:`DataError` if a class has fewer than
    4 records.
    """
    from sklearn.model_selection import train_test_split

    counts = np.bincount(dataset.y, minlength=dataset.num_classes)
    present = np.flatnonzero(counts)
    small = [int(c) for c in present if counts[c] < MIN_PER_CLASS]
    if small:
        detail = ", ".join(f"class {c}: {int(counts[c])}" for c in small[:5])
        raise DataError(
            f"{dataset.name}: too few records to split 50/25/25 by class ({detail}); every class "
            f"needs at least {MIN_PER_CLASS} records, so add data or drop the rare classes"
        )
    index = np.arange(len(dataset))
    try:
        members, rest = train_test_split(index, train_size=0.5, stratify=dataset.y, random_state=seed, shuffle=True)
        nonmembers, population = train_test_split(
            rest, train_size=0.5, stratify=dataset.y[rest], random_state=seed, shuffle=True
        )
    except ValueError as exc:  # e.g. more classes than records in a split
        raise DataError(
            f"{dataset.name}: cannot split {len(dataset)} records of {present.size} classes "
            f"50/25/25 by class ({printable(exc)}); add more records"
        ) from None

    def part(indices: np.ndarray, role: str) -> Dataset:
        return validated_dataset(
            f"{source}/{role}",
            dataset.x[indices],
            dataset.y[indices],
            bounds=dataset.bounds,
            num_classes=dataset.num_classes,
            class_names=dataset.class_names,
            copy=False,
        )

    return Splits(
        source=source,
        seed=seed,
        members=part(members, "members"),
        nonmembers=part(nonmembers, "nonmembers"),
        population=part(population, "population"),
    )


def digits_splits(seed: int = 0) -> Splits:
    """The stratified 50/25/25 split of ``digits`` (898 / 449 / 450 records)."""
    return stratified_splits(digits_dataset(), seed=seed, source="digits")


def breast_cancer_splits(seed: int = 0) -> Splits:
    """The stratified 50/25/25 split of ``breast-cancer`` (284 / 142 / 143 records)."""
    return stratified_splits(breast_cancer_dataset(), seed=seed, source="breast-cancer")
