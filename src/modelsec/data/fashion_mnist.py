"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017) read from the IDX files of Debian's
``dataset-fashion-mnist``.

70,000 grey-scale 28x28 images of clothing in 10 classes: 60,000 training and 10,000 test images.
Inputs are ``float32`` pixel/255 in ``[0, 1]`` of shape ``(n, 1, 28, 28)``.

The audit split: a permutation of the training images drawn with ``np.random.default_rng(seed)``;
its first sixth (10,000 images) is the attacker's ``population``, the rest (50,000, in permutation
order) are the ``members`` the target model trains on, and the 10,000 test images are the
``nonmembers``.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelsec.core.errors import DataError, printable
from modelsec.data.dataset import Dataset, Splits
from modelsec.data.validation import validated_dataset

NAME = "fashion-mnist"
ENV_VAR = "MODELSEC_FASHION_MNIST_DIR"
DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
BOUNDS = (0.0, 1.0)
IMAGE_SIZE = 28

IMAGES_MAGIC = 2051  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # unsigned bytes, 1 dimension

# IDX type codes (third magic byte) -> big-endian numpy dtype
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one (uncompressed) IDX file into an array of its declared type and shape.

    The format (LeCun's MNIST page): a 4-byte big-endian magic ``0x00 0x00 <type code> <ndim>``,
    ``ndim`` big-endian ``uint32`` dimension sizes, then the values in row-major order. A bad magic
    or a data section of the wrong length raises :class:`DataError`.

    >>> import struct
    >>> parse_idx(struct.pack(">II", 2049, 3) + bytes([7, 0, 9])).tolist()
    [7, 0, 9]
    """
    if len(data) < 4:
        raise DataError(f"{source}: only {len(data)} bytes, too short for an IDX file; {_redownload()}")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{source}: not an IDX file (magic {int.from_bytes(data[:4], 'big')}); {_redownload()}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{source}: IDX header is truncated; {_redownload()}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        state = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"{source}: IDX data section has {actual} bytes but the header declares shape {shape} "
            f"({expected} bytes): the file {state}; {_redownload()}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str], *, magic: int | None = None) -> np.ndarray:
    """Read one IDX file, gzip-compressed or not (told apart by content), optionally checking its
    magic number (2051 for ``uint8`` images, 2049 for ``uint8`` labels). Unreadable or corrupt ->
    :class:`DataError`.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{p}: no such file; {_install_hint()}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{p}: cannot read or decompress ({printable(exc)}); {_redownload()}") from None
    if magic is not None and len(raw) >= 4 and int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big")
        raise DataError(f"{p}: IDX magic number is {found}, expected {magic}; {_redownload()}")
    return parse_idx(raw, source=str(p))


def resolve_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The Fashion-MNIST folder: ``data_dir`` if given, else ``$MODELSEC_FASHION_MNIST_DIR``, else
    ``/usr/share/datasets/fashion-mnist``. A missing folder raises :class:`DataError` saying how to
    get one."""
    if data_dir is not None:
        folder, origin = Path(data_dir), "--data-dir"
    elif os.environ.get(ENV_VAR):
        folder, origin = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        folder, origin = Path(DEFAULT_DIR), "the default location"
    if not folder.is_dir():
        raise DataError(f"Fashion-MNIST folder {folder} (from {origin}) does not exist; {_install_hint()}")
    return folder


@dataclass(frozen=True)
class RawFashionMnist:
    """The four IDX arrays as stored (read-only ``uint8``): images ``(n, 28, 28)``, labels
    ``(n,)``."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def read_raw(data_dir: str | os.PathLike[str] | None = None) -> RawFashionMnist:
    """Parse the four IDX files of the resolved folder; cached in-process per folder (and file
    versions)."""
    folder = resolve_dir(data_dir)
    paths = {key: _find_file(folder, stem) for key, stem in _FILES.items()}
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths.values())
    return _read_raw_cached(str(folder.resolve()), stamp)


def load_fashion_mnist(data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """All 70,000 images as one :class:`Dataset`: the 60,000 training images, then the 10,000 test
    images."""
    raw = read_raw(data_dir)
    images = np.concatenate([raw.train_images, raw.test_images])
    labels = np.concatenate([raw.train_labels, raw.test_labels])
    return _dataset(NAME, images, labels)


def fashion_mnist_splits(seed: int = 0, data_dir: str | os.PathLike[str] | None = None) -> Splits:
    """The seeded audit split described in the module docstring (50,000 / 10,000 / 10,000)."""
    raw = read_raw(data_dir)
    n_train = raw.train_labels.shape[0]
    order = np.random.default_rng(seed).permutation(n_train)
    n_population = n_train // 6
    population, members = order[:n_population], order[n_population:]
    return Splits(
        source=NAME,
        seed=seed,
        members=_dataset(f"{NAME}/members", raw.train_images[members], raw.train_labels[members]),
        nonmembers=_dataset(f"{NAME}/nonmembers", raw.test_images, raw.test_labels),
        population=_dataset(f"{NAME}/population", raw.train_images[population], raw.train_labels[population]),
    )


def _dataset(name: str, images: np.ndarray, labels: np.ndarray) -> Dataset:
    x = images.astype(np.float32)  # a fresh array: scale it in place
    x /= np.float32(255.0)
    return validated_dataset(
        name,
        x.reshape(len(x), 1, *x.shape[1:]),  # standard strides (x[:, None] gives the channel axis a 0 stride,
        # which torch reads as channels-last in a subset, changing a convolution's float order: see executors)
        labels.astype(np.int64),
        bounds=BOUNDS,
        num_classes=len(CLASS_NAMES),
        class_names=CLASS_NAMES,
        copy=False,
    )


@functools.lru_cache(maxsize=2)
def _read_raw_cached(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> RawFashionMnist:
    paths = [Path(entry[0]) for entry in stamp]
    arrays: dict[str, np.ndarray] = {}
    for (key, _stem), path in zip(_FILES.items(), paths, strict=True):
        is_images = key.endswith("images")
        arr = read_idx(path, magic=IMAGES_MAGIC if is_images else LABELS_MAGIC)
        if is_images and arr.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(
                f"{path}: images have shape {arr.shape[1:]}, expected 28x28 Fashion-MNIST images; {_redownload()}"
            )
        arr.setflags(write=False)
        arrays[key] = arr
    for split in ("train", "test"):
        n_images, n_labels = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_images != n_labels:
            raise DataError(f"{folder}: {n_images} {split} images but {n_labels} {split} labels; {_redownload()}")
    return RawFashionMnist(**arrays)


def _find_file(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"Fashion-MNIST folder {folder} has no {stem}.gz (nor {stem}); {_install_hint()}")


def _install_hint() -> str:
    return (
        "install the data with `apt-get install dataset-fashion-mnist`, or point "
        f"${ENV_VAR} or --data-dir at a folder holding the four IDX files"
    )


def _redownload() -> str:
    return "the file is damaged: reinstall `dataset-fashion-mnist` or replace the IDX files"
