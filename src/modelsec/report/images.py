"""Input images as the report draws them: ``(C, H, W)`` arrays in the data's bounds to displayable pixels.

One channel is greyscale, three are RGB, any other number is the mean over channels. The adversarial-example grid
(:mod:`modelsec.report.examples`) and the thumbnails of the most exposed members both use :func:`to_display`, so an
image looks the same wherever the report shows it. PNGs are written by :func:`matplotlib.image.imsave` (Pillow):
nothing here imports :mod:`matplotlib.pyplot`.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from matplotlib.image import imsave

THUMBNAIL_PX = 56  # small images are enlarged by a whole factor (nearest neighbour) to about this size
_NO_SOFTWARE: dict[str, Any] = {"Software": None}  # PNGs independent of the matplotlib version


def is_image_batch(x: np.ndarray) -> bool:
    """Whether ``x`` is a batch of images ``(n, C, H, W)`` the report can draw."""
    return x.ndim == 4 and x.shape[2] > 0 and x.shape[3] > 0


def to_display(img: np.ndarray, low: float, high: float) -> np.ndarray:
    """``(C, H, W)`` in ``[low, high]`` as ``(H, W)`` greyscale or ``(H, W, 3)`` RGB in ``[0, 1]``.

    >>> to_display(np.array([[[0.0, 255.0]]]), 0.0, 255.0)
    array([[0., 1.]])
    """
    scaled = np.clip((np.asarray(img, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    if scaled.shape[0] == 3:
        return np.transpose(scaled, (1, 2, 0))
    if scaled.shape[0] == 1:
        return scaled[0]
    return scaled.mean(axis=0)


def thumbnail_data_uri(img: np.ndarray, bounds: tuple[float, float], px: int = THUMBNAIL_PX) -> str:
    """One ``(C, H, W)`` image as a base64 PNG ``data:`` URI, enlarged by the largest whole factor that keeps it
    within ``px`` pixels (at least 1), without smoothing."""
    pixels = to_display(img, bounds[0], bounds[1])
    factor = max(1, px // max(pixels.shape[0], pixels.shape[1]))
    pixels = np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)
    buf = io.BytesIO()
    if pixels.ndim == 2:
        imsave(buf, pixels, cmap="gray", vmin=0.0, vmax=1.0, format="png", metadata=_NO_SOFTWARE)
    else:
        imsave(buf, pixels, format="png", metadata=_NO_SOFTWARE)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
