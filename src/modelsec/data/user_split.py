"""The user's own split: the exact records the model trained on, and records it never saw, each in its own file.

A model trained elsewhere was trained on records modelsec cannot draw again with a seed. The user names them:
``members`` (the training records), ``nonmembers`` (held out), optionally ``population`` (further records from the
same distribution that the attacker may use, e.g. to train offline reference models) and ``test`` (held-out records
to measure robustness on instead of the non-members). Each is a data file or image folder as
:func:`modelsec.data.files.load_file` reads it. The membership audit then scores exactly these members and
non-members; nothing is drawn.

The files must describe the same task: the same input shape, and, where files name their classes (an image folder,
a CSV with class-name labels, an ``.npz`` with ``class_names``), the same class names in the same order; a file
without names holds class indices. Every file is validated as a data file is (finite values inside the declared
bounds, integer labels). Records shared between the files are reported by :meth:`Splits.overlaps
<modelsec.data.dataset.Splits.overlaps>`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from modelsec.core.errors import ConfigError, DataError
from modelsec.data.dataset import Dataset, SourceFile, Splits
from modelsec.data.files import DEFAULT_BOUNDS, load_file, source_sha256

USER_SPLIT = "user split"
"""``Splits.source`` (and ``result.json``'s ``data.name``) of a split the user gave as files."""

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class SplitFiles:
    """Where the user's split lies: a file or image folder per split (``population`` and ``test`` optional)."""

    members: str
    nonmembers: str
    population: str | None = None
    test: str | None = None

    def named(self) -> dict[str, str]:
        """The files given, by split name."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def split_files(
    data: str | None = None,
    *,
    members: PathLike | None = None,
    nonmembers: PathLike | None = None,
    population: PathLike | None = None,
    test: PathLike | None = None,
) -> SplitFiles | str | None:
    """What the data options name: ``data`` (a data set name or file, split by seed) when no split file is given,
    else the :class:`SplitFiles`; :class:`ConfigError` for a combination that makes no sense (``--members`` without
    ``--nonmembers`` or the reverse, split files together with ``--data``, ``--population`` or ``--test`` without
    the split)."""
    given = {
        "--members": members,
        "--nonmembers": nonmembers,
        "--population": population,
        "--test": test,
    }
    named = [option for option, value in given.items() if value]
    if not named:
        return data
    if data is not None:
        raise ConfigError(
            f"--data {data} and {', '.join(named)} both say which data to use; give --data (modelsec draws the "
            "split with --split-seed) or --members and --nonmembers (your exact training and held-out records), "
            "not both"
        )
    if not members or not nonmembers:
        missing = "--nonmembers" if members is not None else "--members"
        raise ConfigError(
            f"{', '.join(named)} without {missing}: a split of your own needs --members FILE (the records the model "
            "trained on) and --nonmembers FILE (records it never saw)"
        )
    return SplitFiles(
        members=os.fspath(members),
        nonmembers=os.fspath(nonmembers),
        population=None if population is None else os.fspath(population),
        test=None if test is None else os.fspath(test),
    )


def load_user_splits(
    files: SplitFiles,
    *,
    label_column: str = "label",
    bounds: Sequence[float] = DEFAULT_BOUNDS,
) -> Splits:
    """The :class:`Splits` of ``files``: each file loaded and validated, then checked against the members file
    (input shape, class names); the number of classes is the largest any file implies. No overlap warning (the
    caller, :func:`modelsec.data.user_splits`, emits it)."""
    loaded = {name: load_file(path, label_column=label_column, bounds=bounds) for name, path in files.named().items()}
    members = loaded["members"]
    for name, dataset in loaded.items():
        _check_agree(members, dataset, files.members, files.named()[name])
    names = next((d.class_names for d in loaded.values() if d.class_names is not None), None)
    num_classes = len(names) if names is not None else max(d.num_classes for d in loaded.values())
    for name, dataset in loaded.items():
        if int(dataset.y.max()) >= num_classes:
            raise DataError(
                f"{files.named()[name]}: labels go up to {int(dataset.y.max())} but the class names of the other "
                f"files name {num_classes} classes; give every file the same classes"
            )
    same = {name: dataclasses.replace(d, num_classes=num_classes, class_names=names) for name, d in loaded.items()}
    population = same["population"] if "population" in same else Dataset.empty("no population", same["members"])
    return Splits(
        source=USER_SPLIT,
        seed=0,
        members=same["members"],
        nonmembers=same["nonmembers"],
        population=population,
        test=same.get("test"),
        files={name: SourceFile(path=path, sha256=source_sha256(path)) for name, path in files.named().items()},
    )


def _check_agree(reference: Dataset, other: Dataset, reference_path: str, other_path: str) -> None:
    """:class:`DataError` naming both files when ``other`` is not data for the same model as ``reference``."""
    if other.input_shape != reference.input_shape:
        raise DataError(
            f"{other_path} holds inputs of shape {other.input_shape} but {reference_path} holds "
            f"{reference.input_shape}; every split must hold inputs of the shape the model takes"
        )
    if other.bounds != reference.bounds:  # one --bounds applies to all files; kept for splits built in Python
        raise DataError(f"{other_path} has bounds {other.bounds} but {reference_path} has {reference.bounds}")
    a, b = reference.class_names, other.class_names
    if a is not None and b is not None and a != b:
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        if only_a or only_b:
            detail = "; ".join(
                part
                for part in (
                    f"only {reference_path} has {only_a}" if only_a else "",
                    f"only {other_path} has {only_b}" if only_b else "",
                )
                if part
            )
        else:
            detail = f"the same names in another order: {list(a)} and {list(b)}"
        raise DataError(
            f"{reference_path} and {other_path} name different classes ({detail}); every split must hold the same "
            "classes (an image folder: the same class folders, even if one holds few images)"
        )


def recorded_split_files(files: Mapping[str, Mapping[str, str]]) -> SplitFiles:
    """The user's own split that a model file records (its card's ``data.files``: ``{"path", "sha256"}`` by split
    name, as ``modelsec harden --members FILE --nonmembers FILE`` writes it), after checking that each file still
    holds what the model was trained on; :class:`DataError` naming the file otherwise."""
    for name, entry in files.items():
        path = entry.get("path", "")
        if not os.path.exists(path):
            raise DataError(
                f"the model records its {name} file {path!r}, which does not exist here; pass --members and "
                "--nonmembers (its training and held-out records)"
            )
        if source_sha256(path) != entry.get("sha256"):
            raise DataError(
                f"{path} has changed since the model was trained on it (its SHA-256 differs from the one the model "
                "records); pass --members and --nonmembers"
            )
    paths = {
        name: entry["path"] for name, entry in files.items() if name in ("members", "nonmembers", "population", "test")
    }
    return SplitFiles(**paths)
