"""Keras 3 models (``.keras`` archives, legacy ``.h5`` files, ``keras.Model`` objects) run on Keras's torch backend,
so that the model *is* a torch module: gradients flow through it and every white-box attack applies.

Threat model of the file: untrusted. A Keras file can run code when loaded in three ways: a ``Lambda`` layer
(marshalled Python bytecode), a custom object (a class or function that Keras imports from a module the file names,
or finds among objects registered in the process), and Keras APIs that are not layers (``keras.utils.get_file``,
``keras.config.enable_unsafe_deserialization``: CVE-2025-1550, CVE-2025-8747). Keras's own ``safe_mode`` only
covers lambdas, and did not cover ``.h5`` files before CVE-2025-9905's fix. So before any Keras deserialiser runs,
:func:`unsafe_objects` walks the model's configuration (``config.json`` of the archive, the ``model_config``
attribute of an ``.h5`` file), read here with ``zipfile`` / ``h5py`` from a private copy of the file that is then
the one Keras loads, and anything but Keras's own built-ins is refused (:class:`UnsafeModelError`) unless
``--trust-model``. Then Keras loads it with ``safe_mode=True`` and ``compile=False`` (the training configuration,
which may name custom losses, is not deserialised at all).

Layout: Keras models take channels-last images, sometimes without the channel axis (``keras.Input((28, 28))``)
or flattened; :class:`KerasModule` maps modelsec's records (channels first) to the model's input with a
:class:`~modelsec.models.layout.Layout`. A model ending in a softmax returns probabilities: the module returns their
logarithm (log-probabilities, which modelsec reads as logits) and the result's notes say so.

Reusable pieces (the Keras training of reference models and defenses uses them):

- :func:`import_keras`: Keras on the torch backend, or a clear error;
- :func:`keras_module`: a loaded (or built) Keras model as the layout-mapping torch module modelsec attacks;
  in training mode (``module.train()``) it calls the model with ``training=True`` (dropout, batch statistics);
- :func:`fresh_model`: the same architecture re-created with freshly initialised weights from a seed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from modelsec.core.errors import ConfigError, ModelLoadError, UnsafeModelError, printable
from modelsec.models.adapters import LoadRequest
from modelsec.models.base import Capability, Classifier, eval_mode
from modelsec.models.formats import ModelFormat
from modelsec.models.layout import Layout, plan_layout, records_shape, to_model_layout
from modelsec.results.audit import ModelInfo

EXTRA_HINT = "install Keras with: pip install 'modelsec[keras]'"

# class names that only encode data (tensors, arrays, slices) in a Keras 3 configuration
_DATA_ENCODINGS = frozenset({"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"})
# classes that carry Python code in the file itself
_CODE_CLASSES = frozenset({"Lambda", "TFOpLambda", "__lambda__"})
# Keras modules that hold no model parts, only APIs an attacker could call (fetch files, switch safe mode off)
_DENIED_MODULES = ("keras.utils", "keras.config", "keras.saving", "keras.src.utils", "keras.src.saving")
_MAX_CONFIG_BYTES = 64 * 1024 * 1024
_MAX_NODES = 2_000_000


def import_keras() -> Any:
    """The ``keras`` module on its torch backend (``KERAS_BACKEND=torch`` is set before the first import);
    :class:`ConfigError` when Keras is not installed or was already imported with another backend."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras
    except ImportError:
        raise ConfigError(f"this model needs Keras 3; {EXTRA_HINT}") from None
    backend = keras.backend.backend()
    if backend != "torch":
        raise ConfigError(
            f"Keras was imported with the {backend!r} backend; modelsec runs Keras models on the torch backend. "
            "Set KERAS_BACKEND=torch before importing keras (or import modelsec's Keras adapter first)"
        )
    return keras


# -- what a configuration may hold --------------------------------------------------------------------------------


def _describe(node: dict[str, Any], *, legacy: bool) -> str | None:
    """Why one configured object could run code when deserialised; ``None`` for a Keras built-in."""
    cls = node["class_name"]
    module = node.get("module")
    registered = node.get("registered_name")
    name = node.get("config", {}).get("name") if isinstance(node.get("config"), dict) else None
    named = f" {printable(name, 60)!r}" if isinstance(name, str) else ""
    if cls in _CODE_CLASSES:
        return f"a Lambda layer{named} (Python code stored in the file)" if cls != "__lambda__" else "a Python lambda"
    if cls in _DATA_ENCODINGS:
        return None
    if cls == "function":  # a function by name: among Keras's built-ins ("builtins"), or a custom one
        if module == "builtins" or (isinstance(module, str) and (module == "keras" or module.startswith("keras."))):
            return None
        return f"the custom function {printable(node.get('config'), 60)!r} from module {printable(module, 60)!r}"
    if registered not in (None, cls) or ">" in str(cls):
        return f"the custom object {printable(registered or cls, 60)!r}"
    if module is None:
        return None if legacy else f"the unregistered custom object {printable(cls, 60)!r}"
    if not isinstance(module, str) or not (module == "keras" or module.startswith("keras.")):
        return f"the custom object {printable(cls, 60)!r} from module {printable(module, 60)!r}"
    if module.startswith(_DENIED_MODULES):
        return f"the Keras API {printable(module, 60)}.{printable(cls, 60)} (not a model part)"
    return None


def unsafe_objects(config: Any, *, legacy: bool = False) -> list[str]:
    """What in a Keras model configuration could run code when deserialised, in words (empty: only Keras's own
    layers, initialisers, activations and the like).

    Refused: ``Lambda`` layers and Python lambdas; classes whose ``module`` is not Keras's (custom layers) or that
    carry a ``registered_name`` (objects registered with ``keras.saving.register_keras_serializable``); functions
    from modules other than Keras's; and Keras modules of non-model APIs (``keras.utils``, ``keras.config``,
    ``keras.saving``). ``legacy``: a Keras 2 / ``.h5`` configuration, whose objects name no module (Keras then
    resolves their class names among its built-ins only, so a missing module is allowed there). The training
    configuration (``compile_config``) is skipped: it is never deserialised (models load with ``compile=False``).

    >>> unsafe_objects({"module": "keras.layers", "class_name": "Dense", "config": {}, "registered_name": None})
    []
    >>> unsafe_objects({"class_name": "Lambda", "config": {"name": "evil"}}, legacy=True)
    ["a Lambda layer 'evil' (Python code stored in the file)"]
    """
    found: list[str] = []
    stack = [config]
    nodes = 0
    while stack:
        node = stack.pop()
        nodes += 1
        if nodes > _MAX_NODES:
            raise ModelLoadError(f"the Keras model configuration has more than {_MAX_NODES} entries; not loaded")
        if isinstance(node, dict):
            if isinstance(node.get("class_name"), str):
                why = _describe(node, legacy=legacy)
                if why is not None and why not in found:
                    found.append(why)
            stack.extend(v for k, v in node.items() if k != "compile_config")
        elif isinstance(node, list):
            stack.extend(node)
    return found


def read_config(path: Path, fmt: ModelFormat) -> Any:
    """The model configuration of a ``.keras`` archive (``config.json``) or a legacy ``.h5`` file (its
    ``model_config`` attribute), parsed as JSON without any Keras code; :class:`ModelLoadError` when absent."""
    where = printable(str(path))
    try:
        if fmt is ModelFormat.KERAS:
            with zipfile.ZipFile(path) as z:
                info = z.getinfo("config.json")
                if info.file_size > _MAX_CONFIG_BYTES:
                    raise ModelLoadError(f"{where!r}: config.json is larger than {_MAX_CONFIG_BYTES >> 20} MiB")
                text = z.read(info).decode("utf-8")
        else:
            try:
                import h5py
            except ImportError:
                raise ConfigError(f"reading .h5 models needs h5py; {EXTRA_HINT}") from None
            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
            if raw is None:
                raise ModelLoadError(
                    f"{where!r} is an HDF5 file without a model configuration (weights only?); save the whole "
                    "model with model.save('model.keras')"
                )
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        return json.loads(text)
    except (KeyError, OSError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read the Keras model configuration of {where!r}: {printable(e)}") from None


def check_config(config: Any, *, legacy: bool, source: str) -> None:
    """:class:`UnsafeModelError` when :func:`unsafe_objects` finds anything in ``config``."""
    found = unsafe_objects(config, legacy=legacy)
    if found:
        listed = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
        raise UnsafeModelError(
            f"{printable(source)!r} holds {listed}. Loading it would run code from the file or from modules it "
            "names, so it was not loaded. Pass --trust-model if you trust its author (the code then runs, and "
            "custom objects must be importable), or rebuild the model from Keras's built-in layers"
        )


# -- the model as a torch module ------------------------------------------------------------------------------------


def _output_layer(model: Any) -> Any:
    """The layer that produces the model's (single) output, looking inside a nested model."""
    outputs = getattr(model, "outputs", None)
    layer = None
    if outputs and len(outputs) == 1 and getattr(outputs[0], "_keras_history", None) is not None:
        layer = outputs[0]._keras_history.operation
    elif getattr(model, "layers", None):
        layer = model.layers[-1]
    if layer is not None and layer is not model and getattr(layer, "layers", None) and hasattr(layer, "outputs"):
        return _output_layer(layer)
    return layer


def _final_activation(model: Any) -> str:
    layer = _output_layer(model)
    if layer is None:
        return "unknown"
    if type(layer).__name__ == "Softmax":
        return "softmax"
    activation = getattr(layer, "activation", None)
    return str(getattr(activation, "__name__", "linear")) if activation is not None else "linear"


OUTPUT_KINDS = {
    "logits": "the model's outputs are used as logits",
    "probabilities": (
        "the model ends in a softmax: the logarithms of its probabilities (clipped at the smallest float32) are "
        "used as logits; gradients vanish where a probability underflows"
    ),
    "binary-logit": "the model's single output z is used as the logits (0, z) of two classes",
    "binary-probability": (
        "the model ends in a sigmoid with one output p: log(1 - p) and log(p) (clipped) are used as the logits of "
        "two classes"
    ),
}


def output_to_logits(out: torch.Tensor, kind: str) -> torch.Tensor:
    """A Keras model's outputs ``(n, k)`` as the logits modelsec reads (see :data:`OUTPUT_KINDS`)."""
    tiny = torch.finfo(out.dtype).tiny
    if kind == "logits":
        return out
    if kind == "probabilities":
        return out.clamp_min(tiny).log()
    if kind == "binary-logit":
        return torch.cat([torch.zeros_like(out), out], dim=1)
    if kind == "binary-probability":
        return torch.cat([(1 - out).clamp_min(tiny).log(), out.clamp_min(tiny).log()], dim=1)
    raise ValueError(f"unknown output kind {kind!r}")


def _output_kind(model: Any) -> tuple[str, str]:
    """How to read the model's outputs (a key of :data:`OUTPUT_KINDS`) and its final activation;
    :class:`ModelLoadError` for a model with several outputs or outputs that are not ``(batch, classes)``."""
    outputs = getattr(model, "outputs", None)
    if isinstance(outputs, (list, tuple)) and len(outputs) > 1:
        raise ModelLoadError(
            f"the Keras model has {len(outputs)} outputs; modelsec audits a classifier with one output of class "
            "scores. Save the classifier's head alone (keras.Model(model.inputs, model.outputs[i])) and audit that"
        )
    try:
        shape = tuple(model.output_shape)
    except (AttributeError, ValueError, TypeError):
        shape = ()
    activation = _final_activation(model)
    if len(shape) != 2:
        raise ModelLoadError(f"the Keras model's output has shape {shape or 'unknown'}; expected (batch, classes)")
    if shape[1] == 1:
        if activation == "softmax":
            raise ModelLoadError("the Keras model ends in a softmax over one output (always 1); it cannot classify")
        return ("binary-probability" if activation == "sigmoid" else "binary-logit"), activation
    return ("probabilities" if activation == "softmax" else "logits"), activation


class KerasModule(nn.Module):
    """A Keras model (torch backend) as a torch module from modelsec's records to logits.

    Args:
        model: the Keras model; it is a submodule, so ``parameters()`` are its weights.
        layout: from records to the model's input (:func:`~modelsec.models.layout.plan_layout`).
        output: how its outputs become logits (a key of :data:`OUTPUT_KINDS`).

    The model runs with ``training=self.training``: in eval mode (as :class:`Classifier` runs it) dropout is off
    and batch normalisation uses its moving statistics.
    """

    def __init__(self, model: Any, layout: Layout, output: str) -> None:
        super().__init__()
        if output not in OUTPUT_KINDS:
            raise ValueError(f"unknown output kind {output!r}")
        self.model = model
        self.layout = layout
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keras = import_keras()
        with keras.device(x.device.type if x.device.index is None else f"{x.device.type}:{x.device.index}"):
            out = self.model(to_model_layout(x, self.layout), training=self.training)
        if not isinstance(out, torch.Tensor):
            raise ModelLoadError(f"the Keras model returned {type(out).__name__}, not one tensor of scores")
        return output_to_logits(out, self.output)


def model_input_shape(model: Any) -> tuple[int | None, ...]:
    """The input shape of one record of a built Keras model (without the batch axis); :class:`ModelLoadError` for a
    model with several inputs or an unknown one."""
    try:
        shape = model.input_shape
    except (AttributeError, ValueError, TypeError):
        raise ModelLoadError(
            "the Keras model's input shape is unknown: it was never built (a Sequential model without "
            "keras.Input, or a subclassed model never called). Start it with keras.Input(shape), as in "
            "keras.Sequential([keras.Input((28, 28)), ...]), or call it once on a batch, then save it again"
        ) from None
    if isinstance(shape, list) or not isinstance(shape, tuple) or (shape and isinstance(shape[0], tuple)):
        raise ModelLoadError(
            "the Keras model has several inputs; modelsec audits models with one input (the records of --data)"
        )
    return tuple(None if s is None else int(s) for s in shape[1:])


def keras_module(model: Any, data_shape: tuple[int, ...] | None = None) -> KerasModule:
    """The torch module modelsec attacks for a Keras model on the torch backend: ``data_shape`` is the shape of one
    record as modelsec holds it (``None``: the one the model implies, :func:`~modelsec.models.layout.records_shape`);
    :class:`ModelLoadError` when the records cannot be mapped to the model's input."""
    if not isinstance(model, nn.Module):
        raise ConfigError(
            "the Keras model does not run on the torch backend; set KERAS_BACKEND=torch before importing keras"
        )
    model_shape = model_input_shape(model)
    shape = tuple(data_shape) if data_shape is not None else records_shape(model_shape)
    output, _ = _output_kind(model)
    return KerasModule(model, plan_layout(shape, model_shape), output)


@contextlib.contextmanager
def _seeded_python_random(seed: int) -> Iterator[None]:
    """Python's ``random`` seeded for the block, then restored: Keras draws the seeds of unseeded initialisers
    from it (``keras.random.make_default_seed``), and the caller's random state stays as it was."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def fresh_model(model: Any, seed: int) -> Any:
    """The same Keras architecture with freshly initialised weights, the same for the same ``seed`` (for reference
    models and for training a defended model from the initial weights). Initialisers that record their own seed
    keep it. The copy is built from the model's configuration, so a model loaded from a file was checked already."""
    keras = import_keras()
    with _seeded_python_random(seed):
        return keras.models.clone_model(model)


# -- modelsec's record inside a .keras archive ------------------------------------------------------------------------

CARD_ENTRY = "modelsec.json"
"""The entry of a ``.keras`` archive written by ``modelsec harden`` that holds the model's card (the JSON of
:meth:`~modelsec.models.card.ModelCard.to_header`): plain JSON beside Keras's own entries, which Keras ignores."""
_MAX_CARD_BYTES = 16 * 1024 * 1024


def read_card_entry(path: str | Path) -> dict[str, Any] | None:
    """The JSON object of a ``.keras`` archive's :data:`CARD_ENTRY` (read with ``zipfile`` and ``json`` only: no
    Keras code), or ``None`` when the archive has none; :class:`ModelLoadError` for one that is not a JSON
    object."""
    where = printable(str(path))
    try:
        with zipfile.ZipFile(path) as z:
            if CARD_ENTRY not in z.namelist():
                return None
            info = z.getinfo(CARD_ENTRY)
            if info.file_size > _MAX_CARD_BYTES:
                raise ModelLoadError(f"{where!r}: {CARD_ENTRY} is larger than {_MAX_CARD_BYTES >> 20} MiB")
            value = json.loads(z.read(info).decode("utf-8"))
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {CARD_ENTRY} of {where!r}: {printable(e)}") from None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{where!r}: {CARD_ENTRY} is not a JSON object")
    return value


def save_keras(model: Any, out: Path, header: dict[str, Any]) -> None:
    """Save the Keras ``model`` as a ``.keras`` archive at ``out`` (atomically: written beside it, then renamed)
    with ``header`` (a card's :meth:`~modelsec.models.card.ModelCard.to_header`) as its :data:`CARD_ENTRY`."""
    if out.suffix != ".keras":
        raise ConfigError(f"a Keras model is saved as a .keras archive; name the output *.keras, not {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.keras")  # Keras checks the extension of the file it writes
    model.save(tmp)
    with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(CARD_ENTRY, json.dumps(header, indent=2) + "\n")
    tmp.replace(out)


# -- per-example gradients (DP-SGD) -----------------------------------------------------------------------------------

# layers whose output for one record depends on that record and the weights only (no batch statistics, no
# random draws in training, no state updated by a forward pass): per-example gradients of them are exact
_PER_EXAMPLE_LAYERS = frozenset(
    {
        "InputLayer", "Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D",
        "Conv1DTranspose", "Conv2DTranspose", "Flatten", "Reshape", "Permute", "RepeatVector", "Activation", "ReLU",
        "LeakyReLU", "ELU", "PReLU", "Softmax", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
        "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
        "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
        "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
        "UpSampling1D", "UpSampling2D", "LayerNormalization", "GroupNormalization", "Rescaling", "Add", "Subtract",
        "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Identity", "Sequential", "Functional",
    }
)  # fmt: skip


def check_per_example_layers(model: Any) -> None:
    """:class:`ConfigError` naming the first layer of ``model`` (nested models included) whose per-example
    gradient modelsec cannot compute exactly: one outside the stateless layers listed here (BatchNormalization
    mixes the records of a batch; Dropout and the noise layers draw random masks from a state that a per-example
    pass would not advance as training does; custom layers are unknown)."""
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        kind = type(layer).__name__
        if kind not in _PER_EXAMPLE_LAYERS:
            why = {
                "BatchNormalization": "it normalises with statistics of the whole batch, so one record's influence "
                "is not bounded by its own clipped gradient; use LayerNormalization or GroupNormalization",
                "Dropout": "it draws a random mask in training; remove it for DP training (DP-SGD's noise "
                "regularises already)",
            }.get(kind, "modelsec computes exact per-example gradients only for Keras's stateless layers")
            raise ConfigError(f"DP-SGD cannot train the Keras layer {printable(layer.name, 60)!r} ({kind}): {why}")
        stack.extend(getattr(layer, "layers", []))


def per_example_gradients(
    module: KerasModule, x: torch.Tensor, y: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The gradient of each record's cross-entropy ``loss(module(x[i]), y[i])`` with respect to each trainable
    parameter of ``module`` (in ``module.parameters()`` order, each of shape ``(n, *parameter.shape)``), and the
    logits ``(n, classes)``.

    Opacus computes per-example gradients by hooking torch layers (``nn.Linear``, ...) or, in its functorch mode,
    by ``torch.func.functional_call`` on a layer; a Keras model on the torch backend has neither: its layers read
    their weights from Keras variables, not from module attributes. So the whole model is differentiated here with
    ``torch.func.vmap(torch.func.grad(...))``, each Keras variable's value swapped for the function's argument for
    the call (then restored). Check the layers first (:func:`check_per_example_layers`)."""
    from torch.func import grad, vmap

    model = module.model
    variables = [v for v in model.trainable_variables]
    params = [p for p in module.parameters() if p.requires_grad]
    by_id = {id(v._value): v for v in variables}
    if len(variables) != len(params) or any(id(p) not in by_id for p in params):
        raise ValueError("the Keras model's trainable variables are not the module's parameters")  # a bug
    ordered = [by_id[id(p)] for p in params]

    def loss(weights: tuple[torch.Tensor, ...], xi: torch.Tensor, yi: torch.Tensor) -> tuple[Any, Any]:
        saved = [v._value for v in ordered]
        try:
            for v, w in zip(ordered, weights, strict=True):
                v._value = w
            logits = module(xi.unsqueeze(0))
        finally:
            for v, old in zip(ordered, saved, strict=True):
                v._value = old
        return functional.cross_entropy(logits, yi.unsqueeze(0)), logits.squeeze(0)

    if len(x) == 0:
        with torch.no_grad():
            classes = module(torch.zeros((1, *x.shape[1:]), device=x.device)).shape[1]
        return [torch.zeros((0, *p.shape), device=p.device) for p in params], x.new_zeros((0, classes))
    weights = tuple(p.detach() for p in params)
    grads, logits = vmap(grad(loss, has_aux=True), in_dims=(None, 0, 0))(weights, x, y)
    return list(grads), logits


# -- what the model does to its inputs ------------------------------------------------------------------------------


def _numbers(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64).reshape(-1)


def _layers(model: Any) -> Iterator[Any]:
    """The model's layers, those of nested models included (in order)."""
    for layer in getattr(model, "layers", None) or []:
        yield layer
        if layer is not model and getattr(layer, "layers", None):
            yield from _layers(layer)


def input_scaling_notes(model: Any, bounds: tuple[float, float]) -> list[str]:
    """Notes on the layers that rescale the model's inputs inside it (``Rescaling``, ``Normalization``), for the
    result: the audit attacks the data's values within the data's bounds (eps in the data's units), whatever the
    model does to them. A model that expects another scale (pixels in 0..255 where the data are in [0, 1]) gets a
    note saying so: the data's scale is the user's to declare (a data file in 0..255 with ``--bounds 0,255``)."""
    low, high = bounds
    notes: list[str] = []
    for layer in _layers(model):
        kind = type(layer).__name__
        if kind == "Rescaling":
            scale, offset = _numbers(layer.scale), _numbers(layer.offset)
            a, b = float((low * scale + offset).min()), float((high * scale + offset).max())
            note = (
                f"the model rescales its inputs inside (Rescaling: x * {float(scale.mean()):.4g} + "
                f"{float(offset.mean()):.4g}): the data's bounds [{low:g}, {high:g}] reach its next layer as "
                f"[{a:.3g}, {b:.3g}]; eps stays in the data's units"
            )
            if b - a < 0.05 * (high - low) and float(scale.max()) < 1:
                note += (
                    f"; such a small range suggests a model trained on inputs {1 / float(scale.mean()):.4g} times "
                    "larger (pixels in 0..255?): if so, give the data on that scale and declare their bounds "
                    "(--bounds)"
                )
            notes.append(note)
        elif kind == "Normalization" and getattr(layer, "built", False) and hasattr(layer, "mean"):
            mean, variance = _numbers(layer.mean), _numbers(layer.variance)
            if getattr(layer, "invert", False):
                continue
            note = (
                f"the model normalises its inputs inside (Normalization: means {float(mean.min()):.3g} to "
                f"{float(mean.max()):.3g}, standard deviations {float(variance.min()) ** 0.5:.3g} to "
                f"{float(variance.max()) ** 0.5:.3g}); eps stays in the data's units"
            )
            span = high - low
            if float(mean.min()) < low - 0.5 * span or float(mean.max()) > high + 0.5 * span:
                note += (
                    f"; its means lie far outside the data's bounds [{low:g}, {high:g}], so it was adapted to data "
                    "on another scale: give the data on that scale and declare their bounds (--bounds)"
                )
            notes.append(note)
    return notes


# -- the adapter contract ---------------------------------------------------------------------------------------------


def _classifier(model: Any, request: LoadRequest, name: str) -> tuple[Classifier, KerasModule, list[str]]:
    keras = import_keras()
    module = keras_module(model, request.input_shape)
    with eval_mode(module), torch.no_grad():  # in training mode the probe would move BatchNormalization's statistics
        probe = module(torch.zeros((1, *module.layout.data_shape)))
    num_classes = int(probe.shape[1])
    if request.num_classes is not None and request.num_classes != num_classes:
        raise ModelLoadError(f"the Keras model has {num_classes} classes but the data have {request.num_classes}")
    _, activation = _output_kind(model)
    notes = [
        f"Keras {keras.__version__} model {printable(getattr(model, 'name', '?'), 80)!r} "
        f"({type(model).__name__}) run on the torch backend",
        module.layout.describe(),
        OUTPUT_KINDS[module.output] + ("" if activation in ("linear", "softmax") else f" (after {activation!r})"),
    ]
    bounds = request.bounds or (0.0, 1.0)
    notes += input_scaling_notes(model, (float(bounds[0]), float(bounds[1])))
    classifier = Classifier(
        module,
        input_shape=module.layout.data_shape,
        num_classes=num_classes,
        bounds=(float(bounds[0]), float(bounds[1])),
        capability=Capability.GRADIENTS,
        device=request.device,
        name=name,
    )
    return classifier, module, notes


def load_keras_model(path: Path, fmt: ModelFormat, *, trust_model: bool, device: str = "cpu") -> tuple[Any, str]:
    """The Keras model of a ``.keras`` archive or legacy ``.h5`` file, loaded after checking its configuration (see
    the module), and the SHA-256 of the bytes loaded."""
    from modelsec.models.loading import sha256_file

    where = printable(str(path))
    with tempfile.TemporaryDirectory(prefix="modelsec-keras-") as tmp:
        # Keras picks its reader by the file's extension, and the bytes checked must be the bytes loaded: a copy
        copy = Path(tmp) / ("model.keras" if fmt is ModelFormat.KERAS else "model.h5")
        try:
            shutil.copyfile(path, copy)
        except OSError as e:
            raise ModelLoadError(f"cannot read model file {where!r}: {e.strerror}") from None
        config = read_config(copy, fmt)
        if not trust_model:
            check_config(config, legacy=fmt is ModelFormat.KERAS_H5, source=str(path))
        keras = import_keras()
        try:
            with keras.device(device):
                model = keras.saving.load_model(copy, compile=False, safe_mode=not trust_model)
        except Exception as e:  # a foreign deserialiser: whatever it raises on a bad file is the file's fault
            raise ModelLoadError(f"Keras could not load {where!r}: {printable(e)}") from None
        return model, sha256_file(copy)


def load(path: Path, fmt: ModelFormat, request: LoadRequest) -> Any:
    """Load a ``.keras`` archive or legacy ``.h5`` file after checking its configuration (see the module)."""
    from modelsec.models.card import ModelCard
    from modelsec.models.loading import LoadedModel

    model, digest = load_keras_model(path, fmt, trust_model=request.trust_model, device=request.device)
    header = read_card_entry(path) if fmt is ModelFormat.KERAS else None
    card = ModelCard() if header is None else ModelCard.from_header(header, source=str(path))
    classifier, _, notes = _classifier(model, request, Path(path).name)
    if request.trust_model:
        notes.append("loaded with --trust-model: Keras's safe mode was off and custom objects were allowed")
    info = ModelInfo(
        path=str(path),
        sha256=digest,
        arch=f"keras:{type(model).__name__}",
        format=fmt.value,
        num_classes=classifier.num_classes,
        input_shape=list(classifier.input_shape),
        parameters=classifier.num_parameters(),
        notes=notes,
    )
    return LoadedModel(classifier=classifier, info=info, card=card)


def wraps(obj: Any) -> bool:
    """True for a Keras model object (``keras.Model`` or a subclass), told by its classes' modules, so that Keras
    is not imported to answer."""
    return any(c.__name__ == "Model" and c.__module__.startswith("keras") for c in type(obj).__mro__)


def wrap(obj: Any, request: LoadRequest) -> Any:
    """A Keras model object as a :class:`LoadedModel` (the object is the user's own: nothing is checked for code)."""
    from modelsec.models.loading import LoadedModel

    import_keras()
    classifier, _, notes = _classifier(obj, request, printable(getattr(obj, "name", "keras"), 80))
    info = ModelInfo(
        path=None,
        sha256=None,
        arch=f"keras:{type(obj).__name__}",
        format="keras",
        num_classes=classifier.num_classes,
        input_shape=list(classifier.input_shape),
        parameters=classifier.num_parameters(),
        notes=notes,
    )
    return LoadedModel(classifier=classifier, info=info)
