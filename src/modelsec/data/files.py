"""User data files: a NumPy ``.npz`` archive or a CSV table, recognised by content, not by
extension, or a folder of images (:mod:`modelsec.data.images`).

- ``.npz`` (starts with the zip magic ``PK\\x03\\x04``): arrays ``x`` (inputs, ``(n,
  *input_shape)``) and ``y`` (integer labels, ``(n,)``), optionally ``class_names`` (a 1-D string
  array, one name per class). Read with ``allow_pickle=False`` always: object arrays, which unpickle
  on load, are refused.
- CSV (anything else that decodes as UTF-8 text): a header row, then one record per row; every
  column is a numeric feature except the label column (default ``label``). Labels are integers
  ``0..K-1`` or, if any label is not a number, class names (mapped to ``0..K-1`` in sorted order).
  The delimiter is ``,`` (or tab / ``;`` when the header holds no comma).
- a folder: ``FOLDER/<class name>/<image>.png|jpg|jpeg|bmp``, one sub-folder per class (sorted names are labels
  ``0..K-1``), all images the same size, pixels scaled to ``[0, 1]``, channels first; see
  :mod:`modelsec.data.images`.

Inputs must lie inside the declared ``bounds`` (default ``[0, 1]``); see :func:`validate_arrays`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modelsec.core.errors import DataError, printable
from modelsec.data.dataset import Dataset, Splits
from modelsec.data.images import folder_sha256, read_image_folder
from modelsec.data.sklearn_sets import stratified_splits
from modelsec.data.validation import validated_dataset

DEFAULT_BOUNDS = (0.0, 1.0)
_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"


def load_file(
    path: str | os.PathLike[str],
    *,
    label_column: str = "label",
    bounds: Sequence[float] = DEFAULT_BOUNDS,
) -> Dataset:
    """Every record of a user ``.npz`` or CSV file, or of an image folder, as one validated :class:`Dataset` named
    after ``path``."""
    p = Path(path)
    class_names: list[str] | None
    if p.is_dir():
        x, y, class_names = read_image_folder(p)
        return validated_dataset(str(path), x, y, bounds=bounds, class_names=class_names, copy=False)
    head = _read_head(p)
    if head.startswith(_ZIP_MAGIC):
        x, y, class_names = _read_npz(p)
    elif head.startswith(_NPY_MAGIC):
        raise DataError(
            f"{p}: a single .npy array holds no labels; save inputs and labels together with np.savez(path, x=x, y=y)"
        )
    else:
        x, y, class_names = _read_csv(p, label_column=label_column)
    return validated_dataset(str(path), x, y, bounds=bounds, class_names=class_names, copy=False)


def file_splits(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    label_column: str = "label",
    bounds: Sequence[float] = DEFAULT_BOUNDS,
) -> Splits:
    """The stratified 50/25/25 members / nonmembers / population split of a user file (seeded)."""
    dataset = load_file(path, label_column=label_column, bounds=bounds)
    return stratified_splits(dataset, seed=seed, source=str(path))


def source_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a data file's bytes, or of an image folder's images (:func:`~modelsec.data.images.folder_sha256`),
    as recorded in ``result.json``."""
    p = Path(path)
    if p.is_dir():
        return folder_sha256(p)
    h = hashlib.sha256()
    try:
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise DataError(f"{p}: cannot read the file ({printable(exc.strerror or exc)})") from None
    return h.hexdigest()


def _read_head(p: Path) -> bytes:
    try:
        with p.open("rb") as fh:
            return fh.read(8)
    except FileNotFoundError:
        raise DataError(f"{p}: no such file; check the path") from None
    except IsADirectoryError:
        raise DataError(f"{p} is a folder; pass a .npz or .csv file or an image folder") from None
    except OSError as exc:
        raise DataError(f"{p}: cannot read the file ({printable(exc.strerror or exc)})") from None


def _read_npz(p: Path) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    try:
        with np.load(p, allow_pickle=False) as archive:
            keys = sorted(archive.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise DataError(
                    f"{p}: the .npz archive has arrays {keys or 'none'} but needs 'x' (inputs) and "
                    "'y' (labels); save it with np.savez(path, x=x, y=y)"
                )
            x, y = archive["x"], archive["y"]
            names = archive["class_names"] if "class_names" in keys else None
    except DataError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise DataError(
                f"{p}: the .npz archive holds an object (pickled) array, and pickled arrays are "
                "refused because loading them can run code; save plain numeric arrays, e.g. "
                "np.savez(path, x=x.astype(np.float32), y=y.astype(np.int64))"
            ) from None
        raise DataError(f"{p}: not a readable .npz archive ({printable(exc)}); re-save it with np.savez") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{p}: not a readable .npz archive ({printable(exc)}); re-save it with np.savez") from None
    class_names: list[str] | None = None
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(
                f"{p}: 'class_names' must be a 1-D string array, got dtype {names.dtype} and shape "
                f"{names.shape}; save it as np.array(['name0', 'name1', ...])"
            )
        class_names = [str(n) for n in names.tolist()]
    return x, y, class_names


def _read_csv(p: Path, *, label_column: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(
            f"{p}: neither a .npz archive nor a UTF-8 text CSV; "
            "save the data with np.savez(path, x=x, y=y) or as a CSV with a header row"
        ) from None
    except OSError as exc:
        raise DataError(f"{p}: cannot read the file ({printable(exc.strerror or exc)})") from None
    first_line = text.split("\n", 1)[0]
    delimiter = next((d for d in (",", "\t", ";") if d in first_line), ",")
    try:
        rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if row]
    except csv.Error as exc:
        raise DataError(f"{p}: malformed CSV ({printable(exc)}); check the quoting") from None
    if not rows:
        raise DataError(f"{p} is empty; write a header row and one record per row")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise DataError(
            f"{p}: no label column {label_column!r}; the columns are {header}; "
            "name the label column with --label-column"
        )
    body = rows[1:]
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(
                f"{p}: line {line} has {len(row)} fields but the header has {len(header)}; "
                "give every row one value per column"
            )
    label_at = header.index(label_column)
    features = [i for i in range(len(header)) if i != label_at]
    if not features:
        raise DataError(f"{p}: only the label column {label_column!r}; add feature columns")
    cells = np.array(body, dtype=str).reshape(len(body), len(header))
    x = _parse_numbers(cells[:, features], p, [header[i] for i in features])
    labels = np.char.strip(cells[:, label_at])
    empty = np.flatnonzero(labels == "")
    if empty.size:
        raise DataError(
            f"{p}: {empty.size} record(s) have no label (first on line {int(empty[0]) + 2}); fill in or drop those rows"
        )
    try:
        return x, labels.astype(np.float64), None
    except ValueError:  # class names rather than indices
        names, y = np.unique(labels, return_inverse=True)
        return x, y.astype(np.int64), [str(n) for n in names]


def _parse_numbers(cells: np.ndarray, p: Path, columns: list[str]) -> np.ndarray:
    try:
        return np.char.strip(cells).astype(np.float64)
    except ValueError:
        for (r, c), cell in np.ndenumerate(cells):
            try:
                float(cell)
            except ValueError:
                raise DataError(
                    f"{p}: non-numeric value {str(cell)!r} in column {columns[c]!r} on line {r + 2}; "
                    "every feature column must hold numbers (encode categories as numbers first)"
                ) from None
        # numpy's parser is stricter than Python's on some spellings (e.g. "1_000"): use float()
        return np.array([[float(cell) for cell in row] for row in cells.tolist()], dtype=np.float64)
