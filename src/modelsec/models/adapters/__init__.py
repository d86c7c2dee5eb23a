"""Adapters: models that modelsec did not train, each seen as a :class:`~modelsec.models.Classifier` that declares
honestly what it gives an attacker (:class:`~modelsec.models.Capability`: gradients, scores, or labels only), so that
the presets pick white-box or black-box attacks by themselves.

One adapter a module, each importing its framework only when used (the frameworks are optional extras):

=============  =======================================  ==========================================================
module         what it loads                            formats (:class:`~modelsec.models.ModelFormat`) / objects
=============  =======================================  ==========================================================
``keras``      Keras 3 models on the torch backend      ``keras``, ``keras-h5``; ``keras.Model`` objects
``onnx``       ONNX graphs                              ``onnx``
``sklearn``    fitted scikit-learn estimators           ``skops``; trusted ``pickle`` / ``compressed-pickle``
                                                        estimators (joblib); estimator objects
``endpoint``   a model behind a prediction API          ``--endpoint URL``; callables returning scores
=============  =======================================  ==========================================================

The contract of an adapter module:

- ``load(path, fmt, request) -> LoadedModel`` for each file format it declares in :data:`FILE_ADAPTERS`: refuse
  an unsafe file (:class:`~modelsec.core.errors.UnsafeModelError`) before any of it is deserialised unless
  ``request.trust_model``; raise :class:`~modelsec.core.errors.ModelLoadError` for a file it cannot read, and
  :class:`~modelsec.core.errors.ConfigError` when its optional extra is not installed (naming it).
- ``wraps(obj) -> bool`` and ``wrap(obj, request) -> LoadedModel`` for the Python objects it accepts (listed in
  :data:`OBJECT_ADAPTERS`); ``wraps`` must not import the framework (test the object's type's module name).
- ``load(path, fmt, request)`` also for the raw and compressed pickles whose top-level object's class is in a
  package it owns (:data:`PICKLED_OBJECT_ADAPTERS`); these reach it only with ``request.trust_model`` (the
  safe-loading policy refused them before), and it may unpickle them in full.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsec.core.errors import ConfigError
from modelsec.models.formats import ModelFormat

if TYPE_CHECKING:
    from modelsec.models.loading import LoadedModel

FILE_ADAPTERS: dict[ModelFormat, str] = {
    ModelFormat.KERAS: "keras",
    ModelFormat.KERAS_H5: "keras",
    ModelFormat.ONNX: "onnx",
    ModelFormat.SKOPS: "sklearn",
}
"""Which adapter module loads each file format that is not one of modelsec's own torch formats."""

PICKLED_OBJECT_ADAPTERS: dict[str, str] = {"sklearn": "sklearn"}
"""Which adapter module loads a trusted raw or compressed pickle, by the top-level package of its top-level object's
class (:func:`~modelsec.models.formats.pickled_class`); any other pickle is read with ``weights_only=True``."""

OBJECT_ADAPTERS: tuple[str, ...] = ("keras", "sklearn", "endpoint")
"""The adapter modules asked, in order, whether they wrap a Python object (before it is taken as an ``nn.Module``:
a Keras model on the torch backend is one, but needs its input layout mapped). ``endpoint`` stays last: it takes any
other callable."""


@dataclass(frozen=True)
class LoadRequest:
    """What the caller knows about the model beyond its file: from the data when the file does not record it.

    Args:
        input_shape: the shape of one record as modelsec holds it (channels first for images).
        num_classes: the number of classes in the data.
        bounds: the valid input range of the data.
        trust_model: ``--trust-model``: the user trusts the file's author (allows code the adapter would refuse).
        device: "cpu" or "cuda".
    """

    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    bounds: tuple[float, float] | None = None
    trust_model: bool = False
    device: str = "cpu"


def _adapter(name: str) -> Any:
    return importlib.import_module(f"{__name__}.{name}")


def load_adapted(path: Path, fmt: ModelFormat, request: LoadRequest, *, adapter: str | None = None) -> LoadedModel:
    """Load a model file through ``adapter``, by default the one of its format in :data:`FILE_ADAPTERS`."""
    if adapter is None and fmt not in FILE_ADAPTERS:
        raise ConfigError(f"this modelsec cannot load {fmt.value} files yet")
    loaded: LoadedModel = _adapter(adapter or FILE_ADAPTERS[fmt]).load(path, fmt, request)
    return loaded


def pickle_adapter(pickled_class: str | None) -> str | None:
    """The adapter that loads a pickle whose top-level object is of class ``pickled_class`` (module-qualified, as
    :func:`~modelsec.models.formats.pickled_class` reads it); ``None``: none does."""
    if not pickled_class:
        return None
    return PICKLED_OBJECT_ADAPTERS.get(pickled_class.split(".", 1)[0])


def wrap_object(obj: Any, request: LoadRequest) -> LoadedModel | None:
    """The first adapter's wrapping of a Python object it recognises; ``None`` when none does."""
    for name in OBJECT_ADAPTERS:
        module = _adapter(name)
        if module.wraps(obj):
            wrapped: LoadedModel = module.wrap(obj, request)
            return wrapped
    return None
