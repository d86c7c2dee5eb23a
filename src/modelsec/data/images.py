"""Image folders as data: ``FOLDER/<class name>/<image>``, read with Pillow.

- Classes are the sub-folders of ``FOLDER`` (hidden ones, starting with ``.``, are skipped), in sorted order: the
  first is label 0. Images are the files ending in ``.png``, ``.jpg``, ``.jpeg`` or ``.bmp`` (any case) inside a
  class folder, read in sorted order; other files (``Thumbs.db``, ``.DS_Store``, notes) are ignored. An image
  directly inside ``FOLDER``, or a class folder without images, is a :class:`DataError`.
- Every image must have the same width and height (nothing is resized: resizing changes what the model sees, so do
  it yourself, once, the way the model was trained).
- Colour: all images become one mode. If every image is grey-scale (Pillow modes ``1``, ``L``, ``LA``), all are read
  as grey-scale, one channel; if any image has colour (``RGB``, ``RGBA``, ``P``, ``CMYK``, ...), all are converted
  to RGB, three channels (alpha dropped). 16-bit and floating-point images are refused (save them as 8-bit).
- Pixels are scaled from 0..255 to ``[0, 1]`` and stored channels first: ``x`` has shape ``(n, C, H, W)``.

Pillow's decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``) stays on: an image with more pixels is refused
with a :class:`DataError` (Pillow's warning above the limit is treated as an error too).
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from modelsec.core.errors import DataError, printable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_GREY_MODES = frozenset({"1", "L", "LA"})
_COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"})


def image_files(folder: Path) -> tuple[list[str], list[tuple[int, Path]]]:
    """The class names (sorted) and every image as ``(label, path)``, in sorted order; :class:`DataError` for a
    folder that is not laid out as ``FOLDER/<class>/<image>``."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({printable(exc.strerror or exc)})") from None
    loose = [e for e in entries if e.is_file() and e.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        raise DataError(
            f"{folder}: image {loose[0].name} lies directly in the folder; an image folder holds one sub-folder "
            "per class (FOLDER/<class name>/<image>), so move each image into its class's folder"
        )
    class_dirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    if len(class_dirs) < 2:
        raise DataError(
            f"{folder} is a folder but not an image folder ({len(class_dirs)} class folder(s)); an image folder "
            "holds one sub-folder per class (FOLDER/<class name>/<image>.png|jpg|jpeg|bmp), at least two; or pass "
            "a .npz or .csv file"
        )
    files: list[tuple[int, Path]] = []
    for label, class_dir in enumerate(class_dirs):
        images = sorted(f for f in class_dir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(
                f"{class_dir}: the class folder holds no .png, .jpg, .jpeg or .bmp image; add images or remove it"
            )
        files.extend((label, f) for f in images)
    return [d.name for d in class_dirs], files


def read_image_folder(folder: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(x, y, class_names)`` of an image folder (see the module docstring): ``x`` float32 ``(n, C, H, W)`` in
    ``[0, 1]``, ``y`` int64 labels, the class names in label order."""
    folder = Path(folder)
    class_names, files = image_files(folder)
    headers = [_header(path) for _, path in files]
    modes = {mode for mode, _ in headers}
    unsupported = sorted(modes - _GREY_MODES - _COLOUR_MODES)
    if unsupported:
        path = next(p for (_, p), (m, _) in zip(files, headers, strict=True) if m == unsupported[0])
        raise DataError(
            f"{path}: image mode {unsupported[0]!r} (16-bit or floating-point pixels) is not supported; "
            "save the images as 8-bit grey-scale or RGB"
        )
    mode = "L" if modes <= _GREY_MODES else "RGB"
    size = headers[0][1]
    for (_, path), (_, other) in zip(files, headers, strict=True):
        if other != size:
            raise DataError(
                f"{path}: the image is {other[0]}x{other[1]} pixels but {files[0][1]} is {size[0]}x{size[1]}; "
                "every image must have the same size (modelsec does not resize), so resize them the way the "
                "model was trained"
            )
    channels = 1 if mode == "L" else 3
    x = np.empty((len(files), channels, size[1], size[0]), dtype=np.float32)
    for i, (_, path) in enumerate(files):
        with _opened(path) as image:
            pixels = np.asarray(image.convert(mode), dtype=np.float32) / np.float32(255.0)
        x[i] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    y = np.array([label for label, _ in files], dtype=np.int64)
    return x, y, class_names


def folder_sha256(folder: str | Path) -> str:
    """A hash of what an image folder holds: each image's path relative to the folder and its bytes, in the order
    they are read."""
    folder = Path(folder)
    _, files = image_files(folder)
    h = hashlib.sha256()
    for _, path in files:
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    with _opened(path) as image:
        return image.mode, (int(image.width), int(image.height))


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Any]:
    """``PIL.Image.open(path)``, with its errors (an unreadable or truncated file, a decompression bomb) inside
    the block too, as :class:`DataError`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"{path}: refused as a possible decompression bomb ({printable(exc)}); images this large are not "
            "classifier inputs, so check the file"
        ) from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image; re-save it as PNG") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image ({printable(exc.strerror or exc)})") from None
