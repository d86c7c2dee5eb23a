"""An ONNX graph as a differentiable ``nn.Module``: modelsec's own small interpreter of the operators classifiers use.

Why not onnx2torch: it imports torchvision at import time (for ``torchvision.ops``), which this torch build does not
have, and it pins versions that do not install alongside modelsec's; the other converters are unmaintained. A
classifier needs a few dozen operators, each a line or two of torch, so modelsec interprets the graph itself:
initializers become parameters (floating point) or buffers (integers), and :meth:`OnnxGraphModule.forward` evaluates
the nodes in topological order with torch operations, so gradients flow from the logits back to the input.

:func:`unsupported_operators` lists what a graph needs beyond :data:`OPERATORS` (or beyond the attributes an
operator here handles), before anything runs; the adapter (:mod:`modelsec.models.adapters.onnx`) then runs such a
graph through onnxruntime as a score-only model instead.

Randomness in the graph (``RandomNormal(Like)``, ``RandomUniform(Like)``, ``Bernoulli``, ``Multinomial``,
``Dropout`` in training mode) draws from torch's global generator, as a torch module's own noise does, so that the
audit's randomness check (:func:`modelsec.audits.sanity.check_randomness`) sees a randomised model and the audit's
seeding makes its runs reproducible. The ``seed`` attribute of those operators is ignored: onnxruntime seeds its
generator once per session, so its outputs vary between calls too.

Only the first output of a node with several outputs is computed (``MaxPool``'s indices, ``Dropout``'s mask,
``BatchNormalization``'s training statistics, ``LayerNormalization``'s mean and inverse deviation); a graph that
uses another output is unsupported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

Env = dict[str, torch.Tensor]


class UnsupportedOnnxGraph(Exception):
    """The graph needs operators (or attributes of them) this interpreter lacks; ``operators`` names them."""

    def __init__(self, operators: Sequence[str]) -> None:
        self.operators = sorted(set(operators))
        super().__init__("unsupported ONNX operators: " + ", ".join(self.operators))


# ONNX TensorProto data types -> torch dtypes (the ones a classifier's graph casts between)
DTYPES: dict[int, torch.dtype] = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    16: torch.bfloat16,
}

RANDOM_OPERATORS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial"}
)


class Node:
    """One ONNX node: its operator, input and output names ("" for an omitted optional one), attributes as Python
    values (tensors as torch tensors), and the opset of the default domain."""

    def __init__(self, proto: Any, opset: int) -> None:
        from onnx import helper, numpy_helper

        self.op = str(proto.op_type)
        self.domain = str(proto.domain)
        self.name = str(proto.name)
        self.inputs = [str(i) for i in proto.input]
        self.outputs = [str(o) for o in proto.output]
        self.opset = opset
        self.attrs: dict[str, Any] = {}
        for a in proto.attribute:
            value = helper.get_attribute_value(a)
            if a.type == a.TENSOR:
                value = torch.from_numpy(np.array(numpy_helper.to_array(value)))
            elif isinstance(value, bytes):
                value = value.decode("utf-8", errors="replace")
            self.attrs[a.name] = value

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def input(self, env: Env, i: int) -> torch.Tensor | None:
        """The ``i``-th input's value; ``None`` when omitted."""
        if i >= len(self.inputs) or not self.inputs[i]:
            return None
        return env[self.inputs[i]]


def _ints(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


# -- operators ---------------------------------------------------------------------------------------------------
# Each takes (node, input values) and returns the first output's value.

Op = Callable[[Node, list[torch.Tensor | None]], torch.Tensor]


def _need(x: torch.Tensor | None) -> torch.Tensor:
    if x is None:
        raise UnsupportedOnnxGraph(["a required input is missing"])
    return x


def _gemm(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    a, b, c = _need(xs[0]), _need(xs[1]), xs[2] if len(xs) > 2 else None
    a = a.t() if n.attr("transA", 0) else a
    b = b.t() if n.attr("transB", 0) else b
    y = float(n.attr("alpha", 1.0)) * (a @ b)
    return y if c is None else y + float(n.attr("beta", 1.0)) * c


def _div(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    a, b = _need(xs[0]), _need(xs[1])
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def _softmax(fn: Callable[..., torch.Tensor]) -> Op:
    def op(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
        x = _need(xs[0])
        if n.opset >= 13:
            return fn(x, dim=int(n.attr("axis", -1)))
        axis = int(n.attr("axis", 1)) % x.ndim  # before opset 13: over the flattened dimensions from axis on
        flat = x.reshape(math.prod(x.shape[:axis]), -1)
        return fn(flat, dim=1).reshape(x.shape)

    return op


def _pairs_to_torch(pads: list[int]) -> list[int]:
    """ONNX pads ``[b1, b2, ..., e1, e2, ...]`` (first axis first) as torch's ``F.pad`` order (last axis first)."""
    k = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(k)):
        out += [pads[i], pads[i + k]]
    return out


def _spatial_pads(n: Node, x: torch.Tensor, kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """The explicit pads of a Conv or pooling node (``[b1, ..., e1, ...]`` over the spatial axes), auto_pad resolved
    for this input's size."""
    k = len(kernel)
    auto = n.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        return list(n.attr("pads", [0] * 2 * k))
    if auto == "VALID":
        return [0] * 2 * k
    begins, ends = [], []
    for size, kk, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True):
        out = -(-int(size) // s)
        total = max(0, (out - 1) * s + (kk - 1) * d + 1 - int(size))
        small, large = total // 2, total - total // 2
        begins.append(small if auto == "SAME_UPPER" else large)
        ends.append(large if auto == "SAME_UPPER" else small)
    return begins + ends


def _conv(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x, w, b = _need(xs[0]), _need(xs[1]), xs[2] if len(xs) > 2 else None
    k = w.ndim - 2
    kernel = list(n.attr("kernel_shape", list(w.shape[2:])))
    strides = list(n.attr("strides", [1] * k))
    dilations = list(n.attr("dilations", [1] * k))
    pads = _spatial_pads(n, x, kernel, strides, dilations)
    conv = {1: functional.conv1d, 2: functional.conv2d, 3: functional.conv3d}[k]
    if pads[:k] == pads[k:]:
        return conv(x, w, b, stride=strides, padding=pads[:k], dilation=dilations, groups=int(n.attr("group", 1)))
    x = functional.pad(x, _pairs_to_torch(pads))
    return conv(x, w, b, stride=strides, padding=0, dilation=dilations, groups=int(n.attr("group", 1)))


def _max_pool(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x = _need(xs[0])
    kernel = list(n.attr("kernel_shape"))
    k = len(kernel)
    strides = list(n.attr("strides", [1] * k))
    dilations = list(n.attr("dilations", [1] * k))
    pads = _spatial_pads(n, x, kernel, strides, dilations)
    pool = {1: functional.max_pool1d, 2: functional.max_pool2d, 3: functional.max_pool3d}[k]
    ceil = bool(n.attr("ceil_mode", 0))
    if pads[:k] == pads[k:] and all(2 * p <= kk for p, kk in zip(pads[:k], kernel, strict=True)):
        return pool(x, kernel, strides, pads[:k], dilations, ceil_mode=ceil)
    x = functional.pad(x, _pairs_to_torch(pads), value=-math.inf)
    return pool(x, kernel, strides, 0, dilations, ceil_mode=ceil)


def _average_pool(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x = _need(xs[0])
    kernel = list(n.attr("kernel_shape"))
    k = len(kernel)
    strides = list(n.attr("strides", [1] * k))
    pads = _spatial_pads(n, x, kernel, strides, [1] * k)
    pool = {1: functional.avg_pool1d, 2: functional.avg_pool2d, 3: functional.avg_pool3d}[k]
    ceil = bool(n.attr("ceil_mode", 0))
    if not any(pads):
        return pool(x, kernel, strides, 0, ceil_mode=ceil)
    padded = functional.pad(x, _pairs_to_torch(pads))
    total = pool(padded, kernel, strides, 0, ceil_mode=ceil)
    if n.attr("count_include_pad", 0):
        return total
    ones = functional.pad(torch.ones_like(x[:1, :1]), _pairs_to_torch(pads))
    return total / pool(ones, kernel, strides, 0, ceil_mode=ceil)  # the mean over the window's real elements


def _batch_norm(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x, scale, bias, mean, var = (_need(v) for v in xs[:5])
    eps = float(n.attr("epsilon", 1e-5))
    if n.attr("training_mode", 0):  # batch statistics, as onnxruntime computes them (batch-dependent outputs)
        return functional.batch_norm(x, None, None, scale, bias, training=True, eps=eps)
    return functional.batch_norm(x, mean, var, scale, bias, training=False, eps=eps)


def _flatten(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x = _need(xs[0])
    axis = int(n.attr("axis", 1))
    axis = axis % x.ndim if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _reshape(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x, shape = _need(xs[0]), _ints(_need(xs[1]))
    assert shape is not None
    if not n.attr("allowzero", 0):  # 0 copies the input's dimension
        shape = [int(x.shape[i]) if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _axes(n: Node, xs: list[torch.Tensor | None], index: int) -> list[int] | None:
    """An operator's ``axes``: an input from opset 13 (18 for reductions and Pad) on, an attribute before."""
    if len(xs) > index and xs[index] is not None:
        return _ints(xs[index])
    axes = n.attr("axes")
    return None if axes is None else [int(a) for a in axes]


def _squeeze(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x = _need(xs[0])
    axes = _axes(n, xs, 1)
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(a % x.ndim for a in axes))


def _unsqueeze(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x = _need(xs[0])
    axes = _axes(n, xs, 1)
    assert axes is not None
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


def _clip(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x = _need(xs[0])
    if n.opset < 11:
        return x.clamp(min=n.attr("min", -math.inf), max=n.attr("max", math.inf))
    low = xs[1] if len(xs) > 1 else None
    high = xs[2] if len(xs) > 2 else None
    return x.clamp(min=low, max=high)


def _pad(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x = _need(xs[0])
    if n.opset < 11:
        pads, value = list(n.attr("pads")), float(n.attr("value", 0.0))
    else:
        pads = _ints(_need(xs[1])) or []
        cv = xs[2] if len(xs) > 2 else None
        value = 0.0 if cv is None else float(cv.reshape(-1)[0])
        axes = _axes(n, xs, 3) if n.opset >= 18 else None
        if axes is not None:  # pads for the listed axes only: expand to every axis
            full = [0] * 2 * x.ndim
            for i, a in enumerate(axes):
                full[a % x.ndim], full[a % x.ndim + x.ndim] = pads[i], pads[i + len(axes)]
            pads = full
    return functional.pad(x, _pairs_to_torch(pads), value=value)


def _slice(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x = _need(xs[0])
    if n.opset < 10:
        starts, ends = list(n.attr("starts")), list(n.attr("ends"))
        axes = list(n.attr("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(xs[1]) or [], _ints(xs[2]) or []
        axes = _ints(xs[3] if len(xs) > 3 else None) or list(range(len(starts)))
        steps = _ints(xs[4] if len(xs) > 4 else None) or [1] * len(starts)
    index: list[slice] = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        if st < 1:
            raise UnsupportedOnnxGraph(["Slice with a negative step"])
        size = int(x.shape[a])
        index[a % x.ndim] = slice(max(-size, min(s, size)), max(-size, min(e, size)), st)
    return x[tuple(index)]


def _gather(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x, idx = _need(xs[0]), _need(xs[1]).long()
    axis = int(n.attr("axis", 0)) % x.ndim
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]))


def _shape(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x = _need(xs[0])
    dims = list(x.shape)[int(n.attr("start", 0)) : n.attr("end")]
    return torch.tensor(dims, dtype=torch.int64)


def _constant(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    if "value" in n.attrs:
        value: torch.Tensor = n.attrs["value"]
        return value
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32)):
        if key in n.attrs:
            return torch.tensor(n.attrs[key], dtype=dtype)
    for key in ("value_int", "value_ints"):
        if key in n.attrs:
            return torch.tensor(n.attrs[key], dtype=torch.int64)
    raise UnsupportedOnnxGraph(["Constant (sparse or string value)"])


def _reduce(fn: Callable[..., torch.Tensor], axes_input_from: int) -> Op:
    def op(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
        x = _need(xs[0])
        keep = bool(n.attr("keepdims", 1))
        axes = _axes(n, xs, 1) if n.opset >= axes_input_from else n.attr("axes")
        if not axes:
            if n.attr("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.ndim))
        return fn(x, dim=tuple(int(a) % x.ndim for a in axes), keepdim=keep)

    return op


def _dropout(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x = _need(xs[0])
    ratio = xs[1] if len(xs) > 1 else None
    training = xs[2] if len(xs) > 2 else None
    if training is None or not bool(training.reshape(-1)[0]):
        return x  # inference: the identity
    p = 0.5 if ratio is None else float(ratio.reshape(-1)[0])
    return functional.dropout(x, p=p, training=True)  # torch's global generator


def _like_dtype(n: Node, x: torch.Tensor) -> torch.dtype:
    dtype = n.attr("dtype")
    return DTYPES[int(dtype)] if dtype is not None else x.dtype


def _random_normal(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    if n.op == "RandomNormalLike":
        x = _need(xs[0])
        shape, dtype = list(x.shape), _like_dtype(n, x)
    else:
        shape, dtype = list(n.attr("shape")), DTYPES[int(n.attr("dtype", 1))]
    z = torch.randn(shape, dtype=dtype)
    return z * float(n.attr("scale", 1.0)) + float(n.attr("mean", 0.0))


def _random_uniform(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    if n.op == "RandomUniformLike":
        x = _need(xs[0])
        shape, dtype = list(x.shape), _like_dtype(n, x)
    else:
        shape, dtype = list(n.attr("shape")), DTYPES[int(n.attr("dtype", 1))]
    low, high = float(n.attr("low", 0.0)), float(n.attr("high", 1.0))
    return torch.rand(shape, dtype=dtype) * (high - low) + low


def _bernoulli(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x = _need(xs[0])
    return torch.bernoulli(x).to(_like_dtype(n, x))


def _multinomial(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x = _need(xs[0])  # (batch, classes) unnormalised log-probabilities
    draws = torch.multinomial(x.softmax(dim=1), int(n.attr("sample_size", 1)), replacement=True)
    return draws.to(DTYPES[int(n.attr("dtype", 6))])


def _layer_norm(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x, scale, bias = _need(xs[0]), _need(xs[1]), xs[2] if len(xs) > 2 else None
    axis = int(n.attr("axis", -1)) % x.ndim  # normalised over the axes from ``axis`` to the last
    return functional.layer_norm(x, x.shape[axis:], scale, bias, eps=float(n.attr("epsilon", 1e-5)))


def _instance_norm(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x, scale, bias = _need(xs[0]), _need(xs[1]), _need(xs[2])
    return functional.instance_norm(x, weight=scale, bias=bias, eps=float(n.attr("epsilon", 1e-5)))


def _gelu(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    return functional.gelu(_need(xs[0]), approximate=str(n.attr("approximate", "none")))


def _hard_sigmoid(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    alpha, beta = float(n.attr("alpha", 0.2)), float(n.attr("beta", 0.5))
    return (alpha * _need(xs[0]) + beta).clamp(0.0, 1.0)


def _selu(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    x = _need(xs[0])
    alpha, gamma = float(n.attr("alpha", 1.67326319217681884765625)), float(n.attr("gamma", 1.05070102214813232421875))
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


def _mod(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
    a, b = _need(xs[0]), _need(xs[1])
    return torch.fmod(a, b) if n.attr("fmod", 0) else torch.remainder(a, b)


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Op:
    return lambda n, xs: fn(_need(xs[0]))


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Op:
    return lambda n, xs: fn(_need(xs[0]), _need(xs[1]))


def _variadic(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Op:
    def op(n: Node, xs: list[torch.Tensor | None]) -> torch.Tensor:
        values = [_need(v) for v in xs]
        out = values[0]
        for v in values[1:]:
            out = fn(out, v)
        return out

    return op


OPERATORS: dict[str, Op] = {
    "Gemm": _gemm,
    "MatMul": _binary(torch.matmul),
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _div,
    "Pow": _binary(torch.pow),
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Sum": _variadic(torch.add),
    "Relu": _unary(torch.relu),
    "LeakyRelu": lambda n, xs: functional.leaky_relu(_need(xs[0]), float(n.attr("alpha", 0.01))),
    "Elu": lambda n, xs: functional.elu(_need(xs[0]), float(n.attr("alpha", 1.0))),
    "Sigmoid": _unary(torch.sigmoid),
    "Tanh": _unary(torch.tanh),
    "Softplus": _unary(functional.softplus),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Sqrt": _unary(torch.sqrt),
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Erf": _unary(torch.erf),
    "Gelu": _gelu,
    "PRelu": _binary(lambda x, slope: torch.where(x < 0, slope * x, x)),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _unary(lambda x: x * (x / 6 + 0.5).clamp(0.0, 1.0)),
    "Selu": _selu,
    "Softsign": _unary(functional.softsign),
    "Reciprocal": _unary(torch.reciprocal),
    "Mod": _mod,
    "LayerNormalization": _layer_norm,
    "InstanceNormalization": _instance_norm,
    "Softmax": _softmax(torch.softmax),
    "LogSoftmax": _softmax(torch.log_softmax),
    "Conv": _conv,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _unary(lambda x: x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)),
    "GlobalMaxPool": _unary(lambda x: x.amax(dim=tuple(range(2, x.ndim)), keepdim=True)),
    "BatchNormalization": _batch_norm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda n, xs: _need(xs[0]).permute(*(n.attr("perm") or list(reversed(range(_need(xs[0]).ndim))))),
    "Concat": lambda n, xs: torch.cat([_need(v) for v in xs], dim=int(n.attr("axis"))),
    "Identity": _unary(lambda x: x),
    "Dropout": _dropout,
    "Constant": _constant,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Clip": _clip,
    "Pad": _pad,
    "Slice": _slice,
    "Shape": _shape,
    "Gather": _gather,
    "Cast": lambda n, xs: _need(xs[0]).to(DTYPES[int(n.attr("to"))]),
    "ReduceMean": _reduce(torch.mean, 18),
    "ReduceSum": _reduce(torch.sum, 13),
    "ReduceMax": _reduce(torch.amax, 18),
    "RandomNormal": _random_normal,
    "RandomNormalLike": _random_normal,
    "RandomUniform": _random_uniform,
    "RandomUniformLike": _random_uniform,
    "Bernoulli": _bernoulli,
    "Multinomial": _multinomial,
}
"""The operators (of the default ``ai.onnx`` domain) this interpreter evaluates, by ``op_type``."""

FIRST_OUTPUT_ONLY = {"MaxPool", "Dropout", "BatchNormalization", "LayerNormalization"}


def _node_problem(node: Any, proto_attrs: dict[str, Any], used: set[str]) -> str | None:
    """Why this node cannot be interpreted (the operator, with the detail that is missing), or ``None``."""
    op = str(node.op_type)
    if node.domain not in ("", "ai.onnx") or op not in OPERATORS:
        return op if node.domain in ("", "ai.onnx") else f"{node.domain}.{op}"
    if op in FIRST_OUTPUT_ONLY and any(o and o in used for o in list(node.output)[1:]):
        return f"{op} (its second output)"
    if op == "Pad" and proto_attrs.get("mode", b"constant") not in (b"constant", "constant"):
        return f"Pad (mode {proto_attrs['mode']!r})"
    if op in ("MaxPool", "AveragePool") and proto_attrs.get("kernel_shape") is None:
        return f"{op} (without kernel_shape)"
    if op == "Constant" and "sparse_value" in proto_attrs:
        return "Constant (sparse)"
    return None


def unsupported_operators(graph: Any) -> list[str]:
    """The operators of ``graph`` (an ``onnx.GraphProto``) that :class:`OnnxGraphModule` cannot evaluate, sorted;
    empty when it can evaluate every node."""
    from onnx import helper

    used = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
    problems: set[str] = set()
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute):
            problems.add(f"{node.op_type} (a subgraph)")
            continue
        problem = _node_problem(node, attrs, used)
        if problem is not None:
            problems.add(problem)
    return sorted(problems)


def _topological(nodes: list[Node], available: set[str]) -> list[Node]:
    """The nodes in an order where every node comes after the nodes computing its inputs (ONNX requires graphs
    sorted so; this also accepts unsorted ones)."""
    done = set(available) | {""}
    order: list[Node] = []
    pending = list(nodes)
    while pending:
        ready = [n for n in pending if all(i in done for i in n.inputs)]
        if not ready:
            missing = sorted({i for n in pending for i in n.inputs if i not in done})
            raise ValueError(f"the graph's nodes use values nothing computes: {missing[:5]}")
        for n in ready:
            done.update(n.outputs)
        order += ready
        pending = [n for n in pending if n not in ready]
    return order


class OnnxGraphModule(nn.Module):
    """An ONNX graph (with its external data already read into it) evaluated with torch operations.

    ``forward`` takes the graph's one data input (a tensor of its declared rank) and returns the graph's first
    output. Floating-point initializers are parameters (``parameters()`` counts them; the audit freezes them),
    integer ones buffers. Raises :class:`UnsupportedOnnxGraph` at construction when the graph needs an operator
    this module lacks (see :func:`unsupported_operators`).
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        from onnx import numpy_helper

        graph = model.graph
        missing = unsupported_operators(graph)
        if missing:
            raise UnsupportedOnnxGraph(missing)
        opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.weights = nn.ParameterList()
        self.constants: list[str] = []
        self._slots: dict[str, tuple[str, int]] = {}  # ONNX name -> ("p", index) or ("b", buffer name)
        for k, t in enumerate(graph.initializer):
            value = torch.from_numpy(np.array(numpy_helper.to_array(t)))
            if value.is_floating_point():
                self._slots[t.name] = ("p", len(self.weights))
                self.weights.append(nn.Parameter(value, requires_grad=False))
            else:
                name = f"constant_{k}"
                self.register_buffer(name, value)
                self._slots[t.name] = ("b", k)
        initialised = set(self._slots)
        inputs = [i.name for i in graph.input if i.name not in initialised]
        if len(inputs) != 1:
            raise ValueError(f"the graph has {len(inputs)} data inputs ({inputs}); a classifier has one")
        self.input_name = inputs[0]
        self.output_name = graph.output[0].name
        self.nodes = _topological([Node(n, opset) for n in graph.node], initialised | {self.input_name})
        env = self._initializers()
        training_dropout = any(
            n.op == "Dropout" and n.inputs[2:3] and n.inputs[2] in env and bool(env[n.inputs[2]].reshape(-1)[0])
            for n in self.nodes
        )
        self.random = sorted(
            {n.op for n in self.nodes if n.op in RANDOM_OPERATORS}
            | ({"Dropout (training mode)"} if training_dropout else set())
        )
        """The operators that draw random numbers (from torch's global generator)."""

    def _initializers(self) -> Env:
        env: Env = {}
        for name, (kind, k) in self._slots.items():
            env[name] = self.weights[k] if kind == "p" else getattr(self, f"constant_{k}")
        return env

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = self._initializers()
        env[self.input_name] = x
        for node in self.nodes:
            values = [node.input(env, i) for i in range(len(node.inputs))]
            out = OPERATORS[node.op](node, values)
            env[node.outputs[0]] = out if out.device == x.device else out.to(x.device)  # constants, shapes, noise
        return env[self.output_name]
