"""Per-example gradient clipping in one forward and one backward pass: book-keeping (BK) clipping.

Bu, Wang, Zha & Karypis 2023, "Differentially Private Optimization on Large Model at Small Cost" (ICML 2023). DP-SGD
(Abadi et al. 2016) needs, for a batch of B examples, the sum of the per-example gradients each clipped to L2 norm C
over all parameters together: ``sum_i c_i G_i`` with ``c_i = min(1, C / (||G_i|| + 1e-6))`` (Opacus's factor). For a
layer computing ``s = a W^T`` (a Linear layer, or a convolution over its unfolded input), example i's gradient is
``G_i = g_i^T a_i``, where ``a_i`` (T x d) is the layer's input and ``g_i`` (T x p) the gradient of example i's loss
with respect to the layer's output, T the positions the weight is shared over (1 for a Linear layer on flat
features, the output pixels of a convolution). So:

1. one forward pass records every trainable layer's input ``a`` (forward hooks);
2. one backward pass of the summed loss computes only the gradients with respect to the layers' outputs ``g``
   (``torch.autograd.grad`` asked for those outputs, so autograd skips every weight gradient); since nothing in a
   DP model mixes the examples of a batch, the gradient of the summed loss at example i's output is ``g_i``;
3. from ``(a_i, g_i)`` each layer gives its share of ``||G_i||^2``, by :func:`plan`'s choice for its shapes (BK's
   hybrid, counted in multiply-adds): for T = 1 the ghost norm ``||a_i||^2 ||g_i||^2`` (free); for T > 1 either
   ``G_i`` itself (T d p multiply-adds), kept for step 4 when it fits in :data:`MATERIALISE_MAX_ELEMENTS` floats, or
   the ghost norm (Goodfellow 2015; Li et al. 2022, "Large Language Models Can Be Strong Differentially Private
   Learners") ``sum_{t,t'} (a_i a_i^T) * (g_i g_i^T)`` (T^2 (d + p)) without forming ``G_i``, which pays when T is
   small against d p. A convolution's ``G_i`` come from its input patches, copied a chunk of examples at a time
   from a channels-last copy of its input into a buffer kept across steps (:class:`Workspace`), and one batched
   matrix product per chunk (or, for short patches, from torch's weight-gradient kernel with one group per example);
4. the clipping factors ``c_i`` from the total norms, then each parameter's clipped sum directly: ``sum_i c_i G_i``
   where the ``G_i`` were kept, else one weight gradient of the output gradients scaled by ``c`` (``(c * g)^T a``),
   written to ``.grad``.

Ghost clipping (Opacus ``grad_sample_mode="ghost"``, Li et al. 2022) gets the same norms but then runs a second
backward pass of the loss reweighted by ``c_i``; BK replaces that pass by step 4. The result is exactly the clipped
sum that the slow per-example reference computes, up to float rounding: the noise, the sampling and the accounting
stay with the caller (:mod:`modelsec.defenses.dp_sgd` adds Opacus's Gaussian noise to this sum). Threat model: that
of DP-SGD (an attacker who sees the trained weights); this module changes how the clipped sum is computed, not what
is released, so the privacy guarantee is the same as with any exact per-example clipping.

Layers with rules (:data:`RULES`): ``Linear`` (any leading dimensions), ``Conv1d`` and ``Conv2d`` (any stride,
padding, padding mode, dilation and groups), ``GroupNorm`` and ``LayerNorm`` (their per-example gradients are
formed: ``B x channels`` numbers). A model with a trainable parameter anywhere else, or with one parameter in two
layers, is refused by :func:`unsupported_reason`; a layer that runs twice in one forward pass (parameter tying) or
whose output is modified in place raises :class:`UnsupportedModelError` at the first batch. Callers fall back to an
exact path then (Opacus's ghost clipping or hooks).

Example: the clipped sum of a batch equals the per-example reference.

>>> import torch
>>> from torch import nn
>>> from torch.nn import functional
>>> _ = torch.manual_seed(0)
>>> model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
>>> x, y = torch.rand(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
>>> clipper = BookKeepingClipper(model, max_grad_norm=0.1)
>>> with clipper.recording():
...     loss = functional.cross_entropy(model(x), y, reduction="none")
>>> norms = clipper.clip_and_sum(loss)
>>> reference = torch.zeros_like(model[0].weight)
>>> for i in range(6):
...     g = torch.autograd.grad(functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), model[0].weight)[0]
...     reference += g * min(1.0, 0.1 / (float(norms[i]) + 1e-6))
>>> torch.allclose(model[0].weight.grad, reference, atol=1e-7)
True
>>> clipper.close()
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional
from torch.nn.grad import conv1d_weight, conv2d_weight

from modelsec.core.errors import ConfigError

MATERIALISE_MAX_ELEMENTS = 1 << 26
"""Per-example gradients of one layer are kept for the clipped sum (``B x p x d`` floats) up to this many elements
(256 MiB in float32); above it they are formed a chunk at a time for their norms only, or the ghost norm is used."""

CHUNK_BYTES = 1 << 20
"""Per-example gradients and input patches are formed this many bytes' worth of examples at a time."""

BMM_MIN_PATCH = 32
"""A convolution's per-example gradients come from its unfolded input patches and one batched matrix product when a
patch (``d = in_channels / groups x kernel size``) has at least this many numbers, from torch's weight-gradient
kernel with one group per example below it. Measured with ``benchmarks/dp_epoch_cost.py --kernels`` (one thread,
batch 256, norms and clipped sum, CPU ms): dp-cnn's 8x8 convolution on 1 channel (d = 64) 7.2 against 10.9, its 4x4
on 16 (d = 256) 6.9 against 8.9; small-cnn's 3x3 on 1 channel (d = 9) 22.6 against 11.5, its 3x3 on 32 (d = 288)
38 against 45."""

CLIP_EPSILON = 1e-6
"""Added to the norm in the clipping factor ``min(1, C / (norm + 1e-6))``, as Opacus's optimizers do."""

NORM_METHODS = ("auto", "per-example", "ghost")
"""How a layer whose weight is shared over T > 1 positions gets its per-example norms: ``"auto"`` takes the cheapest
of :func:`plan`'s three in multiply-adds, ``"per-example"`` always forms the per-example gradients, ``"ghost"``
always takes the ghost norm."""


class UnsupportedModelError(RuntimeError):
    """The model has a layer that book-keeping clipping has no rule for, or uses a layer in a way it cannot follow
    (twice in one forward pass, output modified in place); the caller falls back to another exact path."""


def plan(b: int, t: int, d: int, p: int, *, limit: int, method: str = "auto") -> str:
    """How one layer ``s = a W^T`` shared over ``t`` positions (input width ``d``, output width ``p``, batch ``b``)
    gets its per-example norms and clipped sum, by its shapes (Bu et al. 2023's hybrid, counted in multiply-adds a
    example):

    - ``"store"``: form the per-example gradients ``G_i`` (``t d p``), keep them, clipped sum ``c @ G`` (``d p``);
      only when ``b d p <= limit`` elements;
    - ``"norms"``: form them a chunk at a time for their norms only (``t d p``), then the clipped sum as one
      weight gradient of the output gradients scaled by ``c`` (``t d p``, batched);
    - ``"ghost"``: the ghost norm (``t^2 (d + p)``), then the same scaled weight gradient (``t d p``).

    ``method`` (:data:`NORM_METHODS`) ``"ghost"`` forces the ghost norm, ``"per-example"`` the first of the other two
    that applies. Ties go to the per-example gradients.

    >>> plan(256, 25, 256, 32, limit=1 << 26)  # dp-cnn's second convolution: forming is cheaper
    'store'
    >>> plan(256, 4, 4608, 512, limit=1 << 26)  # a late ResNet convolution: 600M floats to keep, few positions
    'ghost'
    """
    if method not in NORM_METHODS:
        raise ValueError(f"method must be one of {', '.join(NORM_METHODS)}")
    formed = "store" if b * d * p <= limit else "norms"
    if method != "auto":
        return "ghost" if method == "ghost" else formed
    costs = {formed: t * d * p + (d * p if formed == "store" else t * d * p), "ghost": t * t * (d + p) + t * d * p}
    return min(costs, key=lambda k: (costs[k], k == "ghost"))


# A rule turns one layer's recorded input ``a`` and output gradient ``g`` (batch first) into its share of the squared
# per-example norms (shape ``(B,)``) and a function that, given the clipping factors ``c`` (``(B,)``), writes the
# clipped sums into the layer's trainable parameters' ``.grad``.
Finish = Callable[[torch.Tensor], None]


class Workspace:
    """What the rules share across steps: the size limit on kept per-example gradients (``limit`` elements a layer),
    the norm method (:data:`NORM_METHODS`), and buffers (kept per-example gradients, chunks of input patches and of
    per-example gradients) grown to the largest batch seen and reused.

    Forming per-example gradients a chunk of examples at a time (:data:`CHUNK_BYTES`) into buffers that outlive the
    step avoids a fresh multi-megabyte allocation every step: glibc serves those with new pages from the system, and
    the page faults cost more than the arithmetic (measured on dp-cnn's second convolution, batch 256, one thread:
    22 ms at once with about 7,000 faults, 6 ms in chunks of 32 without any).
    """

    def __init__(self, limit: int, method: str = "auto") -> None:
        self.limit = int(limit)
        self.method = method
        self._buffers: dict[object, torch.Tensor] = {}

    def rows(self, key: object, b: int, n: int, like: torch.Tensor) -> torch.Tensor:
        """A ``(b, n)`` buffer for ``key`` (the contents are stale)."""
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape[0] < b or buffer.shape[1] != n or buffer.dtype != like.dtype:
            buffer = like.new_empty((b + b // 4, n))  # room for the next Poisson batches, a little larger
            self._buffers[key] = buffer
        return buffer[:b]

    def scratch(self, key: object, n: int, like: torch.Tensor) -> torch.Tensor:
        """A flat buffer of ``n`` elements for ``key`` (the contents are stale)."""
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < n or buffer.dtype != like.dtype:
            buffer = like.new_empty(n + n // 4)
            self._buffers[key] = buffer
        return buffer[:n]

    @staticmethod
    def chunk(per_example: int, like: torch.Tensor) -> int:
        """Examples a chunk when each needs ``per_example`` elements."""
        return max(1, CHUNK_BYTES // max(1, per_example * like.element_size()))


Rule = Callable[[nn.Module, torch.Tensor, torch.Tensor, Workspace], tuple[torch.Tensor, Finish]]


def _trainable(p: torch.Tensor | None) -> bool:
    return p is not None and p.requires_grad


def _sq_norms(x: torch.Tensor) -> torch.Tensor:
    """The squared L2 norms of the rows of ``x`` (``(B, n)``), without a temporary of its size."""
    return torch.linalg.vector_norm(x, dim=1).square()


def _set_grad(p: torch.Tensor | None, value: torch.Tensor) -> None:
    if p is not None and p.requires_grad:
        p.grad = value.reshape(p.shape).to(p.dtype)


def _with_bias(
    sq: torch.Tensor,
    weight: torch.Tensor | None,
    weight_grad: Callable[[torch.Tensor], torch.Tensor] | None,
    bias: torch.Tensor | None,
    bias_samples: Callable[[], torch.Tensor],
) -> tuple[torch.Tensor, Finish]:
    """The end of a layer rule whose bias is added at every position: the squared norms ``sq`` of the weight's
    per-example gradients plus the bias's (``bias_samples()``, ``(B, p)``: the output gradients summed over the
    positions; not computed when the bias is absent or frozen), and the step that sets the clipped sums
    (``weight_grad(c)`` for the weight, ``c @`` the bias's per-example gradients)."""
    samples = bias_samples() if _trainable(bias) else None
    if samples is not None:
        sq = sq + _sq_norms(samples)

    def finish(c: torch.Tensor) -> None:
        if weight_grad is not None:
            _set_grad(weight, weight_grad(c))
        if samples is not None:
            _set_grad(bias, c @ samples)

    return sq, finish


@dataclass
class _Shared:
    """A weight shared over ``t`` positions, in ``groups`` independent groups of input width ``d`` and output width
    ``p`` each, seen by the three ways of :func:`plan`:

    - ``form(i, j, out)`` writes the per-example gradients of examples ``i`` to ``j - 1`` into ``out``
      (``((j - i) groups, p, d)``, in the layout ``reorder`` undoes);
    - ``patches(i, j)`` gives their inputs ``((j - i) groups, t, d)`` and ``out_grad`` is the output gradients
      ``(B groups, p, t)`` (the ghost norm);
    - ``scaled(c)`` is the weight gradient of the output gradients scaled by ``c``, the clipped sum;
    - ``reorder(v)`` turns a sum of per-example gradients (``groups p d``) into the weight's shape.
    """

    key: object
    groups: int
    t: int
    d: int
    p: int
    form: Callable[[int, int, torch.Tensor], None]
    patches: Callable[[int, int], torch.Tensor]
    out_grad: torch.Tensor
    scaled: Callable[[torch.Tensor], torch.Tensor]
    reorder: Callable[[torch.Tensor], torch.Tensor]


def _shared_rule(
    layer: _Shared, b: int, like: torch.Tensor, space: Workspace
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The squared per-example norms of a shared weight (``(B,)``) and the function from the clipping factors to its
    clipped sum, by :func:`plan`'s choice for its shapes."""
    gr, t, d, p = layer.groups, layer.t, layer.d, layer.p
    how = plan(b * gr, t, d, p, limit=space.limit, method=space.method)
    sq = like.new_empty(b)
    if how == "ghost":  # sum_{t,t'} (a a^T) * (g g^T), never forming the p x d gradients
        step = space.chunk(gr * (t * d + 2 * t * t), like)
        for i in range(0, b, step):
            j = min(b, i + step)
            a, g = layer.patches(i, j), layer.out_grad[i * gr : j * gr]
            gram = torch.bmm(a, a.transpose(1, 2)) * torch.bmm(g.transpose(1, 2), g)
            sq[i:j] = gram.reshape(j - i, -1).sum(1)
        return sq, layer.scaled
    step = space.chunk(gr * d * max(p, t), like)
    if how == "store":  # the per-example gradients, kept for the clipped sum c @ G
        kept = space.rows(layer.key, b, gr * p * d, like)
        for i in range(0, b, step):
            j = min(b, i + step)
            layer.form(i, j, kept[i:j].view((j - i) * gr, p, d))
            sq[i:j] = _sq_norms(kept[i:j])  # while the chunk is in cache
        return sq, lambda c: layer.reorder(c @ kept)
    buffer = space.scratch((layer.key, "norms"), step * gr * p * d, like)  # "norms": formed for their norms only
    for i in range(0, b, step):
        j = min(b, i + step)
        out = buffer[: (j - i) * gr * p * d]
        layer.form(i, j, out.view((j - i) * gr, p, d))
        sq[i:j] = _sq_norms(out.view(j - i, -1))
    return sq, layer.scaled


def _linear(module: nn.Module, a: torch.Tensor, g: torch.Tensor, space: Workspace) -> tuple[torch.Tensor, Finish]:
    """``s = a W^T + b`` over the last dimension, shared over any dimensions between the batch and it."""
    assert isinstance(module, nn.Linear)
    b = a.shape[0]
    a3, g3 = a.reshape(b, -1, a.shape[-1]), g.reshape(b, -1, g.shape[-1])  # (B, T, d), (B, T, p)
    t, d, p = a3.shape[1], a3.shape[2], g3.shape[2]
    weight, bias = module.weight, module.bias
    sq = torch.zeros(b, dtype=g.dtype, device=g.device)
    weight_grad: Callable[[torch.Tensor], torch.Tensor] | None = None
    if _trainable(weight):
        if t == 1:  # the ghost norm of an unshared weight: ||a_i||^2 ||g_i||^2
            a2, g2 = a3[:, 0], g3[:, 0]
            sq = _sq_norms(a2) * _sq_norms(g2)

            def weight_grad(c: torch.Tensor) -> torch.Tensor:
                return (g2 * c[:, None]).T @ a2

        else:
            out_grad = g3.transpose(1, 2)  # (B, p, T)

            def form(i: int, j: int, out: torch.Tensor) -> None:
                torch.bmm(out_grad[i:j], a3[i:j], out=out)

            def scaled(c: torch.Tensor) -> torch.Tensor:
                return (g3 * c[:, None, None]).reshape(-1, p).T @ a3.reshape(-1, d)

            layer = _Shared(module, 1, t, d, p, form, lambda i, j: a3[i:j], out_grad, scaled, lambda v: v.reshape(p, d))
            sq, weight_grad = _shared_rule(layer, b, g, space)

    return _with_bias(sq, weight, weight_grad, bias, lambda: g3.sum(1))


def _conv_padding(module: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The input and the symmetric zero padding with which a convolution without padding gives the layer's output:
    a padding mode other than zeros, or ``padding="same"`` (possibly one more on the far side, as torch pads it),
    is applied to the input here, as the layer itself does (its ``_reversed_padding_repeated_twice``)."""
    dims = len(module.kernel_size)
    if module.padding_mode != "zeros":
        return functional.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode), (0,) * dims
    if module.padding == "valid":
        return x, (0,) * dims
    if module.padding == "same":
        return functional.pad(x, module._reversed_padding_repeated_twice), (0,) * dims
    return x, tuple(int(v) for v in module.padding)


def _patches(
    x: torch.Tensor, module: nn.Conv1d | nn.Conv2d, padding: tuple[int, ...], space: Workspace
) -> torch.Tensor:
    """The convolution's input patches of the examples ``x`` (``(B, C, *spatial)``) as a view ``(B, groups, *out,
    *kernel, C / groups)`` of a zero-padded channels-last copy of ``x`` (a buffer of ``space``): copying a chunk of it
    moves runs of ``kernel width x channels`` contiguous numbers (``F.unfold``'s CPU kernel, and patches in the
    weight's order, copy one number at a time)."""
    dims, groups = len(module.kernel_size), module.groups
    b, c = x.shape[:2]
    padded = [n + 2 * pad for n, pad in zip(x.shape[2:], padding, strict=True)]
    last = space.scratch((module, "channels-last"), b * c * math.prod(padded), x).view(b, *padded, c)
    if any(padding):
        last.zero_()
    last[(slice(None), *(slice(pad, pad + n) for pad, n in zip(padding, x.shape[2:], strict=True)))] = x.movedim(1, -1)
    view = last
    for i, (k, s, dil) in enumerate(zip(module.kernel_size, module.stride, module.dilation, strict=True)):
        view = view.unfold(1 + i, dil * (k - 1) + 1, s)  # a window of the dilated extent on each spatial dimension
    every: tuple[Any, ...] = (..., *(slice(None, None, dil) for dil in module.dilation))
    view = view[every].movedim(1 + dims, -1)  # (B, *out, *kernel, C)
    return view.unflatten(-1, (groups, -1)).movedim(-2, 1)  # (B, groups, *out, *kernel, C / groups)


def _conv(module: nn.Module, a: torch.Tensor, g: torch.Tensor, space: Workspace) -> tuple[torch.Tensor, Finish]:
    """A convolution (``Conv1d``, ``Conv2d``): the weight is shared over the T output positions, per group.
    Per-example gradients come from the unfolded input patches (:func:`_patches`) and one batched matrix product,
    or, for patches shorter than :data:`BMM_MIN_PATCH`, from torch's weight-gradient kernel run with one group per
    example (each example's input channels convolved with its own output gradient); the ghost norm from the
    patches."""
    assert isinstance(module, (nn.Conv1d, nn.Conv2d))
    weight_kernel = conv1d_weight if isinstance(module, nn.Conv1d) else conv2d_weight
    x, pad = _conv_padding(module, a)
    b, c_in, c_out, groups = x.shape[0], x.shape[1], g.shape[1], module.groups
    kernel = tuple(module.kernel_size)
    d, p, t = c_in // groups * math.prod(kernel), c_out // groups, math.prod(g.shape[2:])
    conv = {"stride": module.stride, "padding": pad, "dilation": module.dilation}
    weight, bias = module.weight, module.bias
    sq = torch.zeros(b, dtype=g.dtype, device=g.device)
    weight_grad: Callable[[torch.Tensor], torch.Tensor] | None = None
    if _trainable(weight):
        out_grad = g.reshape(b * groups, p, t)
        windows: list[torch.Tensor] = []  # the patches view, made at the first chunk that needs it

        def patches(i: int, j: int) -> torch.Tensor:
            if not windows:
                windows.append(_patches(x, module, pad, space))
            chunk = windows[0][i:j]
            buffer = space.scratch((module, "patches"), chunk.numel(), g)
            buffer.view(chunk.shape).copy_(chunk)
            return buffer.view((j - i) * groups, t, d)

        if d >= BMM_MIN_PATCH:

            def form(i: int, j: int, out: torch.Tensor) -> None:
                torch.bmm(out_grad[i * groups : j * groups], patches(i, j), out=out)

            def reorder(v: torch.Tensor) -> torch.Tensor:  # (groups p, *kernel, C / groups) -> the weight's order
                return v.reshape(c_out, *kernel, -1).movedim(-1, 1)

        else:

            def form(i: int, j: int, out: torch.Tensor) -> None:
                n = j - i
                out.view(-1).copy_(
                    weight_kernel(
                        x[i:j].reshape(1, n * c_in, *x.shape[2:]),
                        (n * c_out, *weight.shape[1:]),
                        g[i:j].reshape(1, n * c_out, *g.shape[2:]),
                        groups=n * groups,
                        **conv,
                    ).view(-1)
                )

            def reorder(v: torch.Tensor) -> torch.Tensor:
                return v.reshape(weight.shape)

        def scaled(c: torch.Tensor) -> torch.Tensor:
            return weight_kernel(x, weight.shape, g * c.reshape(-1, *([1] * (g.dim() - 1))), groups=groups, **conv)

        layer = _Shared(module, groups, t, d, p, form, patches, out_grad, scaled, reorder)
        sq, weight_grad = _shared_rule(layer, b, g, space)

    return _with_bias(sq, weight, weight_grad, bias, lambda: g.reshape(b, c_out, -1).sum(2))


def _normalisation(
    module: nn.Module, a: torch.Tensor, g: torch.Tensor, space: Workspace
) -> tuple[torch.Tensor, Finish]:
    """GroupNorm and LayerNorm: ``y = xhat * weight + bias``, so example i's gradients are ``sum(xhat_i * g_i)`` and
    ``sum(g_i)`` over the positions the affine parameters are shared across; formed (``B x channels``)."""
    b = a.shape[0]
    if isinstance(module, nn.GroupNorm):
        xhat = functional.group_norm(a, module.num_groups, eps=module.eps)
        # channels on dim 1, shared over the spatial positions
        w_sample = (xhat * g).reshape(b, a.shape[1], -1).sum(-1)
        b_sample = g.reshape(b, a.shape[1], -1).sum(-1)
    else:
        assert isinstance(module, nn.LayerNorm)
        xhat = functional.layer_norm(a, module.normalized_shape, eps=module.eps)
        n = math.prod(module.normalized_shape)
        w_sample = (xhat * g).reshape(b, -1, n).sum(1)
        b_sample = g.reshape(b, -1, n).sum(1)
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    sq = torch.zeros(b, dtype=g.dtype, device=g.device)
    if _trainable(weight):
        sq = sq + _sq_norms(w_sample)
    if _trainable(bias):
        sq = sq + _sq_norms(b_sample)

    def finish(c: torch.Tensor) -> None:
        _set_grad(weight, c @ w_sample)
        _set_grad(bias, c @ b_sample)

    return sq, finish


RULES: dict[type[nn.Module], tuple[tuple[str, ...], Rule]] = {
    nn.Linear: (("weight", "bias"), _linear),
    nn.Conv1d: (("weight", "bias"), _conv),
    nn.Conv2d: (("weight", "bias"), _conv),
    nn.GroupNorm: (("weight", "bias"), _normalisation),
    nn.LayerNorm: (("weight", "bias"), _normalisation),
}
"""Layer type (exactly: a subclass may compute something else) -> its parameter names and its rule."""


def _trainable_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, sub)
        for name, sub in module.named_modules()
        if any(p.requires_grad for p in sub.parameters(recurse=False))
    ]


def unsupported_reason(module: nn.Module) -> str | None:
    """Why book-keeping clipping cannot train ``module`` (None when it can, as far as the module's structure shows):
    a trainable parameter in a layer without a rule in :data:`RULES`, or one parameter in two layers."""
    owners: dict[int, str] = {}
    for name, sub in module.named_modules(remove_duplicate=False):
        for pname, p in sub.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            label = f"{name}.{pname}" if name else pname
            rule = RULES.get(type(sub))
            if rule is None:
                return f"layer {name or '(the model)'!r} ({type(sub).__name__}) has trainable parameters and no rule"
            if pname not in rule[0]:
                return f"parameter {label!r} of {type(sub).__name__} is not one of its known parameters"
            if id(p) in owners and owners[id(p)] != label:
                return f"parameter tying: {label!r} is also {owners[id(p)]!r}"
            owners[id(p)] = label
    return None


@dataclass
class _Record:
    """One call of a layer in the recorded forward pass."""

    name: str
    module: nn.Module
    inputs: torch.Tensor
    output: torch.Tensor
    versions: tuple[int, int]


class BookKeepingClipper:
    """Book-keeping clipping (Bu et al. 2023) of ``module``: record a forward pass inside :meth:`recording`, then
    :meth:`clip_and_sum` with the per-example losses (shape ``(B,)``) sets every trainable parameter's ``.grad`` to
    ``sum_i min(1, max_grad_norm / (||G_i|| + 1e-6)) G_i`` (the flat clipping of all parameters together, Opacus's
    factor) and returns the per-example norms ``||G_i||``.

    Raises :class:`UnsupportedModelError` at construction when :func:`unsupported_reason` refuses the model, and at
    :meth:`clip_and_sum` when a layer ran twice or its output was modified in place. ``materialise_max_elements``
    bounds the per-example gradients kept for one layer (:data:`MATERIALISE_MAX_ELEMENTS`; 0 never keeps them);
    ``norm_method`` (:data:`NORM_METHODS`: ``"auto"``, the default, ``"per-example"`` or ``"ghost"``) says how a
    layer shared over several positions gets its norms (:func:`plan`). Every choice gives the same clipped sum up to
    float rounding. Call :meth:`close` to remove the hooks.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        max_grad_norm: float,
        materialise_max_elements: int = MATERIALISE_MAX_ELEMENTS,
        norm_method: str = "auto",
    ) -> None:
        if norm_method not in NORM_METHODS:
            raise ConfigError(f"norm_method must be one of {', '.join(NORM_METHODS)}, got {norm_method!r}")
        reason = unsupported_reason(module)
        if reason is not None:
            raise UnsupportedModelError(reason)
        self.module = module
        self.max_grad_norm = float(max_grad_norm)
        self.materialise_max_elements = int(materialise_max_elements)
        self.norm_method = norm_method
        self._space = Workspace(self.materialise_max_elements, norm_method)
        self._layers = _trainable_layers(module)
        self._records: list[_Record] = []
        self._recording = False
        self._handles = [sub.register_forward_hook(self._hook(name)) for name, sub in self._layers]

    def _hook(self, name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if self._recording and torch.is_grad_enabled():
                x = inputs[0]
                self._records.append(_Record(name, layer, x.detach(), output, (x._version, output._version)))

        return hook

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record the layers' inputs and outputs of the forward pass run inside this block (earlier records are
        dropped)."""
        self._records = []
        self._recording = True
        try:
            yield
        finally:
            self._recording = False

    def clip_and_sum(self, loss_per_example: torch.Tensor) -> torch.Tensor:
        """Set each trainable parameter's ``.grad`` to the clipped sum of the per-example gradients of
        ``loss_per_example`` (``(B,)``, from the recorded forward pass) and return the per-example norms."""
        records, self._records = self._records, []
        b = int(loss_per_example.shape[0])
        seen: set[str] = set()
        for r in records:
            if r.name in seen:
                raise UnsupportedModelError(
                    f"layer {r.name!r} ran more than once in one forward pass (parameter tying)"
                )
            seen.add(r.name)
            if (r.inputs._version, r.output._version) != r.versions:
                raise UnsupportedModelError(
                    f"the input or output of layer {r.name!r} was modified in place (e.g. ReLU(inplace=True))"
                )
            if r.inputs.shape[0] != b:
                raise UnsupportedModelError(
                    f"layer {r.name!r} saw {r.inputs.shape[0]} examples on dimension 0, the loss {b}: the batch "
                    "dimension must come first"
                )
        if b == 0:  # an empty (Poisson) batch: every clipped sum is zero
            records = []
        outputs = [r.output for r in records]
        grads = torch.autograd.grad(loss_per_example.sum(), outputs, allow_unused=True) if outputs else ()
        sq = torch.zeros(b, dtype=loss_per_example.dtype, device=loss_per_example.device)
        finishes: list[Finish] = []
        for r, g in zip(records, grads, strict=True):
            if g is None:  # the output did not reach the loss: zero gradient
                continue
            _, rule = RULES[type(r.module)]
            layer_sq, finish = rule(r.module, r.inputs, g.detach(), self._space)
            sq = sq + layer_sq
            finishes.append(finish)
        norms = sq.clamp(min=0).sqrt()
        factors = (self.max_grad_norm / (norms + CLIP_EPSILON)).clamp(max=1.0)
        trainable = [p for _, sub in self._layers for p in sub.parameters(recurse=False) if p.requires_grad]
        for p in trainable:
            p.grad = None
        for finish in finishes:
            finish(factors)
        for p in trainable:  # a layer that did not run, or whose output did not reach the loss: zero gradient
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return norms

    def close(self) -> None:
        """Remove the forward hooks and drop any record and buffer."""
        for h in self._handles:
            h.remove()
        self._space = Workspace(self.materialise_max_elements, self.norm_method)
        self._handles = []
        self._records = []
