"""Turning a model file (or nothing: the bundled reference model) into a :class:`Classifier`.

The safe-loading policy: formats are detected by content (:mod:`modelsec.models.formats`); pickle-based files are
refused unless the caller passes ``trust_model=True`` (``--trust-model``), and even then are read with
``weights_only=True``, with one exception: a raw or compressed pickle whose top-level object is of a class that an
adapter owns (:data:`~modelsec.models.adapters.PICKLED_OBJECT_ADAPTERS`: a scikit-learn estimator, as
``pickle.dump`` and ``joblib.dump`` write it; the class is read from the stream without unpickling anything) is
unpickled in full by that adapter. For such a file, ``--trust-model`` means the user accepts running whatever code
it holds.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from modelsec.core.errors import ConfigError, ModelLoadError, UnsafeModelError
from modelsec.core.options import check_device
from modelsec.models.adapters import FILE_ADAPTERS, LoadRequest, load_adapted, pickle_adapter
from modelsec.models.base import Capability, Classifier
from modelsec.models.card import ModelCard
from modelsec.models.formats import ModelFormat, detect_format, pickled_class
from modelsec.models.output import harden_output
from modelsec.models.reference_recipe import ReferenceRecipe
from modelsec.models.torch import (
    check_exported,
    load_exported,
    load_state_dict_into,
    read_safetensors,
    read_safetensors_metadata,
    read_trusted_pickle,
)
from modelsec.models.zoo import build_architecture
from modelsec.results.audit import ModelInfo

BUNDLED_MODEL = "fashion-mnist-small-cnn.safetensors"


def bundled_model_path() -> Path:
    """The reference Fashion-MNIST CNN shipped with modelsec (trained by scripts/train_reference_model.sh)."""
    return Path(str(resources.files("modelsec.models") / "weights" / BUNDLED_MODEL))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_loadable(path: str | Path, *, trust_model: bool) -> ModelFormat:
    """The file's format, after the safe-loading policy: a pickle-based file without ``trust_model`` raises
    :class:`UnsafeModelError` before a single byte of it is unpickled, and a ``torch.export`` archive is checked
    (:func:`modelsec.models.export_safety.check_export_archive`), so that an unsafe file is refused before the
    data loads."""
    fmt = detect_format(path)
    if fmt.uses_pickle and not trust_model:
        how = (
            "(it is then read with weights_only=True)"
            if fmt is ModelFormat.TORCH_PICKLE
            else "(it is then read with weights_only=True, except a pickled scikit-learn estimator, which is then "
            "unpickled in full); a scikit-learn estimator is safer saved with skops.io.dump (.skops)"
        )
        raise UnsafeModelError(
            f"{str(path)!r} is a pickle-based file ({fmt.value}); unpickling can run arbitrary code, so it was "
            f"not opened. Convert it to safetensors, or pass --trust-model if you trust its author {how}"
        )
    if fmt is ModelFormat.TORCH_EXPORT:
        check_exported(path)
    return fmt  # formats of other frameworks: their adapter checks them before deserialising anything


def read_card(path: str | Path | None, *, trust_model: bool = False) -> ModelCard:
    """The :class:`ModelCard` a model file records (``None``: the bundled model's), after the safe-loading check
    (:func:`check_loadable`), so that a missing or unsafe file is refused before anything else happens. Cheap: only
    a safetensors file's header is read, or the JSON entry a ``.keras`` archive written by ``modelsec harden``
    holds (:data:`modelsec.models.adapters.keras.CARD_ENTRY`, read without Keras). Other formats record nothing (an
    empty card), and so does a safetensors file whose header cannot be read (:func:`load_model` then says why); a
    header with a value of the wrong type raises :class:`ModelLoadError`."""
    p = bundled_model_path() if path is None else Path(path)
    fmt = check_loadable(p, trust_model=trust_model)
    if fmt is ModelFormat.KERAS:
        from modelsec.models.adapters.keras import read_card_entry

        header = read_card_entry(p)
        return ModelCard() if header is None else ModelCard.from_header(header, source=str(p))
    if fmt is not ModelFormat.SAFETENSORS:
        return ModelCard()
    return ModelCard.from_header(read_safetensors_metadata(p), source=str(p))


@dataclass
class LoadedModel:
    """A loaded classifier, what the report says about it, the :class:`ModelCard` its file records (empty for a
    file that records none), and, when its adapter knows how to train another model of its kind, the
    :class:`~modelsec.models.reference_recipe.ReferenceRecipe` of the audit's reference models (``None``: the audit
    picks a built-in architecture). ``check_records``: an adapter's check of the classifier on the records the audit
    uses (raising :class:`ModelLoadError`), e.g. a converted model compared with its native runtime."""

    classifier: Classifier
    info: ModelInfo
    card: ModelCard = field(default_factory=ModelCard)
    check_records: Callable[[np.ndarray], None] | None = None
    reference_recipe: ReferenceRecipe | None = None


def load_model(
    path: str | Path | None = None,
    *,
    arch: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    bounds: tuple[float, float] | None = None,
    trust_model: bool = False,
    device: str = "cpu",
) -> LoadedModel:
    """Load a model file as a :class:`Classifier`.

    Args:
        path: a safetensors, ``.pt2`` or (trusted) ``torch.save`` file, or a file of another framework that an
            adapter loads (:mod:`modelsec.models.adapters`); ``None`` loads the bundled model.
        arch: the built-in architecture for weight-only files (safetensors written by modelsec name theirs).
        input_shape, num_classes, bounds: from the data when the file does not record them.
        trust_model: allow pickle-based files, still loaded with ``weights_only=True``, except a pickled
            scikit-learn estimator, which is unpickled in full (see the module docstring).
        device: "cpu" or "cuda".

    A safetensors file's :class:`ModelCard` supplies what the arguments leave out. One that records an output
    hardening (:mod:`modelsec.models.output`) gets its module wrapped so that it returns what the hardened API
    reveals, and the classifier the capability of that API (labels only, or scores without gradients).
    """
    p = bundled_model_path() if path is None else Path(path)
    fmt = check_loadable(p, trust_model=trust_model)
    check_device(device)
    request = LoadRequest(
        input_shape=input_shape, num_classes=num_classes, bounds=bounds, trust_model=trust_model, device=device
    )
    if fmt in FILE_ADAPTERS:
        return load_adapted(p, fmt, request)
    if fmt in (ModelFormat.PICKLE, ModelFormat.COMPRESSED_PICKLE):  # trusted: check_loadable refused it otherwise
        top = pickled_class(p, fmt)
        adapter = pickle_adapter(top)
        if adapter is not None:
            return load_adapted(p, fmt, request, adapter=adapter)
        if fmt is ModelFormat.COMPRESSED_PICKLE:
            raise ModelLoadError(
                f"{str(p)!r} is a compressed pickle whose top-level object is {top or 'unknown'}; modelsec reads "
                "compressed pickles only as scikit-learn estimators (joblib.dump(..., compress=...))"
            )

    card = ModelCard()
    if fmt is ModelFormat.TORCH_EXPORT:
        module: torch.nn.Module = load_exported(p)
        shape = input_shape or _shape_from_example(module)
        resolved_arch = arch
    else:
        if fmt is ModelFormat.SAFETENSORS:
            state, header = read_safetensors(p)
            card = ModelCard.from_header(header, source=str(p))
        else:
            state = read_trusted_pickle(p)
        file_arch = card.arch
        if arch and file_arch and arch != file_arch:
            raise ConfigError(f"--arch {arch!r} contradicts the architecture {file_arch!r} recorded in {str(p)!r}")
        resolved_arch = arch or file_arch
        if not resolved_arch:
            raise ConfigError(f"{str(p)!r} holds weights only; name their architecture with --arch")
        recorded_shape = card.input_shape
        if recorded_shape and input_shape and tuple(recorded_shape) != tuple(input_shape):
            raise ModelLoadError(
                f"the model expects inputs of shape {tuple(recorded_shape)} but the data have "
                f"{tuple(input_shape)}; check --data"
            )
        shape = tuple(recorded_shape) if recorded_shape else input_shape
        recorded_classes = card.num_classes
        if recorded_classes and num_classes and int(recorded_classes) != int(num_classes):
            raise ModelLoadError(
                f"the model has {recorded_classes} classes but the data have {num_classes}; check --data"
            )
        num_classes = int(recorded_classes or num_classes or 0) or None
        if shape is None or num_classes is None:
            raise ConfigError("the input shape and number of classes are unknown; pass --data")
        module = build_architecture(resolved_arch, shape, num_classes)
        load_state_dict_into(module, state, str(p))
    capability = Capability.GRADIENTS
    if card.output is not None:  # output hardening: the module returns what the hardened API reveals, no more
        try:
            hardened = harden_output(module, card.output)
            if num_classes:
                hardened.check_classes(num_classes)
        except ConfigError as e:
            raise ModelLoadError(f"{str(p)!r} records an output hardening this modelsec cannot apply: {e}") from None
        module, capability = hardened, hardened.capability

    if shape is None:
        raise ConfigError("the input shape is unknown; pass --data")
    if num_classes is None:
        num_classes = _classes_from_probe(module, shape)
    recorded_bounds = card.bounds
    if bounds is None:
        bounds = (float(recorded_bounds[0]), float(recorded_bounds[1])) if recorded_bounds else (0.0, 1.0)
    elif recorded_bounds and tuple(recorded_bounds) != tuple(bounds):
        warnings.warn(
            f"the model was trained on inputs in {tuple(recorded_bounds)} but the data declare {bounds}",
            stacklevel=2,
        )
    assert bounds is not None
    classifier = Classifier(
        module,
        input_shape=tuple(shape),
        num_classes=num_classes,
        bounds=(float(bounds[0]), float(bounds[1])),
        capability=capability,
        device=device,
        name=p.name,
    )
    info = ModelInfo(
        path="(bundled) " + p.name if path is None else str(p),
        sha256=sha256_file(p),
        arch=resolved_arch,
        format=fmt.value,
        num_classes=num_classes,
        input_shape=list(shape),
        parameters=classifier.num_parameters(),
    )
    return LoadedModel(classifier=classifier, info=info, card=card)


def _shape_from_example(module: torch.nn.Module) -> tuple[int, ...] | None:
    example = getattr(module, "example_shape", None)
    return tuple(example[1:]) if example else None


def _classes_from_probe(module: torch.nn.Module, shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        out = module(torch.zeros((1, *shape)))
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ModelLoadError("the model does not return logits of shape (n, classes)")
    return int(out.shape[1])
