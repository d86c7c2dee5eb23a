"""ONNX models (``.onnx``): converted to a differentiable torch module, verified against onnxruntime.

What loading does, in order:

1. **Safety.** The file is parsed with ``onnx.load(path, load_external_data=False)``; every tensor that keeps its
   data in an external file is checked before any external byte is read: its ``location`` must be a relative path
   that resolves (symlinks followed) to a regular file inside the model file's folder. Anything else (an absolute
   path, ``..``, a symlink leading out) raises :class:`~modelsec.core.errors.UnsafeModelError`, even with
   ``--trust-model``: reading it would disclose a file the model's author chose (the path-traversal CVEs of
   ``onnx``'s loader, CVE-2022-25882 and CVE-2024-27318). modelsec then reads the checked bytes itself.
2. **Conversion.** :class:`~modelsec.models.adapters.onnx_torch.OnnxGraphModule` interprets the graph with torch
   operations (why not onnx2torch: see that module), so the audit gets gradients (``Capability.GRADIENTS``).
   A graph with operators the interpreter lacks runs through onnxruntime instead, as a score-only model
   (``Capability.SCORES``: black-box attacks only), with a note naming the missing operators.
3. **Verification.** The converted module's logits are compared with onnxruntime's (CPU provider) on seeded random
   inputs within the data's bounds at load, and again on the audited records when the audit runs
   (:attr:`LoadedModel.check_records <modelsec.models.loading.LoadedModel.check_records>`); a difference above
   :data:`TOLERANCE` (times the largest logit, when above 1) refuses the model with the difference
   (:class:`~modelsec.core.errors.ModelLoadError`). A graph that draws random numbers cannot be compared call for
   call; it is reported as unverified.
4. **Layout.** modelsec holds records channels-first, ``(C, H, W)``. A graph whose input takes another per-record
   shape with the same number of elements gets the records reshaped (``(784,)`` for a flattened MNIST MLP), or
   permuted to channels-last when it takes ``(H, W, C)`` with C of 1 or 3 (TensorFlow exports); anything else is
   refused with both shapes. A graph with a fixed batch size is run in chunks of that size.
5. **Outputs.** The graph's first output is read as logits, except when it is a ``Softmax`` (:func:`ends_in_softmax`):
   its probabilities are then compared with onnxruntime's as they are, and their logarithms are what modelsec
   attacks (as for a Keras model ending in a softmax), so that cross-entropy losses and membership scores read
   the model's own probabilities rather than a softmax of them.

What the adapter did (the layout mapping, the fallback, the verification) is recorded in the result's model notes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelsec.core.errors import ConfigError, ModelLoadError, UnsafeModelError
from modelsec.core.seeding import generator
from modelsec.models.adapters import LoadRequest
from modelsec.models.adapters.onnx_torch import DTYPES, OnnxGraphModule, UnsupportedOnnxGraph
from modelsec.models.base import Capability, Classifier
from modelsec.models.formats import ModelFormat
from modelsec.models.torch import in_fixed_batches

TOLERANCE = 1e-4
"""The largest difference allowed between the converted module's logits and onnxruntime's, for logits up to 1 in
magnitude; above, relative to the largest logit (float32 round-off grows with the values)."""

VERIFY_RANDOM_INPUTS = 64
VERIFY_SEED = 0
EXTRA = "pip install 'modelsec[onnx]'"


def _frameworks() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ConfigError(f"loading ONNX models needs onnx and onnxruntime: {EXTRA}") from None
    return onnx, onnxruntime


# -- 1. external data, checked before it is read ------------------------------------------------------------------


def _tensors(graph: Any) -> list[Any]:
    """Every tensor a graph holds: initializers, sparse initializers, node attributes, and those of subgraphs."""
    out = list(graph.initializer)
    for sparse in graph.sparse_initializer:
        out += [sparse.values, sparse.indices]
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                out.append(a.t)
            out += list(a.tensors)
            if a.HasField("g"):
                out += _tensors(a.g)
            for g in a.graphs:
                out += _tensors(g)
    return out


def _external_location(tensor: Any) -> tuple[str | None, int, int | None]:
    entries = {e.key: e.value for e in tensor.external_data}
    offset = int(entries.get("offset", 0) or 0)
    length = entries.get("length")
    return entries.get("location"), offset, None if length in (None, "") else int(length)


def check_external_data(model: Any, folder: Path) -> dict[str, Path]:
    """The external data files of ``model`` (an ``onnx.ModelProto`` parsed without its external data), each
    resolved inside ``folder``; :class:`UnsafeModelError` for one that lies outside it (before any is read)."""
    from onnx import TensorProto

    root = folder.resolve()
    files: dict[str, Path] = {}
    for tensor in _tensors(model.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location, _, _ = _external_location(tensor)
        if not location:
            raise ModelLoadError(f"tensor {tensor.name!r} keeps its data externally but names no file")
        target = (root / location).resolve()
        outside = os.path.isabs(location) or location.startswith(("\\", "/")) or ":" in location
        if outside or not target.is_relative_to(root):
            raise UnsafeModelError(
                f"tensor {tensor.name!r} reads its data from {location!r}, outside the model's folder {str(root)!r}; "
                "modelsec reads external data only from files inside the model's own folder (path traversal). "
                "Put the data file next to the model and name it by a relative path, or save the model with its "
                "data inside (onnx.save(model, path, save_as_external_data=False))"
            )
        if not target.is_file():
            raise ModelLoadError(f"tensor {tensor.name!r} reads its data from {location!r}, which does not exist")
        files[location] = target
    return files


def _read_external_data(model: Any, files: dict[str, Path]) -> None:
    """Read every external tensor's bytes (from the files :func:`check_external_data` approved) into the model."""
    from onnx import TensorProto

    for tensor in _tensors(model.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location, offset, length = _external_location(tensor)
        assert location is not None
        path = files[location]
        size = path.stat().st_size
        end = size if length is None else offset + length
        if offset < 0 or end > size:
            raise ModelLoadError(f"tensor {tensor.name!r}: bytes {offset}..{end} lie beyond the end of {location!r}")
        with path.open("rb") as f:
            f.seek(offset)
            tensor.raw_data = f.read(end - offset)
        del tensor.external_data[:]
        tensor.data_location = TensorProto.DEFAULT


def read_model(path: Path) -> Any:
    """The ``onnx.ModelProto`` in ``path``, its external data checked (:func:`check_external_data`) and read in."""
    onnx, _ = _frameworks()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # a protobuf decode error of an untrusted file: the user's file, not a bug
        raise ModelLoadError(f"{str(path)!r} is not a readable ONNX model: {e}") from None
    _read_external_data(model, check_external_data(model, path.parent))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelLoadError(f"{str(path)!r} is not a valid ONNX model: {str(e).splitlines()[0]}") from None
    return model


# -- 2. the module: converted, or onnxruntime as a score-only model --------------------------------------------


class OnnxRuntimeModule(nn.Module):
    """The graph run by onnxruntime (CPU): scores without gradients (a black-box model). The output is detached
    from the input: attacks on it must not ask for gradients (``Capability.SCORES``)."""

    def __init__(self, model_bytes: bytes) -> None:
        super().__init__()
        _, ort = _frameworks()
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime refuses the graph: the user's file
            raise ModelLoadError(f"onnxruntime cannot run this model: {str(e).splitlines()[0]}") from None
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().numpy()
        out = self.session.run(None, {self.input_name: arr})[0]
        return torch.from_numpy(np.asarray(out))


@dataclass(frozen=True)
class InputLayout:
    """How modelsec's records (``record_shape``) become the graph's input (``model_shape``, per record):
    ``"same"``, ``"reshape"`` (the same elements in row-major order), or ``"channels-last"`` ((C, H, W) permuted to
    (H, W, C))."""

    record_shape: tuple[int, ...]
    model_shape: tuple[int, ...]
    kind: str

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "channels-last":
            return x.permute(0, 2, 3, 1)
        if self.kind == "reshape":
            return x.reshape(x.shape[0], *self.model_shape)
        return x

    def note(self) -> str | None:
        if self.kind == "same":
            return None
        how = "permuted to channels-last" if self.kind == "channels-last" else "reshaped"
        return f"records of shape {self.record_shape} {how} to the graph's input shape {self.model_shape}"


def input_layout(declared: list[int | None], record_shape: tuple[int, ...] | None) -> InputLayout:
    """Map modelsec's per-record shape to the graph's declared per-record shape (``None``: a symbolic dimension);
    :class:`ModelLoadError` when it cannot."""
    known = all(d is not None for d in declared)
    model_shape = tuple(int(d) for d in declared if d is not None)
    if record_shape is None:
        if not known:
            raise ConfigError(
                f"the ONNX model's input shape {_shown(declared)} has symbolic dimensions; pass --data so that "
                "modelsec knows the records' shape"
            )
        return InputLayout(model_shape, model_shape, "same")
    record_shape = tuple(int(s) for s in record_shape)
    if not known:
        fits = len(declared) == len(record_shape) and all(
            d is None or d == s for d, s in zip(declared, record_shape, strict=True)
        )
        if fits:
            return InputLayout(record_shape, record_shape, "same")
    elif model_shape == record_shape:
        return InputLayout(record_shape, model_shape, "same")
    elif (
        len(record_shape) == 3
        and record_shape[0] in (1, 3)
        and model_shape == (record_shape[1], record_shape[2], record_shape[0])
    ):
        return InputLayout(record_shape, model_shape, "channels-last")
    elif math.prod(model_shape) == math.prod(record_shape):
        return InputLayout(record_shape, model_shape, "reshape")
    raise ModelLoadError(
        f"the ONNX model takes records of shape {_shown(declared)} but the data have {record_shape} "
        f"({math.prod(record_shape)} values each); modelsec maps records to the model only when the number of "
        "values agrees (a reshape, or channels-first to channels-last). Check --data"
    )


def _shown(declared: list[int | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in declared) + ")"


class OnnxClassifierModule(nn.Module):
    """modelsec's records in, the graph's first output out (float32): the layout mapped, the input cast to the
    graph's type, and the batch split in chunks when the graph has a fixed batch size (padded with zeros)."""

    def __init__(self, graph: nn.Module, layout: InputLayout, dtype: torch.dtype, fixed_batch: int | None) -> None:
        super().__init__()
        self.graph = graph
        self.layout = layout
        self.dtype = dtype
        self.fixed_batch = fixed_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layout.to_model(x).to(self.dtype)
        return in_fixed_batches(self.graph, x, self.fixed_batch).float()


def ends_in_softmax(graph: Any) -> bool:
    """Whether the graph's first output is a ``Softmax`` over the classes (through ``Identity`` / ``Cast`` nodes):
    probabilities, not logits."""
    producers = {o: n for n in graph.node for o in n.output}
    name = graph.output[0].name
    for _ in range(len(graph.node) + 1):
        node = producers.get(name)
        if node is None or node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type not in ("Identity", "Cast"):
            return node.op_type == "Softmax"
        name = node.input[0]
    return False


class ProbabilitiesAsLogits(nn.Module):
    """A module returning probabilities, as the log-probabilities modelsec reads as logits (a softmax of them gives
    the probabilities back). Probabilities are clipped at the smallest normal float first, so an underflowed one
    gives a large negative logit, not -inf (its gradient then vanishes)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        return out.clamp_min(torch.finfo(out.dtype).tiny).log()


# -- 3. verification ------------------------------------------------------------------------------------------


def compare_with_runtime(module: nn.Module, reference: nn.Module, x: torch.Tensor, where: str) -> float:
    """The largest difference between ``module``'s and onnxruntime's (``reference``) outputs on ``x``;
    :class:`ModelLoadError` when above :data:`TOLERANCE` (scaled by the largest output above 1)."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    with torch.no_grad():
        ours = module(x.to(device)).double().cpu()
        theirs = reference(x).double()
    if ours.shape != theirs.shape:
        raise ModelLoadError(f"the converted ONNX model returns {tuple(ours.shape)}, onnxruntime {tuple(theirs.shape)}")
    same_nan = ours.isnan() & theirs.isnan()
    diff = torch.where(same_nan, 0.0, (ours - theirs).abs().nan_to_num(nan=math.inf))
    largest = float(diff.max()) if diff.numel() else 0.0
    scale = max(1.0, float(theirs.abs().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).max()) if theirs.numel() else 1.0)
    if largest > TOLERANCE * scale:
        raise ModelLoadError(
            f"modelsec's conversion of the ONNX model disagrees with onnxruntime on {where}: logits differ by up to "
            f"{largest:.3g} (tolerance {TOLERANCE * scale:.3g}); the audit would attack another model than yours. "
            "Please report this with the model's operators"
        )
    return largest


@dataclass
class _Verifier:
    """Compares a converted module with onnxruntime on records (the audit's, through ``LoadedModel.check_records``)."""

    module: nn.Module
    reference: nn.Module

    def __call__(self, x: np.ndarray) -> None:
        compare_with_runtime(
            self.module, self.reference, torch.as_tensor(x, dtype=torch.float32), "the audited records"
        )


# -- 4. loading --------------------------------------------------------------------------------------------------


def _declared_input(model: Any) -> tuple[Any, list[int | None], int | None]:
    """The graph's one data input, its per-record dimensions (``None`` when symbolic) and its fixed batch size."""
    initialised = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initialised]
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ModelLoadError(f"the ONNX model has {len(inputs)} inputs {names}; modelsec audits models with one")
    value = inputs[0]
    if not value.type.HasField("tensor_type"):
        raise ModelLoadError(f"the ONNX model's input {value.name!r} is not a tensor")
    dims = [int(d.dim_value) if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    if len(dims) < 2:
        raise ModelLoadError(f"the ONNX model's input {value.name!r} has rank {len(dims)}; expected a batch axis first")
    batch = dims[0] if dims[0] and dims[0] > 0 else None
    return value, dims[1:], batch


def load(path: Path, fmt: ModelFormat, request: LoadRequest) -> Any:
    """Load an ONNX model file as a classifier (see the module docstring for what is checked and guessed)."""
    from modelsec.models.loading import LoadedModel, sha256_file
    from modelsec.results.audit import ModelInfo

    model = read_model(path)
    value, declared, fixed_batch = _declared_input(model)
    elem = int(value.type.tensor_type.elem_type)
    if elem not in (1, 10, 11, 16):
        raise ModelLoadError(f"the ONNX model's input has element type {elem}; modelsec feeds floating-point records")
    layout = input_layout(declared, request.input_shape)
    wrap = lambda graph: OnnxClassifierModule(graph, layout, DTYPES[elem], fixed_batch)  # noqa: E731
    reference = wrap(OnnxRuntimeModule(model.SerializeToString()))

    notes: list[str] = []
    if (note := layout.note()) is not None:
        notes.append(note)
    bounds = request.bounds or (0.0, 1.0)
    g = generator(VERIFY_SEED)
    x = torch.rand((VERIFY_RANDOM_INPUTS, *layout.record_shape), generator=g) * (bounds[1] - bounds[0]) + bounds[0]
    module: nn.Module
    verifier: _Verifier | None = None
    try:
        converted = OnnxGraphModule(model)
    except UnsupportedOnnxGraph as e:
        module, capability = reference, Capability.SCORES
        notes.append(
            "score-only: modelsec's ONNX converter lacks the operators "
            + ", ".join(e.operators)
            + ", so the model runs through onnxruntime without gradients (black-box attacks only)"
        )
    else:
        module, capability = wrap(converted), Capability.GRADIENTS
        if converted.random:
            notes.append(
                "converted to torch; not compared with onnxruntime because the graph draws random numbers ("
                + ", ".join(converted.random)
                + "), which modelsec draws from torch's generator"
            )
        else:
            largest = compare_with_runtime(module, reference, x, "random inputs within the data's bounds")
            verifier = _Verifier(module, reference)
            notes.append(
                f"converted to torch; logits agree with onnxruntime's within {largest:.2g} on random inputs "
                "(and are compared again on the audited records)"
            )

    with torch.no_grad():
        out = reference(x[:2])
    if out.ndim != 2:
        raise ModelLoadError(
            f"the ONNX model's first output has shape {tuple(out.shape)}; modelsec expects logits or scores of "
            "shape (n, classes)"
        )
    num_classes = int(out.shape[1])
    if ends_in_softmax(model.graph):  # compared with onnxruntime above as probabilities; attacked as their logs
        module = ProbabilitiesAsLogits(module)
        notes.append(
            "the graph ends in a Softmax: the logarithms of its probabilities (clipped at the smallest float32) are "
            "used as logits"
        )
    if request.num_classes is not None and request.num_classes != num_classes:
        raise ModelLoadError(
            f"the ONNX model has {num_classes} outputs but the data have {request.num_classes} classes"
        )
    classifier = Classifier(
        module,
        input_shape=layout.record_shape,
        num_classes=num_classes,
        bounds=(float(bounds[0]), float(bounds[1])),
        capability=capability,
        device=request.device if capability is Capability.GRADIENTS else "cpu",
        name=path.name,
    )
    parameters = sum(math.prod(t.dims) for t in model.graph.initializer if t.data_type in (1, 10, 11, 16))
    info = ModelInfo(
        path=str(path),
        sha256=sha256_file(path),
        arch=None,
        format=fmt.value,
        num_classes=num_classes,
        input_shape=list(layout.record_shape),
        parameters=int(parameters),
        capability=capability.name.lower(),
        notes=notes,
    )
    return LoadedModel(classifier=classifier, info=info, check_records=verifier)
