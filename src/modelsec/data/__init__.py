"""Data for an audit: built-in data sets by name, or user files, as validated member / non-member /
population splits.

>>> from modelsec.data import available_datasets, load_splits
>>> available_datasets()
['breast-cancer', 'digits', 'fashion-mnist']
>>> splits = load_splits("digits", seed=0)
>>> len(splits.members), len(splits.nonmembers), len(splits.population)
(898, 449, 450)
>>> splits.members.name
'digits/members'

The user's own split (the exact training records, and held-out ones, each in a file or image folder):
:func:`user_splits`; see :mod:`modelsec.data.user_split`.

Every :class:`Dataset` produced here passed :func:`validate_arrays`; every :class:`Splits` is
checked for shared records, and a :class:`SplitOverlapWarning` is emitted when two splits share any
(the audit reports the counts).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

from modelsec.core.errors import ConfigError, DataError
from modelsec.core.options import SPLIT_SEED_LIMIT, check_seed
from modelsec.core.registry import Registry
from modelsec.data.dataset import Dataset, SourceFile, Splits
from modelsec.data.fashion_mnist import fashion_mnist_splits, load_fashion_mnist
from modelsec.data.files import DEFAULT_BOUNDS, file_splits, load_file
from modelsec.data.sklearn_sets import (
    breast_cancer_dataset,
    breast_cancer_splits,
    digits_dataset,
    digits_splits,
    stratified_splits,
)
from modelsec.data.user_split import USER_SPLIT, SplitFiles, load_user_splits, split_files
from modelsec.data.validation import check_bounds, validate_arrays, validated_dataset

__all__ = [
    "DATASETS",
    "USER_SPLIT",
    "BuiltinDataset",
    "Dataset",
    "SourceFile",
    "SplitFiles",
    "SplitOverlapWarning",
    "Splits",
    "available_datasets",
    "load_dataset",
    "load_splits",
    "split_files",
    "stratified_splits",
    "user_splits",
    "validate_arrays",
    "validated_dataset",
]


class SplitOverlapWarning(UserWarning):
    """Two of the members / nonmembers / population splits share records (identical inputs)."""


class BuiltinDataset:
    """A data set known by name: a loader of its seeded audit :class:`Splits` (calling the object
    runs it) and of all its records as one :class:`Dataset`.

    ``data_dir`` is where the files live, for sets that read files (``None``: the set's default
    location).
    """

    def __init__(
        self,
        *,
        description: str,
        splits: Callable[[int, str | None], Splits],
        dataset: Callable[[str | None], Dataset],
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.description = description
        self.bounds = bounds
        self._splits = splits
        self._dataset = dataset

    def __call__(self, *, seed: int = 0, data_dir: str | None = None) -> Splits:
        return self.splits(seed=seed, data_dir=data_dir)

    def splits(self, *, seed: int = 0, data_dir: str | None = None) -> Splits:
        """The members / nonmembers / population split drawn with ``seed``."""
        return self._splits(seed, data_dir)

    def dataset(self, *, data_dir: str | None = None) -> Dataset:
        """All records, in the set's own order."""
        return self._dataset(data_dir)

    def __repr__(self) -> str:
        return f"BuiltinDataset({self.description!r})"


DATASETS: Registry[BuiltinDataset] = Registry("data set")

DATASETS.register("fashion-mnist")(
    BuiltinDataset(
        description="Fashion-MNIST: 70,000 28x28 grey-scale clothing images, 10 classes "
        "(Debian package dataset-fashion-mnist); split 50,000 / 10,000 / 10,000",
        splits=lambda seed, data_dir: fashion_mnist_splits(seed, data_dir),
        dataset=lambda data_dir: load_fashion_mnist(data_dir),
    )
)
DATASETS.register("digits")(
    BuiltinDataset(
        description="scikit-learn digits: 1,797 8x8 hand-written digits as 64 features, "
        "10 classes; stratified split 50/25/25",
        splits=lambda seed, _data_dir: digits_splits(seed),
        dataset=lambda _data_dir: digits_dataset(),
    )
)
DATASETS.register("breast-cancer")(
    BuiltinDataset(
        description="scikit-learn breast cancer (Wisconsin diagnostic): 569 records of 30 "
        "min-max scaled features, 2 classes; stratified split 50/25/25",
        splits=lambda seed, _data_dir: breast_cancer_splits(seed),
        dataset=lambda _data_dir: breast_cancer_dataset(),
    )
)


def available_datasets() -> list[str]:
    """The built-in data set names, sorted."""
    return DATASETS.names()


def load_splits(
    source: str | SplitFiles,
    *,
    seed: int = 0,
    data_dir: str | None = None,
    label_column: str = "label",
    bounds: tuple[float, float] | None = None,
) -> Splits:
    """The members / nonmembers / population splits of ``source``: a built-in name (see
    :func:`available_datasets`), else the path of a user ``.npz`` or CSV file or image folder (see
    :mod:`modelsec.data.files`), or the user's own split as :class:`SplitFiles` (see :func:`user_splits`; ``seed``
    is then unused).

    ``seed`` draws the split (same seed, same split). ``data_dir`` locates the files of a built-in
    set that reads files (Fashion-MNIST). ``label_column`` and ``bounds`` (default ``(0, 1)``)
    describe a user file; built-in sets have fixed bounds. ``Splits.source`` is the built-in name or
    the path as given.

    Emits :class:`SplitOverlapWarning` when splits share records. Raises :class:`DataError` for an
    unknown source or bad data, :class:`ConfigError` for bad options.
    """
    seed = _check_seed(seed)
    if isinstance(source, SplitFiles):
        return user_splits(
            source.members, source.nonmembers, source.population, source.test, label_column=label_column, bounds=bounds
        )
    builtin = _builtin(source, label_column=label_column, bounds=bounds)
    if builtin is not None:
        splits = builtin.splits(seed=seed, data_dir=data_dir)
    else:
        splits = file_splits(
            source,
            seed=seed,
            label_column=label_column,
            bounds=DEFAULT_BOUNDS if bounds is None else check_bounds(bounds),
        )
    _warn_on_overlap(splits)
    return splits


def user_splits(
    members: str | os.PathLike[str],
    nonmembers: str | os.PathLike[str],
    population: str | os.PathLike[str] | None = None,
    test: str | os.PathLike[str] | None = None,
    *,
    label_column: str = "label",
    bounds: tuple[float, float] | None = None,
) -> Splits:
    """The user's own split: ``members`` (the exact records the model trained on), ``nonmembers`` (records it never
    saw), optionally ``population`` (further records the attacker may use) and ``test`` (held-out records to measure
    robustness on instead of the non-members), each a ``.npz`` or CSV file or an image folder; see
    :mod:`modelsec.data.user_split`. ``Splits.source`` is ``"user split"`` and ``Splits.files`` records each file
    with its SHA-256.

    >>> splits = user_splits("train.npz", "held_out.npz")  # doctest: +SKIP
    >>> modelsec.audit("model.onnx", splits)  # doctest: +SKIP

    Emits :class:`SplitOverlapWarning` when files share records. Raises :class:`DataError` for bad data or files that
    disagree (input shape, class names), :class:`ConfigError` for bad options.
    """
    files = split_files(members=members, nonmembers=nonmembers, population=population, test=test)
    assert isinstance(files, SplitFiles)
    splits = load_user_splits(
        files, label_column=label_column, bounds=DEFAULT_BOUNDS if bounds is None else check_bounds(bounds)
    )
    _warn_on_overlap(splits)
    return splits


def load_dataset(
    source: str,
    *,
    data_dir: str | None = None,
    label_column: str = "label",
    bounds: tuple[float, float] | None = None,
) -> Dataset:
    """Every record of ``source`` as one :class:`Dataset` (arguments as for :func:`load_splits`).
    For Fashion-MNIST: the 60,000 training images, then the 10,000 test images."""
    builtin = _builtin(source, label_column=label_column, bounds=bounds)
    if builtin is not None:
        return builtin.dataset(data_dir=data_dir)
    return load_file(
        source,
        label_column=label_column,
        bounds=DEFAULT_BOUNDS if bounds is None else check_bounds(bounds),
    )


def _builtin(source: str, *, label_column: str, bounds: tuple[float, float] | None) -> BuiltinDataset | None:
    """The built-in set called ``source``; ``None`` if ``source`` is an existing path;
    :class:`DataError` if neither. Options that only make sense for user files are refused for
    built-in sets."""
    if source in DATASETS:
        builtin = DATASETS.get(source)
        if bounds is not None and check_bounds(bounds) != builtin.bounds:
            lo, hi = builtin.bounds
            raise ConfigError(
                f"data set {source!r} has fixed bounds [{lo:g}, {hi:g}]; --bounds applies to "
                "user files only, so drop it"
            )
        if label_column != "label":
            raise ConfigError(
                f"--label-column applies to CSV files only, not to the built-in data set {source!r}; drop it"
            )
        return builtin
    if os.path.lexists(source):
        return None
    known = ", ".join(available_datasets())
    raise DataError(
        f"unknown data set {source!r}: not a built-in name ({known}) and no file at "
        f"{Path(source)}; pass one of those names or the path of a .npz / .csv file or an image folder"
    )


def _check_seed(seed: int) -> int:
    return check_seed(seed, "split seed", limit=SPLIT_SEED_LIMIT)


def _warn_on_overlap(splits: Splits) -> None:
    shared = {pair: n for pair, n in splits.overlaps().items() if n}
    if not shared:
        return
    detail = ", ".join(f"{pair}: {n}" for pair, n in shared.items())
    where = splits.source
    if splits.files:
        where += " (" + ", ".join(f"{name} {f.path}" for name, f in splits.files.items()) + ")"
    consequences = []
    if any(pair != "members/test" for pair in shared):
        consequences.append(
            "membership results on those records are ambiguous (the audit leaves them out of membership inference)"
        )
    if "members/test" in shared:
        consequences.append(f"robustness is measured on {shared['members/test']} record(s) the model trained on")
    warnings.warn(
        f"{where}: the splits share records with identical inputs ({detail}); {'; '.join(consequences)}; "
        "deduplicate the data if you can",
        SplitOverlapWarning,
        stacklevel=3,
    )
