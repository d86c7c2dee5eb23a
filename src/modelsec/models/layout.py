"""Input layouts: modelsec's records (images channels first ``(C, H, W)``, tabular records ``(d,)``) mapped to the
input shape a model of another framework takes, and back.

Keras (and TensorFlow exports) hold images channels last ``(H, W, C)``, and many models take a grey image without
its channel axis (``keras.Input((28, 28))`` then ``Flatten``) or flattened. A :class:`Layout` is the one
reshaping between the two, decided once from both shapes (:func:`plan_layout`) and applied to batches; the attacks
keep working in modelsec's layout, so eps and the bounds keep their meaning.

=================  =======================================  ======================================
kind               records -> model input                   when
=================  =======================================  ======================================
``identity``       unchanged                                the shapes agree
``channels-last``  ``(C, H, W)`` -> ``(H, W, C)``            the model takes ``(H, W, C)``
``drop-channel``   ``(1, H, W)`` -> ``(H, W)``               a grey image without its channel axis
``reshape``        channels last, then row-major reshape    the sizes agree (``Flatten`` order kept)
=================  =======================================  ======================================

A ``None`` in the model's shape (a fully convolutional model) matches any size.

>>> plan_layout((1, 28, 28), (28, 28)).kind
'drop-channel'
>>> plan_layout((3, 8, 8), (8, 8, 3)).kind
'channels-last'
>>> plan_layout((3, 8, 8), (192,)).kind
'reshape'
>>> plan_layout((3, 8, 8), (8, 8))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelsec.core.errors.ModelLoadError: the model takes inputs of shape (8, 8), which records of shape (3, 8, 8) ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from modelsec.core.errors import ModelLoadError

ModelShape = tuple[int | None, ...]


def _matches(shape: Sequence[int], model_shape: ModelShape) -> bool:
    return len(shape) == len(model_shape) and all(m is None or m == s for s, m in zip(shape, model_shape, strict=True))


def _channels_last(shape: Sequence[int]) -> tuple[int, ...]:
    return (*shape[1:], shape[0]) if len(shape) == 3 else tuple(shape)


@dataclass(frozen=True)
class Layout:
    """How one record of shape ``data_shape`` becomes one model input of shape ``model_shape`` (both without the
    batch axis; ``model_shape`` resolved: no ``None``)."""

    kind: str
    data_shape: tuple[int, ...]
    model_shape: tuple[int, ...]

    def describe(self) -> str:
        """One line for the result's notes."""
        if self.kind == "identity":
            return f"inputs passed unchanged as {self.model_shape}"
        how = {
            "channels-last": "channels first to channels last",
            "drop-channel": "the single channel axis dropped",
            "reshape": "reshaped in channels-last order",
        }[self.kind]
        return f"records {self.data_shape} mapped to the model's inputs {self.model_shape}: {how}"


def plan_layout(data_shape: Sequence[int], model_shape: Sequence[int | None]) -> Layout:
    """The :class:`Layout` from records of ``data_shape`` to a model taking ``model_shape``;
    :class:`ModelLoadError` when none maps them.

    Channels last is preferred to the identity for three-axis records, since that is the layout of a Keras image
    model; a flat model input takes the channels-last flattening, which is what Keras's ``Flatten`` of an
    ``(H, W, C)`` image gives."""
    data = tuple(int(s) for s in data_shape)
    model: ModelShape = tuple(None if m is None else int(m) for m in model_shape)
    last = _channels_last(data)
    if len(data) == 3 and _matches(last, model):
        return Layout("channels-last", data, last)
    if _matches(data, model):
        return Layout("identity", data, data)
    if len(data) == 3 and data[0] == 1 and _matches(data[1:], model):
        return Layout("drop-channel", data, data[1:])
    sizes = tuple(m for m in model if m is not None)
    if model and len(sizes) == len(model) and math.prod(data) == math.prod(sizes):
        return Layout("reshape", data, sizes)
    shown = "(" + ", ".join("None" if m is None else str(m) for m in model) + ("," if len(model) == 1 else "") + ")"
    layout = " (channels first)" if len(data) == 3 else ""
    raise ModelLoadError(
        f"the model takes inputs of shape {shown}, which records of shape {data}{layout} cannot be mapped to; "
        "check that --data is the data the model was trained on"
    )


def to_model_layout(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """A batch of records ``(n, *layout.data_shape)`` as the model's inputs ``(n, *layout.model_shape)``."""
    n = x.shape[0]
    if layout.kind == "identity":
        return x
    if layout.kind == "drop-channel":
        return x.reshape(n, *layout.model_shape)
    if len(layout.data_shape) == 3:
        x = x.permute(0, 2, 3, 1)
    return x.reshape(n, *layout.model_shape)


def from_model_layout(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """The inverse of :func:`to_model_layout`: model inputs ``(n, *layout.model_shape)`` as records."""
    n = x.shape[0]
    if layout.kind == "identity":
        return x
    if layout.kind == "drop-channel":
        return x.reshape(n, *layout.data_shape)
    if len(layout.data_shape) == 3:
        return x.reshape(n, *_channels_last(layout.data_shape)).permute(0, 3, 1, 2)
    return x.reshape(n, *layout.data_shape)


def records_shape(model_shape: Sequence[int | None]) -> tuple[int, ...]:
    """The record shape modelsec would give data for a model taking ``model_shape`` (when no data say it):
    ``(H, W, C)`` -> ``(C, H, W)``, ``(H, W)`` -> ``(1, H, W)``, ``(d,)`` unchanged; :class:`ModelLoadError` for a
    shape with an unknown size."""
    if any(m is None for m in model_shape) or not model_shape:
        raise ModelLoadError(f"the model takes inputs of any size {tuple(model_shape)}; pass --data to fix it")
    shape = tuple(int(m) for m in model_shape if m is not None)
    if len(shape) == 3:
        return (shape[2], shape[0], shape[1])
    if len(shape) == 2:
        return (1, *shape)
    return shape
