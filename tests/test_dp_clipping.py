"""Book-keeping clipping (Bu et al. 2023) against the slow per-example reference: per-example norms and the clipped
sum on every layer kind it has a rule for, through both of its norm paths (formed per-example gradients and ghost
norms) and its chunked buffers; the same noisy DP-SGD step as Opacus's ghost clipping from the same noise
generator; and the fallbacks for models it cannot follow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional

pytest.importorskip("opacus")

import modelsec.defenses.per_sample_clipping as psc
from modelsec.core.errors import ConfigError
from modelsec.core.seeding import generator, seeded
from modelsec.defenses.dp_sgd import DPSGDStep
from modelsec.defenses.per_sample_clipping import BookKeepingClipper, UnsupportedModelError, unsupported_reason
from modelsec.models.zoo import build_architecture

pytestmark = pytest.mark.numerics

CLASSES = 3


def zoo_small_cnn() -> tuple[nn.Module, tuple[int, ...]]:
    return build_architecture("small-cnn", (1, 8, 8), CLASSES), (1, 8, 8)


def zoo_dp_cnn() -> tuple[nn.Module, tuple[int, ...]]:
    return build_architecture("dp-cnn", (1, 16, 16), CLASSES), (1, 16, 16)


def every_layer_kind() -> tuple[nn.Module, tuple[int, ...]]:
    """Grouped, strided, dilated and "same"-padded convolutions with reflect padding, GroupNorm, LayerNorm, a frozen
    layer and a layer without bias."""
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3, stride=2, padding=(1, 2), dilation=(1, 2), groups=2),
        nn.Tanh(),
        nn.Conv2d(6, 4, (3, 2), dilation=(2, 1), padding="same", padding_mode="reflect", bias=False),
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 8),
        nn.LayerNorm(8),
        nn.Linear(8, 8),
        nn.Tanh(),
        nn.Linear(8, CLASSES),
    )
    model[8].requires_grad_(False)  # frozen: no gradient, no share of the norm
    return model, (2, 10, 10)


class Sequence(nn.Module):
    """Conv1d with circular padding, then a Linear layer shared over the positions (a 3-D input)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, padding=2, padding_mode="circular")
        self.mix = nn.Linear(9, 5)
        self.out = nn.Linear(20, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.mix(torch.tanh(self.conv(x)))).flatten(1))


def sequence() -> tuple[nn.Module, tuple[int, ...]]:
    return Sequence(), (2, 7)


MODELS = [zoo_small_cnn, zoo_dp_cnn, every_layer_kind, sequence]


def build(make: Callable[[], tuple[nn.Module, tuple[int, ...]]]) -> tuple[nn.Module, tuple[int, ...]]:
    with seeded(0):
        return make()


def reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
    """Per-example gradients the slow way (one backward pass per example) and their norms over all parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = []
    for i in range(len(y)):
        loss = functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads.append([g.detach() for g in torch.autograd.grad(loss, params)])
    norms = torch.stack([torch.sqrt(sum((g.double() ** 2).sum() for g in gs)) for gs in grads])
    return grads, norms


def clipped_sum(grads: list[list[torch.Tensor]], norms: torch.Tensor, clip: float) -> list[torch.Tensor]:
    factors = [min(1.0, clip / (float(n) + 1e-6)) for n in norms]
    return [sum(gs[k] * f for gs, f in zip(grads, factors, strict=True)) for k in range(len(grads[0]))]


def book_keeping(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float, **kwargs: Any
) -> tuple[list[torch.Tensor], torch.Tensor]:
    clipper = BookKeepingClipper(model, max_grad_norm=clip, **kwargs)
    with clipper.recording():
        loss = functional.cross_entropy(model(x), y, reduction="none")
    norms = clipper.clip_and_sum(loss)
    clipper.close()
    grads = [p.grad.detach().clone() for p in model.parameters() if p.requires_grad and p.grad is not None]
    return grads, norms


def batch(shape: tuple[int, ...], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand((n, *shape), generator=generator(seed)), torch.arange(n) % CLASSES


PATHS = {  # plan()'s three ways, forced on every layer shared over several positions
    "kept": {"materialise_max_elements": psc.MATERIALISE_MAX_ELEMENTS, "norm_method": "per-example"},
    "norms-only": {"materialise_max_elements": 0, "norm_method": "per-example"},
    "ghost": {"materialise_max_elements": psc.MATERIALISE_MAX_ELEMENTS, "norm_method": "ghost"},
    "auto": {},
}


@pytest.mark.parametrize("kernel", ["bmm", "weight-kernel"])
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("make", MODELS)
def test_clipped_sum_matches_the_per_example_reference(
    make: Callable, path: str, kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every way of getting the norms (kept per-example gradients, per-example gradients for their norms only, the
    ghost norm), with every convolution's per-example gradients from the unfolded patches and a batched product or
    from the weight-gradient kernel with one group per example, gives the reference's norms and clipped sum."""
    monkeypatch.setattr(psc, "BMM_MIN_PATCH", 0 if kernel == "bmm" else 1 << 30)
    monkeypatch.setattr(psc, "CHUNK_BYTES", 1 << 12)  # several chunks a layer
    model, shape = build(make)
    x, y = batch(shape, 12, 1)
    grads, norms = reference(model, x, y)
    clip = float(norms.median())  # clips about half the examples, leaves the others as they are
    assert (norms > clip * 1.01).any() and (norms < clip * 0.99).any()
    got, got_norms = book_keeping(model, x, y, clip, **PATHS[path])
    torch.testing.assert_close(got_norms.double(), norms, rtol=1e-4, atol=1e-7)
    expected = clipped_sum(grads, norms, clip)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)  # frozen stays untouched


def test_plan_takes_the_fewest_multiply_adds_and_respects_the_memory_limit() -> None:
    """Forming (t d p, plus d p kept or t d p recomputed) against the ghost norm (t^2 (d + p) + t d p)."""
    big = 1 << 40
    assert psc.plan(256, 169, 64, 16, limit=big) == "store"  # dp-cnn's first convolution
    assert psc.plan(256, 169, 64, 16, limit=0) == "norms"  # 169 (64 + 16) > 64 x 16: forming beats the ghost norm
    assert psc.plan(256, 4, 4608, 512, limit=0) == "ghost"  # 4 (4608 + 512) < 4608 x 512
    assert psc.plan(256, 4, 4608, 512, limit=big) == "ghost"  # even when they fit: d p > t^2 (d + p)
    assert psc.plan(256, 25, 256, 32, limit=big) == "store"  # dp-cnn's second: d p < t^2 (d + p)
    assert psc.plan(256, 2, 1, 1, limit=big) == "store"  # t d p + d p = 4 against t^2 (d + p) + t d p = 10
    assert psc.plan(8, 169, 64, 16, limit=big, method="ghost") == "ghost"
    assert psc.plan(8, 2, 4608, 512, limit=0, method="per-example") == "norms"
    with pytest.raises(ValueError, match="method"):
        psc.plan(8, 2, 3, 4, limit=0, method="fast")
    with pytest.raises(ConfigError, match="norm_method"):
        BookKeepingClipper(nn.Linear(2, 2), max_grad_norm=1.0, norm_method="fast")


def test_chunks_and_reused_buffers_across_batch_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-example gradients formed a few examples at a time into buffers kept across calls: batches that grow past
    the buffer and shrink below it still give the reference."""
    monkeypatch.setattr(psc, "CHUNK_BYTES", 1)  # one example a chunk
    model, shape = build(zoo_dp_cnn)
    clipper = BookKeepingClipper(model, max_grad_norm=0.5)
    for n, seed in ((5, 2), (11, 3), (3, 4)):
        x, y = batch(shape, n, seed)
        grads, norms = reference(model, x, y)
        with clipper.recording():
            loss = functional.cross_entropy(model(x), y, reduction="none")
        got_norms = clipper.clip_and_sum(loss)
        torch.testing.assert_close(got_norms.double(), norms, rtol=1e-4, atol=1e-7)
        for p, e in zip(model.parameters(), clipped_sum(grads, norms, 0.5), strict=True):
            torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-6)
    clipper.close()
    assert not any(m._forward_hooks for m in model.modules())


def test_layer_that_does_not_reach_the_loss_gets_a_zero_gradient_and_empty_batch_zero_sums() -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.skipped, self.never = nn.Linear(4, CLASSES), nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.skipped(x)  # runs, but its output is dropped
            return self.used(x)

    with seeded(0):
        model = Unused()
    clipper = BookKeepingClipper(model, max_grad_norm=1.0)
    for n in (6, 0):
        x, y = torch.rand(n, 4, generator=generator(n)), torch.arange(n) % CLASSES
        with clipper.recording():
            loss = functional.cross_entropy(model(x), y, reduction="none")
        assert clipper.clip_and_sum(loss).shape == (n,)
        for layer in (model.skipped, model.never):
            assert all(p.grad is not None and not p.grad.any() for p in layer.parameters())
        assert all(p.grad is not None and bool(p.grad.any()) == (n > 0) for p in model.used.parameters())
    clipper.close()


def test_same_noisy_step_as_ghost_clipping_from_the_same_generator() -> None:
    """The mechanism is unchanged: from the same weights, batch and noise seed, two noisy steps of book-keeping and
    of Opacus's ghost clipping land on the same weights."""
    x, y = batch((1, 16, 16), 16, 5)
    weights = []
    for mode in ("bk", "ghost"):
        model, _ = build(zoo_dp_cnn)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        with DPSGDStep(
            model,
            optimizer,
            l2_norm_clip=0.1,
            noise_multiplier=1.0,
            expected_batch_size=16,
            grad_sample_mode=mode,
            noise_generator=generator(7),
        ) as step:
            step(x, y)
            step(x[:9], y[:9])
            assert step.mode == mode and step.steps == 2
        weights.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*weights, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    start, _ = build(zoo_dp_cnn)
    assert any(not torch.allclose(a, s) for a, s in zip(weights[0], start.parameters(), strict=True))


class OwnParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.out = nn.Linear(4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x * self.scale)


def test_models_without_rules_are_refused_and_dp_sgd_falls_back() -> None:
    embedding = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, CLASSES))
    tied = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, CLASSES))
    tied[1].weight = nn.Parameter(torch.zeros(CLASSES, 4))
    tied.add_module("alias", nn.Linear(4, CLASSES))
    tied.alias.weight = tied[1].weight
    cases = [
        (embedding, "Embedding"),
        (OwnParameter(), "OwnParameter"),
        (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, CLASSES)), "BatchNorm1d"),
        (tied, "parameter tying"),
    ]
    for model, why in cases:
        reason = unsupported_reason(model)
        assert reason is not None and why in reason
        with pytest.raises(UnsupportedModelError, match=why):
            BookKeepingClipper(model, max_grad_norm=1.0)
    with seeded(0):
        model = OwnParameter()
    with DPSGDStep(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        l2_norm_clip=1.0,
        noise_multiplier=0.0,
        expected_batch_size=4,
        probe=(torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64)),
    ) as step:
        assert step.mode == "ghost"
        assert step.fallback_reason is not None and "no rule" in step.fallback_reason


def test_in_place_output_is_refused_and_a_reused_layer_falls_back_at_the_probe() -> None:
    """A layer whose output is modified in place would get the gradient of the modified tensor, and a layer run
    twice has two inputs for one weight: book-keeping refuses both when it meets them, at the probe pass of
    :class:`DPSGDStep`, which falls back (Opacus's ghost clipping refuses a reused layer as parameter tying)."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.out = nn.Linear(4, 4), nn.Linear(4, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.inner(torch.tanh(self.inner(x))))

    x, y = torch.rand(2, 4, generator=generator(0)), torch.zeros(2, dtype=torch.int64)
    in_place = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, CLASSES))
    for model, why in ((in_place, "modified in place"), (Twice(), "more than once")):
        clipper = BookKeepingClipper(model, max_grad_norm=1.0)
        with clipper.recording():
            loss = functional.cross_entropy(model(x), y, reduction="none")
        with pytest.raises(UnsupportedModelError, match=why):
            clipper.clip_and_sum(loss)
        clipper.close()
    model = Twice()
    with DPSGDStep(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        l2_norm_clip=1.0,
        noise_multiplier=0.0,
        expected_batch_size=2,
        probe=(x, y),
    ) as step:
        assert step.mode == "hooks"
        reason = step.fallback_reason
        assert reason is not None and "more than once" in reason and "ghost clipping failed" in reason
        step(x, y)
        assert step.steps == 1
