"""Black-box evasion attacks (Square, HopSkipJump): analytic linear cases, no gradients, query budgets, seeds,
and a gradient-masked model that only a black-box attack breaks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelsec.attacks.base import ThreatModel
from modelsec.attacks.evasion import PGD, HopSkipJump, Square
from modelsec.attacks.evasion.square import pseudo_gaussian, split_bump, window_size
from modelsec.core.errors import ConfigError
from modelsec.core.seeding import generator
from modelsec.models.base import Capability, Classifier
from tests.conftest import LinearBinary

pytestmark = pytest.mark.numerics  # rerun by `make test-numerics` under another CPU configuration

BOUNDS = (-10.0, 10.0)  # far from the data: the analytic distances hold


class GradientFree(nn.Module):
    """Wraps a module and fails if it is ever run with autograd on: a black-box attack must not need it."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled(), "a black-box attack ran the model with autograd enabled"
        self.calls += 1
        return self.inner(x)


class Quantised(nn.Module):
    """A linear model on inputs rounded to multiples of 1/4: its input gradient is zero almost everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 4) / 4)


def black_box(model: nn.Module, capability: Capability, input_shape: tuple[int, ...] = (8,)) -> Classifier:
    return Classifier(GradientFree(model), input_shape=input_shape, num_classes=2, bounds=BOUNDS, capability=capability)


def distances(model: LinearBinary, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact L-inf and L2 distances to the linear model's boundary."""
    with torch.no_grad():
        w = model.w.detach()
        margin = (x.flatten(1) @ w + model.b).abs()
        return margin / w.abs().sum(), margin / w.norm()


SEEDS = (0, 1, 2)  # a random attack's rates must hold for every seed, not for one lucky draw


# -- Square --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_square_linf_breaks_what_is_breakable_on_a_linear_model(linear_problem, seed: int) -> None:
    model, x, y = linear_problem
    clf = black_box(model, Capability.SCORES)
    eps, max_queries = 0.15, 300
    d_inf, _ = distances(model, x)
    res = Square(max_queries=max_queries)(clf, x, y, ThreatModel("linf", eps), generator=generator(seed))
    near, far = d_inf < 0.8 * eps, d_inf > eps
    assert near.sum() >= 20 and far.sum() >= 20
    assert res.success[near].float().mean() >= 0.9
    assert not res.success[far].any()  # the base re-verifies: nothing beyond the boundary can count
    # every iterate is a vertex of the eps-ball (the bounds are far away)
    assert torch.allclose((res.x_adv - x).abs(), torch.full_like(x, eps), atol=1e-5)
    # budget: max_queries per sample plus the base's clean and final predictions; robust samples use it all,
    # broken ones stop early
    n, robust = len(x), int(res.robust.sum())
    assert robust * max_queries <= res.queries <= n * (max_queries + 2)
    assert res.queries < n * max_queries


@pytest.mark.parametrize("seed", SEEDS)
def test_square_l2_on_a_linear_model(linear_problem, seed: int) -> None:
    model, x, y = linear_problem
    clf = black_box(model, Capability.SCORES)
    eps = 0.3
    _, d_2 = distances(model, x)
    res = Square(max_queries=300)(clf, x, y, ThreatModel("l2", eps), generator=generator(seed))
    assert res.success[d_2 < 0.8 * eps].float().mean() >= 0.85
    assert not res.success[d_2 > eps].any()
    attacked = res.robust  # still-robust samples carry the attack's own last point: on the sphere of radius eps
    assert torch.allclose(res.distance[attacked], torch.full_like(res.distance[attacked], eps), rtol=1e-4)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("l2", 0.5)])
@pytest.mark.parametrize("seed", SEEDS)
def test_square_on_image_inputs(norm: str, eps: float, seed: int) -> None:
    """(C, H, W) inputs use square windows; the linear analytic case still holds."""
    g = torch.Generator().manual_seed(1)
    model = LinearBinary(torch.randn(2 * 6 * 6, generator=g), 0.1)
    x = torch.rand((100, 2, 6, 6), generator=g) * 2 - 1
    with torch.no_grad():
        y = model(x).argmax(1)
    d_inf, d_2 = distances(model, x)
    dist = d_inf if norm == "linf" else d_2
    clf = black_box(model, Capability.SCORES, input_shape=(2, 6, 6))
    res = Square(max_queries=300)(clf, x, y, ThreatModel(norm, eps), generator=generator(seed))
    assert (dist < 0.5 * eps).sum() >= 10
    assert res.success[dist < 0.5 * eps].all()
    assert not res.success[dist > eps].any()


@pytest.mark.parametrize("seed", SEEDS)
def test_square_breaks_a_model_with_zero_gradients(linear_problem, seed: int) -> None:
    """Gradient masking: PGD sees a zero gradient and only its random start ever breaks anything, while the
    score-based random search breaks nearly everything at the same eps."""
    model, x, _ = linear_problem
    clf = Classifier(Quantised(model), input_shape=(8,), num_classes=2, bounds=BOUNDS)
    with torch.no_grad():
        y = clf.predict(x)
    threat = ThreatModel("linf", 0.5)
    square = Square(max_queries=300)(clf, x, y, threat, generator=generator(seed))
    pgd = PGD()(clf, x, y, threat, generator=generator(seed))
    assert square.success.float().mean() >= 0.9
    assert pgd.success.float().mean() <= 0.3


# -- HopSkipJump ---------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("seed", SEEDS)
def test_hopskipjump_finds_the_minimal_distance_from_labels_only(linear_problem, norm: str, seed: int) -> None:
    model, x, y = linear_problem
    x, y = x[:100], y[:100]
    clf = black_box(model, Capability.LABELS)
    d_inf, d_2 = distances(model, x)
    exact = d_2 if norm == "l2" else d_inf
    eps = 0.3 if norm == "l2" else 0.1
    attack = HopSkipJump(iterations=10, max_num_evals=200)
    res = attack(clf, x, y, ThreatModel(norm, eps), generator=generator(seed))
    assert res.min_distance is not None and torch.isfinite(res.min_distance).all()
    ratio = res.min_distance / exact
    assert float(ratio.min()) >= 1 - 1e-4  # a verified adversarial point is never closer than the boundary
    assert float(ratio.median()) < 1.1
    assert (ratio < 1.1).float().mean() >= 0.8
    # fixed-eps verdict: points found inside the ball stay adversarial; nothing beyond the boundary breaks
    assert res.success[res.min_distance < 0.99 * eps].all()
    assert not res.success[exact > eps].any()
    # queries: the random start, the bisections, the Monte Carlo estimates and the step searches, per sample
    evals = sum(attack.num_evals(t) for t in range(1, attack.iterations + 1))
    bisections = 64 * (attack.iterations + 2)
    per_sample = attack.init_trials + bisections + evals + attack.iterations * (attack.max_halvings + 1)
    assert len(x) * evals <= res.queries <= len(x) * (per_sample + 3)


def test_hopskipjump_without_an_adversarial_start_leaves_the_sample_alone() -> None:
    """A constant classifier has no adversarial point: nothing breaks and min_distance is inf."""
    model = LinearBinary(torch.zeros(8), 1.0)  # always class 1
    clf = black_box(model, Capability.LABELS)
    x = torch.rand((5, 8), generator=torch.Generator().manual_seed(0))
    y = torch.ones(5, dtype=torch.int64)
    res = HopSkipJump(init_trials=3)(clf, x, y, ThreatModel("l2", 1.0), generator=generator(0))
    assert res.robust.all()
    assert res.min_distance is not None and torch.isinf(res.min_distance).all()
    assert torch.equal(res.x_adv, x)
    assert res.queries == 5 * 3 + 3 * 5  # the draws, then the clean, unprojected and final predictions


# -- both ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attack", "capability"),
    [
        (Square(max_queries=100), Capability.SCORES),
        (HopSkipJump(iterations=3, max_num_evals=100), Capability.LABELS),
    ],
)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_same_seed_same_result(linear_problem, attack, capability: Capability, norm: str) -> None:
    model, x, y = linear_problem
    x, y = x[:40], y[:40]
    clf = black_box(model, capability)
    threat = ThreatModel(norm, 0.2)
    first = attack(clf, x, y, threat, generator=generator(3))
    again = attack(clf, x, y, threat, generator=generator(3))
    other = attack(clf, x, y, threat, generator=generator(4))
    assert torch.equal(first.x_adv, again.x_adv) and first.queries == again.queries
    assert not torch.equal(first.x_adv, other.x_adv)
    if first.min_distance is not None:
        assert again.min_distance is not None and torch.equal(first.min_distance, again.min_distance)


def test_capabilities_and_configs(linear_problem) -> None:
    model, x, y = linear_problem
    labels_only = black_box(model, Capability.LABELS)
    assert Square.requires == Capability.SCORES and HopSkipJump.requires == Capability.LABELS
    assert HopSkipJump.minimum_norm and not Square.minimum_norm
    with pytest.raises(ConfigError, match="scores"):
        Square()(labels_only, x, y, ThreatModel("linf", 0.1), generator=generator(0))
    for bad in ({"max_queries": 0}, {"p_init": 0.0}, {"p_init": 1.5}, {"restarts": 0}):
        with pytest.raises(ConfigError):
            Square(**bad)
    for bad in ({"iterations": 0}, {"max_num_evals": 50}, {"init_trials": 0}, {"gamma": 0.0}, {"max_halvings": -1}):
        with pytest.raises(ConfigError):
            HopSkipJump(**bad)
    assert Square(**Square.test_params).max_queries == 300
    assert HopSkipJump(**HopSkipJump.test_params).iterations == 5


def test_square_building_blocks() -> None:
    assert window_size(0.8, 28, 28) == (25, 25)
    assert window_size(0.8, 4, 4) == (3, 3)  # at most one less than the side
    assert window_size(1e-4, 28, 28) == (1, 1)
    assert window_size(0.5, 1, 10) == (1, 5)
    bump = pseudo_gaussian(5, 5)
    assert torch.equal(bump, bump.t()) and torch.equal(bump, bump.flip(0))
    assert int(bump.argmax()) == 12  # peaks at the centre
    for rows, cols in ((4, 4), (1, 6), (5, 5), (1, 1)):
        split = split_bump(rows, cols)
        assert split.shape == (rows, cols)
        assert torch.isclose(split.norm(), torch.tensor(1.0))
    assert torch.isclose(split_bump(4, 4).sum(), torch.tensor(0.0), atol=1e-6)  # two opposite halves


@pytest.mark.parametrize("channels", [1, 3])
def test_square_linf_step_sets_one_window_to_vertices_and_changes_the_input(channels: int) -> None:
    """Every L-inf step sets one window of every channel to one vertex value (x + eps or x - eps, clipped) and
    leaves the rest alone; with one channel it always changes the input (a draw at the window's current values
    takes the other sign), so no query is spent on an unchanged input. Inputs half at the bounds (as digits and
    Fashion-MNIST pixels are), the current point a random vertex."""
    g = torch.Generator().manual_seed(channels)
    n, h, w, eps = 400, 6, 6, 0.1
    x = torch.rand(n, channels, h, w, generator=g)
    x = torch.where(torch.rand(x.shape, generator=g) < 0.5, x.round(), x)  # half the pixels at 0 or 1
    plus, minus = (x + eps).clamp(0, 1), (x - eps).clamp(0, 1)
    cur = torch.where(torch.rand(x.shape, generator=g) < 0.5, plus, minus)
    for rows in (1, 2, 5):
        cand = Square._linf_step(plus, minus, cur, rows, rows, generator(rows))
        changed = cand != cur
        at_vertex = (cand == plus) | (cand == minus)
        assert bool(at_vertex.all())
        window = changed.any(dim=1, keepdim=True).flatten(1).sum(dim=1)  # pixels changed in some channel
        assert bool((window <= rows * rows).all())
        if channels == 1:
            assert bool((window > 0).all())  # every sample's input changes
        else:  # a draw at the current values has chance 1/8; 10 redraws leave about 1e-9 of them
            assert int((window == 0).sum()) == 0


def test_square_step_is_as_strong_as_the_redraw_loop_it_replaced() -> None:
    """Issue 16: the L-inf step that takes the other sign at the same window (instead of redrawing window and signs
    until every sample changed) leaves as many samples standing on the committed golden digits MLP: 666 of 6 x 200
    over seeds 0-5 at 300 queries, L-inf eps 0.1, with either step on the machine that measured it (1000 queries:
    655 and 653). The bound allows 1% for another CPU's rounding."""
    from pathlib import Path

    from safetensors.torch import load_file

    from modelsec.data import load_splits
    from modelsec.models.zoo import build_architecture

    splits = load_splits("digits", seed=0)
    net = build_architecture("mlp", splits.input_shape, 10)
    net.load_state_dict(load_file(str(Path(__file__).parent / "data" / "golden-digits-mlp.safetensors")))
    clf = Classifier(net.eval(), input_shape=splits.input_shape, num_classes=10, bounds=splits.bounds)
    x, y = torch.from_numpy(splits.nonmembers.x[:200]), torch.from_numpy(splits.nonmembers.y[:200])
    standing = [
        int(Square(max_queries=300)(clf, x, y, ThreatModel("linf", 0.1), generator=generator(seed)).robust.sum())
        for seed in range(6)
    ]
    assert min(standing) > 0 and max(standing) < 200  # the middle range, where a weaker attack shows
    assert sum(standing) <= 672
