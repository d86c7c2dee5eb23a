"""Checks that turn arbitrary user arrays into the ``float32`` inputs and ``int64`` labels a
:class:`Dataset` holds.

Every loader in :mod:`modelsec.data` goes through :func:`validate_arrays`, so bad data fails here,
with a message that says what is wrong and what to do, instead of deep inside an attack.

>>> import numpy as np
>>> x, y, k = validate_arrays([[0.0, 0.5], [1.0, 0.25]], [0, 1], bounds=(0.0, 1.0), name="toy")
>>> x.dtype, y.dtype, k
(dtype('float32'), dtype('int64'), 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from modelsec.core.errors import ConfigError, DataError, printable
from modelsec.data.dataset import Dataset

# dtype kinds accepted as numeric inputs: bool, signed and unsigned integers, floats.
_NUMERIC_KINDS = "biuf"


def check_bounds(bounds: Sequence[float]) -> tuple[float, float]:
    """``bounds`` as a ``(lo, hi)`` pair of finite floats with ``lo < hi``; :class:`ConfigError`
    otherwise."""
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ConfigError(f"bounds must be two numbers LO,HI, got {bounds!r}; pass e.g. --bounds 0,1") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(
            f"bounds must be two finite numbers with LO < HI, got ({lo:g}, {hi:g}); pass e.g. --bounds 0,1"
        )
    return lo, hi


def validate_arrays(
    x: object,
    y: object,
    *,
    bounds: Sequence[float],
    num_classes: int | None = None,
    name: str,
    copy: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Check one labelled set and return ``(x, y, num_classes)``.

    ``x`` comes back ``float32``, C-contiguous, of shape ``(n, *input_shape)`` with every value
    finite and inside ``bounds``; ``y`` comes back ``int64`` of shape ``(n,)`` with labels in ``[0,
    num_classes)``. ``num_classes`` is inferred as ``max(y) + 1`` when not given. Labels stored as
    floats are accepted when integer-valued.

    The caller's arrays are never modified. With ``copy=True`` (the default) the results never share
    memory with them; ``copy=False`` lets ``x``/``y`` pass through unchanged when they already have
    the right dtype and layout (for loaders that built them).

    Raises :class:`DataError` naming ``name`` for: an empty set; non-numeric inputs or non-integer
    labels; inputs with fewer than two dimensions; ``x``/``y`` length or shape mismatch; NaN/Inf
    inputs; inputs outside ``bounds``; negative labels or labels ``>= num_classes``; a single class.
    Raises :class:`ConfigError` for invalid ``bounds`` or ``num_classes``.
    """
    lo, hi = check_bounds(bounds)
    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) < 2):
        raise ConfigError(f"{name}: num_classes must be an integer >= 2, got {num_classes!r}")

    xa = _as_array(x, name=name, what="x (inputs)")
    ya = _as_array(y, name=name, what="y (labels)")

    if xa.size == 0 or ya.size == 0:
        raise DataError(
            f"{name} is empty (x shape {xa.shape}, y shape {ya.shape}); provide at least a few records of every class"
        )
    if xa.dtype.kind not in _NUMERIC_KINDS:
        raise DataError(
            f"{name}: x has dtype {xa.dtype}, not numbers; convert the inputs to a numeric array "
            "(e.g. x.astype(np.float32)) and drop text columns"
        )
    ya = _integer_labels(ya, name=name)

    if xa.ndim < 2:
        raise DataError(
            f"{name}: x has shape {xa.shape} but needs (n_records, *input_shape); "
            "put one record per row, e.g. x.reshape(-1, 1) for a single feature"
        )
    if ya.ndim != 1:
        hint = (
            "flatten it with y.ravel()"
            if ya.ndim == 2 and ya.shape[1] == 1
            else "store one integer class index per record (one-hot labels: y.argmax(axis=1))"
        )
        raise DataError(f"{name}: y has shape {ya.shape} but must be 1-D; {hint}")
    if xa.shape[0] != ya.shape[0]:
        raise DataError(
            f"{name}: x has {xa.shape[0]} records but y has {ya.shape[0]} labels; give exactly one label per record"
        )

    with np.errstate(over="ignore", invalid="ignore"):
        if copy:
            xf = np.array(xa, dtype=np.float32, order="C", copy=True)
        else:
            xf = np.ascontiguousarray(xa, dtype=np.float32)
    _check_finite(xf, name=name)
    _check_inside(xf, lo, hi, name=name)

    k = _check_labels(ya, num_classes, name=name)
    yi = np.array(ya, dtype=np.int64, copy=True) if copy else np.ascontiguousarray(ya, np.int64)
    return xf, yi, k


def validated_dataset(
    name: str,
    x: object,
    y: object,
    *,
    bounds: Sequence[float],
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    copy: bool = True,
) -> Dataset:
    """A :class:`Dataset` built from arrays that passed :func:`validate_arrays`.

    When ``class_names`` is given and ``num_classes`` is not, the number of names is the number of
    classes.
    """
    names = tuple(str(c) for c in class_names) if class_names is not None else None
    if num_classes is None and names is not None:
        num_classes = len(names)
    xv, yv, k = validate_arrays(x, y, bounds=bounds, num_classes=num_classes, name=name, copy=copy)
    if names is not None and len(names) != k:
        raise DataError(f"{name}: {len(names)} class names given for {k} classes; give one name per class")
    return Dataset(name=name, x=xv, y=yv, num_classes=k, bounds=check_bounds(bounds), class_names=names)


def _as_array(a: object, *, name: str, what: str) -> np.ndarray:
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{name}: {what} cannot be read as one array ({printable(exc)}); make every record the same shape and type"
        ) from None


def _integer_labels(y: np.ndarray, *, name: str) -> np.ndarray:
    """``y`` unchanged when integer typed or integer-valued floats; :class:`DataError` otherwise."""
    if y.dtype.kind in "biu":
        return y
    if y.dtype.kind == "f":
        finite = np.isfinite(y)
        if finite.all() and bool(np.all(y == np.round(y))):
            return y
        bad = np.flatnonzero(~finite.ravel() | (y.ravel() != np.round(y.ravel())))
        first = int(bad[0])
        raise DataError(
            f"{name}: y must hold integer class indices, but {bad.size} label(s) are not whole "
            f"numbers (first at record {first}: {float(y.ravel()[first]):g}); store class "
            "indices 0..K-1, not probabilities or regression targets"
        )
    raise DataError(
        f"{name}: y has dtype {y.dtype}, not integer class indices; "
        "map the labels to integers 0..K-1 (e.g. with np.unique(y, return_inverse=True))"
    )


def _check_finite(x: np.ndarray, *, name: str) -> None:
    finite = np.isfinite(x)
    if finite.all():
        return
    n_bad = int(x.size - np.count_nonzero(finite))
    first_record = int(np.flatnonzero(~finite.reshape(x.shape[0], -1).all(axis=1))[0])
    raise DataError(
        f"{name}: x contains {n_bad} NaN/Inf value(s) (or values too large for float32), "
        f"first in record {first_record}; remove or impute those records"
    )


def _check_inside(x: np.ndarray, lo: float, hi: float, *, name: str) -> None:
    x_min, x_max = float(x.min()), float(x.max())
    # compare in float32, as values are stored: a bound like 0.1 must accept its own float32 value
    if x_min >= np.float32(lo) and x_max <= np.float32(hi):
        return
    raise DataError(
        f"{name}: input values span [{x_min:g}, {x_max:g}] but the declared bounds are "
        f"[{lo:g}, {hi:g}]; rescale the data into the bounds, or declare the real range with "
        f"--bounds LO,HI (here e.g. --bounds {min(lo, x_min):g},{max(hi, x_max):g})"
    )


def _check_labels(y: np.ndarray, num_classes: int | None, *, name: str) -> int:
    y_min, y_max = int(y.min()), int(y.max())
    if y_min < 0:
        n_neg = int(np.count_nonzero(y < 0))
        raise DataError(
            f"{name}: {n_neg} negative label(s) (smallest {y_min}); labels must be class indices "
            "0..K-1, so remap them (e.g. with np.unique(y, return_inverse=True))"
        )
    if num_classes is not None and y_max >= num_classes:
        raise DataError(
            f"{name}: labels go up to {y_max} but there are {num_classes} classes (labels "
            f"0..{num_classes - 1}); remap the labels or fix the number of classes / class names"
        )
    k = int(num_classes) if num_classes is not None else y_max + 1
    present = np.unique(y)
    if present.size < 2:
        raise DataError(
            f"{name}: only one class (label {int(present[0])}) in all {y.shape[0]} records; "
            "a classifier audit needs records of at least two classes, so check the label column"
        )
    return k
