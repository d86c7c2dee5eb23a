"""DP-SGD over Opacus: configuration, clipping against a slow per-example reference, equivalence with plain SGD
without noise or clipping, seeded reproducibility, BatchNorm handling, ghost-clipping fallback, and a tiny run that
learns and whose claim matches accountants computed independently here."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional

pytest.importorskip("opacus")
pytest.importorskip("dp_accounting")

from modelsec.core.errors import ConfigError
from modelsec.core.seeding import generator, seeded
from modelsec.data.dataset import Dataset
from modelsec.defenses.dp_sgd import (
    BatchNormReplacedWarning,
    DPSGDConfig,
    DPSGDStep,
    DPTrainingReport,
    plan,
    poisson_batches,
    train_dp_sgd,
)
from modelsec.models.zoo import build_architecture
from modelsec.stats.accountants import epsilon_prv

pytestmark = pytest.mark.numerics  # rerun by `make test-numerics` under another CPU configuration

FEATURES, CLASSES = 10, 4
CENTERS = np.random.default_rng(0).random((CLASSES, FEATURES)).astype(np.float32)


def blobs(n: int, seed: int) -> Dataset:
    """Four well-separated Gaussian blobs in [0, 1]^10."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = np.clip(CENTERS[y] + 0.08 * rng.standard_normal((n, FEATURES)), 0, 1).astype(np.float32)
    return Dataset(name="blobs", x=x, y=y.astype(np.int64), num_classes=CLASSES, bounds=(0.0, 1.0))


def mlp(seed: int = 0) -> nn.Module:
    with seeded(seed):
        return nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, CLASSES))


def small_cnn(seed: int = 0) -> nn.Module:
    with seeded(seed):
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, CLASSES)
        )


def dp_cnn(seed: int = 0) -> nn.Module:
    """The zoo's tanh CNN for DP-SGD (strided convolutions, stride-1 pooling) at its smallest input, 16x16."""
    with seeded(seed):
        return build_architecture("dp-cnn", (1, 16, 16), CLASSES)


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


TINY = {"noise_multiplier": 1.0, "batch_size": 64, "epochs": 2, "lr": 0.1}


@pytest.fixture
def cheap_accounting(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests about training rather than its claim: the accountants cost seconds at the large sample rates of
    tiny data sets, and the other tests check them."""
    import modelsec.defenses.dp_sgd as dp_sgd

    monkeypatch.setattr(dp_sgd, "epsilon_prv", lambda *args, **kwargs: 1.0)
    monkeypatch.setattr(dp_sgd, "epsilon", lambda *args, **kwargs: 1.0)


@pytest.fixture(scope="module")
def tiny_run() -> tuple[nn.Module, DPTrainingReport]:
    module = mlp()
    report = train_dp_sgd(module, blobs(512, 1), DPSGDConfig(**{**TINY, "epochs": 4}), test=blobs(256, 2))
    return module, report


# --- configuration ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"l2_norm_clip": 0.0}, "l2_norm_clip"),
        ({"l2_norm_clip": math.nan}, "l2_norm_clip"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"noise_multiplier": math.inf}, "noise_multiplier"),
        ({"target_epsilon": 0.0}, "target_epsilon"),
        ({"noise_multiplier": 1.0, "target_epsilon": 3.0}, "not both"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"num_microbatches": 32}, "clips per example"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"momentum": 1.0}, "momentum"),
        ({"grad_sample_mode": "functorch"}, "grad_sample_mode"),
        ({"batchnorm": "ignore"}, "batchnorm"),
        ({"seed": -1}, "seed"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DPSGDConfig(**kwargs)


def test_config_defaults_and_per_example_microbatches() -> None:
    config = DPSGDConfig()
    assert (config.l2_norm_clip, config.delta, config.batch_size, config.optimizer) == (1.0, 1e-5, 256, "sgd")
    assert plan(config, 60_000).noise_multiplier == 1.1  # neither noise nor target: the documented default
    assert DPSGDConfig(num_microbatches=256).num_microbatches == 256  # one microbatch per example: accepted
    with pytest.raises(ConfigError, match="exceeds the 100 training records"):
        plan(DPSGDConfig(batch_size=256), 100)


def test_plan_counts_steps_as_opacus_sampler() -> None:
    p = plan(DPSGDConfig(batch_size=256, epochs=3), 60_000)
    assert p.sample_rate == 256 / 60_000
    assert p.steps_per_epoch == int(1 / p.sample_rate) == 234
    assert p.steps == 3 * 234


# --- one DP step against references -------------------------------------------------------------------------------


def per_example_reference(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[list[torch.Tensor]]:
    """Per-example gradients the slow way: one backward pass per example."""
    grads = []
    for i in range(len(y)):
        loss = functional.cross_entropy(module(x[i : i + 1]), y[i : i + 1])
        grads.append([g.detach() for g in torch.autograd.grad(loss, list(module.parameters()))])
    return grads


def batch_of(data: Dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(data.x[:n]), torch.from_numpy(data.y[:n])


def inputs_for(make: Any, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if make is small_cnn:
        return torch.rand((n, 1, 8, 8), generator=generator(seed)), torch.arange(n) % CLASSES
    if make is dp_cnn:
        return torch.rand((n, 1, 16, 16), generator=generator(seed)), torch.arange(n) % CLASSES
    return batch_of(blobs(n, seed), n)


@pytest.mark.parametrize("mode", ["bk", "ghost", "hooks"])
@pytest.mark.parametrize("make", [mlp, small_cnn])
def test_no_noise_huge_clip_equals_plain_sgd_step(mode: str, make: Any) -> None:
    x, y = inputs_for(make, 8, 3)
    dp_model, plain = make(), make()
    with DPSGDStep(
        dp_model,
        torch.optim.SGD(dp_model.parameters(), lr=0.5),
        l2_norm_clip=1e6,
        noise_multiplier=0.0,
        expected_batch_size=len(y),  # Opacus divides the summed gradient by the expected batch size
        grad_sample_mode=mode,
    ) as step:
        step(x, y)
        assert step.steps == 1 and step.mode == mode
    opt = torch.optim.SGD(plain.parameters(), lr=0.5)
    functional.cross_entropy(plain(x), y).backward()
    opt.step()
    for a, b in zip(dp_model.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["bk", "ghost", "hooks"])
@pytest.mark.parametrize("make", [mlp, small_cnn, dp_cnn])  # ghost norms for Linear, per-example for Conv2d
def test_clipped_update_matches_per_example_reference(mode: str, make: Any) -> None:
    x, y = inputs_for(make, 16, 4)
    clip = 0.05
    model = make()
    reference = per_example_reference(model, x, y)
    norms = torch.stack([torch.sqrt(sum((g**2).sum() for g in grads)) for grads in reference])
    assert (norms > clip).all()  # every example is actually clipped
    expected = [
        sum(g[k] * min(1.0, clip / (float(n) + 1e-6)) for g, n in zip(reference, norms, strict=True)) / len(y)
        for k in range(len(reference[0]))
    ]
    before = params(model)
    with DPSGDStep(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        l2_norm_clip=clip,
        noise_multiplier=0.0,
        expected_batch_size=len(y),
        grad_sample_mode=mode,
    ) as step:
        step(x, y)
    for b, a, e in zip(before, model.parameters(), expected, strict=True):
        torch.testing.assert_close(b - a.detach(), e, rtol=1e-4, atol=1e-7)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_opacus_grad_samples_match_reference_and_clipped_norms_stay_below_clip() -> None:
    from opacus.grad_sample import GradSampleModule

    x, y = batch_of(blobs(12, 5), 12)
    clip = 0.1
    model = mlp()
    reference = per_example_reference(model, x, y)
    gsm = GradSampleModule(copy.deepcopy(model), batch_first=True, loss_reduction="mean")
    functional.cross_entropy(gsm(x), y).backward()
    samples = [p.grad_sample for p in gsm.parameters()]
    for k, sample in enumerate(samples):
        torch.testing.assert_close(sample, torch.stack([g[k] for g in reference]), rtol=1e-4, atol=1e-6)
    gsm.cleanup()
    # each example alone: the noiseless update of a one-example batch is that example's clipped gradient
    for i in range(len(y)):
        single = mlp()
        before = params(single)
        with DPSGDStep(
            single,
            torch.optim.SGD(single.parameters(), lr=1.0),
            l2_norm_clip=clip,
            noise_multiplier=0.0,
            expected_batch_size=1,
        ) as step:
            step(x[i : i + 1], y[i : i + 1])
        change = torch.sqrt(
            sum(((b - a.detach()) ** 2).sum() for b, a in zip(before, single.parameters(), strict=True))
        )
        assert float(change) <= clip * (1 + 1e-5)


def test_empty_poisson_batch_takes_a_noise_only_step() -> None:
    model = mlp()
    before = params(model)
    with DPSGDStep(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        l2_norm_clip=1.0,
        noise_multiplier=1.0,
        expected_batch_size=8,
        noise_generator=generator(0),
    ) as step:
        assert step(torch.zeros((0, FEATURES)), torch.zeros(0, dtype=torch.int64)) == (0.0, 0)
        assert step.steps == 1
    assert any(not torch.equal(b, a) for b, a in zip(before, model.parameters(), strict=True))


def test_ghost_falls_back_to_hooks_on_tied_parameters(cheap_accounting: None) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.shared, self.out = nn.Linear(FEATURES, 8), nn.Linear(8, 8), nn.Linear(8, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.shared(torch.relu(self.shared(self.inp(x))))))

    with seeded(0):
        model = Tied()
    report = train_dp_sgd(model, blobs(128, 6), DPSGDConfig(noise_multiplier=1.0, batch_size=32, epochs=1))
    assert report.grad_sample_mode == "hooks"
    assert report.grad_sample_fallback is not None and "Parameter tying" in report.grad_sample_fallback
    assert report.grad_sample_fallback in report.warnings


# --- whole runs -----------------------------------------------------------------------------------------------


def test_tiny_dp_run_learns_and_reports_its_claim(tiny_run: tuple[nn.Module, DPTrainingReport]) -> None:
    module, report = tiny_run
    assert report.history[-1].test_accuracy is not None and report.history[-1].test_accuracy > 0.6  # chance: 0.25
    assert report.grad_sample_mode == "bk" and report.grad_sample_fallback is None  # the default
    # the steps actually taken and the sample rate actually used
    assert report.steps == report.epochs * (512 // 64) == 32
    assert report.sample_rate == 64 / 512 and report.sampling == "poisson"
    assert [e.steps for e in report.history] == [8, 16, 24, 32]
    assert all(40 < e.mean_batch_size < 90 for e in report.history)  # Poisson around 64
    # finite epsilons, PRV and PLD close, RDP looser
    eps = report.epsilons
    assert report.epsilon == eps["prv"]
    assert all(v is not None and math.isfinite(v) for v in eps.values())
    assert eps["prv"] is not None and eps["pld"] is not None and eps["rdp"] is not None
    assert eps["prv"] == pytest.approx(eps["pld"], rel=0.03)
    assert eps["rdp"] > eps["prv"]
    assert report.history[-1].epsilon == report.epsilon
    # the claim matches Google's PLD accountant computed here, independently of modelsec, from the recorded numbers
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(report.sample_rate, dp_accounting.GaussianDpEvent(report.noise_multiplier)),
        report.steps,
    )
    independent = PLDAccountant()
    independent.compose(event)
    assert eps["pld"] == pytest.approx(independent.get_epsilon(report.delta), rel=1e-9)
    assert "q=64/512" in report.assumptions and "32 noisy optimizer steps" in report.assumptions
    # the trained module is a plain module again: no Opacus hooks or attributes left
    assert not any(m._forward_hooks or m._backward_hooks for m in module.modules())
    assert not any(hasattr(p, "grad_sample") or hasattr(p, "_norm_sample") for p in module.parameters())


def test_report_round_trips_through_json(tiny_run: tuple[nn.Module, DPTrainingReport]) -> None:
    _, report = tiny_run
    text = json.dumps(report.to_dict(), allow_nan=False)
    assert DPTrainingReport.from_dict(json.loads(text)) == report


def test_same_seed_same_result_and_bk_equals_ghost_and_hooks(cheap_accounting: None) -> None:
    data = blobs(128, 7)
    runs = []
    for mode, seed in (("bk", 0), ("bk", 0), ("hooks", 0), ("bk", 1), ("ghost", 0)):
        model = mlp()
        config = DPSGDConfig(noise_multiplier=1.0, batch_size=32, epochs=1, grad_sample_mode=mode, seed=seed)
        report = train_dp_sgd(model, data, config)
        runs.append((params(model), report.history[0].train_loss))
    (a, loss_a), (b, loss_b), (h, _), (c, _), (g, _) = runs
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)) and loss_a == loss_b
    for other in (h, g):  # same batches, same noise, same clipping
        assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, other, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_resumed_run_equals_an_uninterrupted_one(cheap_accounting: None, tmp_path: Any) -> None:
    """A run stopped after epoch 1 and resumed from its checkpoint (saved and loaded as harden does, with
    ``weights_only=True``) takes the same batches, noise and steps: same weights, same history, same claim."""
    data, test = blobs(256, 5), blobs(64, 6)
    config = DPSGDConfig(noise_multiplier=1.0, batch_size=32, epochs=3, momentum=0.9, seed=4)
    epochs: list[int] = []

    def save(state: Any) -> None:  # to disk at once, as the checkpoint does: the optimizer's buffers change later
        epochs.append(state.epoch)
        torch.save(state.state_dict(), tmp_path / f"ckpt{state.epoch}")

    whole = mlp()
    full = train_dp_sgd(whole, data, config, test=test, after_epoch=save)
    assert epochs == [1, 2, 3]
    saved = torch.load(tmp_path / "ckpt1", weights_only=True)
    assert saved["extra"]["steps"] == 8
    resumed = mlp(seed=9)  # other weights: the checkpoint must overwrite them
    report = train_dp_sgd(resumed, data, config, test=test, resume=saved)
    assert all(torch.equal(a, b) for a, b in zip(params(whole), params(resumed), strict=True))
    assert [asdict_epoch(e) for e in report.history] == [asdict_epoch(e) for e in full.history]
    assert report.steps == full.steps == 24 and report.epsilon == full.epsilon


def asdict_epoch(e: Any) -> tuple[Any, ...]:
    """An epoch's record without its wall time."""
    return (e.epoch, e.steps, e.mean_batch_size, e.train_loss, e.train_accuracy, e.test_accuracy, e.epsilon)


@pytest.mark.parametrize("mode", ["bk", "ghost", "hooks"])
def test_zero_gradient_update_has_the_noise_variance_the_multiplier_implies(mode: str) -> None:
    """Zero inputs to a bias-free linear layer give every example a zero gradient, so after k SGD steps (lr 1) each
    parameter has moved by the sum of k noise draws divided by the expected batch size B: mean 0, variance
    k * (noise_multiplier * l2_norm_clip / B)^2 (Abadi et al. 2016, Algorithm 1)."""
    steps, batch, sigma, clip = 4, 8, 1.3, 0.7
    with seeded(0):
        model = nn.Linear(64, 100, bias=False)  # 6,400 parameters, each one independent draw
    before = params(model)[0]
    with DPSGDStep(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        l2_norm_clip=clip,
        noise_multiplier=sigma,
        expected_batch_size=batch,
        grad_sample_mode=mode,
        noise_generator=generator(1),
    ) as step:
        for _ in range(steps):
            step(torch.zeros((batch, 64)), torch.arange(batch) % CLASSES)
        assert step.steps == steps
    change = (model.weight.detach() - before).double().flatten()
    expected_var = steps * (sigma * clip / batch) ** 2
    n = change.numel()
    # the sample variance of n normal draws has relative sd sqrt(2 / n) = 1.8%: 5 sd is 9%
    assert float(change.var()) == pytest.approx(expected_var, rel=5 * math.sqrt(2 / n))
    assert abs(float(change.mean())) < 5 * math.sqrt(expected_var / n)
    # normal, not e.g. uniform or Laplace: excess kurtosis near 0 (its sd is sqrt(24 / n) = 0.06)
    z = (change - change.mean()) / change.std()
    assert abs(float((z**4).mean()) - 3.0) < 5 * math.sqrt(24 / n)


def test_poisson_sampler_inclusion_rate() -> None:
    steps, n, q = 200, 100, 0.1
    counts = torch.zeros(n)
    sizes = []
    for idx in poisson_batches(n, q, steps, generator(0)):
        counts[idx] += 1
        sizes.append(len(idx))
    assert len(sizes) == steps
    assert float(counts.mean()) / steps == pytest.approx(q, abs=0.01)  # 20,000 Bernoulli draws: sd 0.002
    assert np.std(sizes) == pytest.approx(math.sqrt(n * q * (1 - q)), rel=0.25)  # binomial, not fixed-size batches


def test_poisson_sampler_includes_records_independently() -> None:
    """Each record joins each batch by its own coin: two records are together in a batch with probability q^2
    (a fixed-size or shuffled sampler makes them negatively correlated), and a record's inclusion in one step says
    nothing about the next (a sampler without replacement within an epoch would)."""
    steps, n, q = 2000, 50, 0.2
    included = np.zeros((steps, n), dtype=bool)
    for t, idx in enumerate(poisson_batches(n, q, steps, generator(3))):
        included[t, np.asarray(idx)] = True
    x = included.astype(float)
    pair = (x.T @ x) / steps  # co-inclusion frequencies
    off_diagonal = pair[~np.eye(n, dtype=bool)]
    # 2,450 pairs of 2,000 steps each: the mean co-inclusion has sd about q^2 / sqrt(steps * pairs / n) ~ 2e-4
    assert float(off_diagonal.mean()) == pytest.approx(q * q, abs=0.002)
    consecutive = float((x[1:] * x[:-1]).mean())
    assert consecutive == pytest.approx(q * q, abs=0.003)
    sizes = x.sum(axis=1)
    lag1 = float(np.corrcoef(sizes[1:], sizes[:-1])[0, 1])
    assert abs(lag1) < 4 / math.sqrt(steps)  # batch sizes uncorrelated across steps


def test_batchnorm_is_replaced_with_a_warning_or_refused(cheap_accounting: None) -> None:
    def bn_model() -> nn.Module:
        with seeded(0):
            return nn.Sequential(
                nn.Linear(FEATURES, 16),
                nn.BatchNorm1d(16),
                nn.ReLU(),
                nn.Linear(16, 16),
                nn.BatchNorm1d(16, affine=False),  # no parameters, but still mixes the batch and keeps statistics
                nn.Linear(16, CLASSES),
            )

    model = bn_model()
    with pytest.warns(BatchNormReplacedWarning, match="BatchNorm"):
        report = train_dp_sgd(model, blobs(128, 8), DPSGDConfig(noise_multiplier=1.0, batch_size=32, epochs=1))
    assert isinstance(model[1], nn.GroupNorm) and isinstance(model[4], nn.GroupNorm)  # in the caller's module
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert sum("BatchNorm1d replaced by GroupNorm" in w for w in report.warnings) == 2
    with pytest.raises(ConfigError, match="batchnorm='replace'"):
        train_dp_sgd(bn_model(), blobs(128, 8), DPSGDConfig(noise_multiplier=1.0, batch_size=32, batchnorm="refuse"))


def test_target_epsilon_is_reached_within_one_percent() -> None:
    config = DPSGDConfig(target_epsilon=2.0, batch_size=16, epochs=1, lr=0.1)
    report = train_dp_sgd(mlp(), blobs(512, 9), config)
    assert report.noise_multiplier_source == "target_epsilon" and report.target_epsilon == 2.0
    assert report.epsilon is not None and 0.99 * 2.0 <= report.epsilon <= 2.0
    assert report.epsilon == pytest.approx(epsilon_prv(report.noise_multiplier, 16 / 512, 32, 1e-5), rel=1e-12)


def test_no_noise_claims_nothing() -> None:
    report = train_dp_sgd(mlp(), blobs(64, 10), DPSGDConfig(noise_multiplier=0.0, batch_size=16, epochs=1))
    assert report.epsilon is None and set(report.epsilons.values()) == {None}
    assert any("no differential privacy guarantee" in w for w in report.warnings)
    json.dumps(report.to_dict(), allow_nan=False)
