"""Minimum-norm attacks (DeepFool, Carlini-Wagner L2) against the distances known in closed form on affine models.

On the binary linear model of ``conftest`` (``z = w.x + b``) the minimal L2 distance to the decision boundary is
``|w.x + b| / ||w||_2`` and the minimal L-inf distance ``|w.x + b| / ||w||_1``; on a multi-class affine model
``z = W x + b`` with label ``y`` it is ``min_{j != y} |(w_y - w_j).x + b_y - b_j| / ||w_y - w_j||_q`` (q = 2 for
L2, 1 for L-inf). The bounds (-10, 10) lie far outside the data ([-1, 1]) and never get in the way.

DeepFool reaches the boundary of an affine model in one step and then scales that step by ``1 + overshoot``, so the
distance it reports is ``(1 + overshoot)`` times the exact one: these tests use ``overshoot=0.005`` (0.5% above the
exact distance) so that the 1% tolerance holds.
"""

from __future__ import annotations

import pytest
import torch

from modelsec.attacks.base import AttackBatch, EvasionAttack, EvasionResult, ThreatModel
from modelsec.attacks.evasion import EVASION_ATTACKS, CarliniWagnerL2, DeepFool
from modelsec.attacks.norms import NORMS, clip_to_bounds
from modelsec.core.errors import ConfigError
from modelsec.core.seeding import generator
from modelsec.models.base import Classifier
from tests.conftest import LinearBinary

pytestmark = pytest.mark.numerics  # rerun by `make test-numerics` under another CPU configuration

BOUNDS = (-10.0, 10.0)
# DeepFool's overshoot in these tests: the distance found is 1.005 x the exact one.
OVERSHOOT = 0.005
# Enough Adam steps for CW to settle on the boundary of an affine model to well within 1% (defaults: 100 x 9).
CW_EXACT = {"steps": 150, "binary_search_steps": 6, "lr_schedule": "cosine"}


def binary_classifier(model: LinearBinary) -> Classifier:
    return Classifier(model, input_shape=(8,), num_classes=2, bounds=BOUNDS)


def binary_distances(model: LinearBinary, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        margin = (x @ model.w + model.b).abs()
        return {"l2": margin / model.w.norm(p=2), "linf": margin / model.w.norm(p=1)}


def affine_problem(
    n: int = 100, d: int = 8, classes: int = 5, seed: int = 0
) -> tuple[Classifier, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """A 5-class affine classifier, ``n`` points labelled by it, and their exact L2 and L-inf distances (and,
    under "nearest", the class whose L2 boundary is nearest)."""
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Linear(d, classes)
    with torch.no_grad():
        net.weight.copy_(torch.randn((classes, d), generator=g))
        net.bias.copy_(torch.randn(classes, generator=g) * 0.1)
        x = torch.rand((n, d), generator=g) * 2 - 1
        z = net(x)
        y = z.argmax(dim=1)
        w_diff = net.weight[y][:, None, :] - net.weight[None, :, :]  # (n, classes, d): w_y - w_j
        f = z.gather(1, y[:, None]) - z  # (n, classes): z_y - z_j >= 0
        own = torch.nn.functional.one_hot(y, classes).bool()
        per_class = {
            name: (f / w_diff.norm(p=p, dim=2)).masked_fill(own, torch.inf) for name, p in (("l2", 2.0), ("linf", 1.0))
        }
        exact = {name: dist.amin(dim=1) for name, dist in per_class.items()}
        exact["nearest"] = per_class["l2"].argmin(dim=1)  # the class whose L2 boundary is nearest
    clf = Classifier(net, input_shape=(d,), num_classes=classes, bounds=BOUNDS)
    return clf, x, y, exact


def assert_within_one_percent(res: EvasionResult, exact: torch.Tensor) -> None:
    assert res.min_distance is not None
    assert torch.isfinite(res.min_distance).all()
    rel = res.min_distance / exact - 1
    assert float(rel.abs().max()) <= 0.01, f"worst relative error {float(rel.abs().max()):.4f}"


@pytest.mark.parametrize(
    ("attack", "norm", "eps"),
    [
        (DeepFool(overshoot=OVERSHOOT), "l2", 0.3),
        (DeepFool(overshoot=OVERSHOOT), "linf", 0.1),
        (CarliniWagnerL2(**CW_EXACT), "l2", 0.3),
    ],
    ids=["deepfool-l2", "deepfool-linf", "cw-l2"],
)
def test_exact_distance_and_robust_flags_on_a_linear_model(
    linear_problem, attack: EvasionAttack, norm: str, eps: float
) -> None:
    """``min_distance`` is the closed-form distance within 1% for every sample; and the fixed-eps result (the
    minimum-norm point projected onto the eps-ball) is robust exactly where ``min_distance > eps``, leaving out
    samples within 1% of eps."""
    model, x, y = linear_problem
    res = attack(binary_classifier(model), x, y, ThreatModel(norm, eps), generator=generator(0))
    assert_within_one_percent(res, binary_distances(model, x)[norm])
    assert res.min_distance is not None
    clear = (res.min_distance - eps).abs() > 0.01 * eps
    expected = res.min_distance > eps
    assert expected[clear].any() and (~expected[clear]).any()
    assert torch.equal(res.robust[clear], expected[clear])


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_is_exact_in_one_step_on_a_multiclass_affine_model(norm: str) -> None:
    clf, x, y, exact = affine_problem()
    assert (clf.predict(x) == y).all()
    res = DeepFool(steps=1, overshoot=OVERSHOOT)(clf, x, y, ThreatModel(norm, 0.1), generator=generator(0))
    assert_within_one_percent(res, exact[norm])


def test_cw_on_a_multiclass_affine_model() -> None:
    """CW descends the logit margin ``z_y - max_{j != y} z_j``, so it heads for the boundary of the class with the
    highest other logit. That class is not always the nearest one in L2 (a larger logit gap over a much shorter
    ``||w_y - w_j||``), and then CW can settle on a farther boundary, a local minimum of its objective (this
    model has such samples; DeepFool, which compares ``|f_j| / ||w_y - w_j||`` over all classes, does not). So:
    within 1% wherever the nearest boundary is that of the runner-up class, and never below the exact distance."""
    clf, x, y, exact = affine_problem(n=60)
    res = CarliniWagnerL2(**CW_EXACT)(clf, x, y, ThreatModel("l2", 0.1), generator=generator(0))
    assert res.min_distance is not None and torch.isfinite(res.min_distance).all()
    with torch.no_grad():
        z = clf.module(x)
    own = torch.nn.functional.one_hot(y, 5).bool()
    runner_up_is_nearest = z.masked_fill(own, -torch.inf).argmax(dim=1) == exact["nearest"]
    assert int(runner_up_is_nearest.sum()) >= 40
    rel = res.min_distance / exact["l2"] - 1
    assert float(rel[runner_up_is_nearest].abs().max()) <= 0.01
    assert float(rel.min()) >= -1e-4


def small_mlp_problem() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """A random ReLU network (3 classes, bounds [0, 1]), its labels, five of them wrong from the start."""
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        x = torch.rand((40, 6), generator=g)
        y = net(x).argmax(dim=1)
    y[:5] = (y[:5] + 1) % 3
    return Classifier(net, input_shape=(6,), num_classes=3, bounds=(0.0, 1.0), batch_size=64), x, y


@pytest.mark.parametrize(
    ("attack", "norm"),
    [
        (DeepFool(steps=1), "l2"),
        (DeepFool(steps=1), "linf"),
        (CarliniWagnerL2(steps=5, binary_search_steps=2, initial_const=0.1), "l2"),
    ],
    ids=["deepfool-l2", "deepfool-linf", "cw-l2"],
)
def test_min_distance_is_inf_exactly_where_the_raw_candidate_is_not_adversarial(attack, norm: str) -> None:
    """Weak settings leave some samples unbroken. Both attacks are deterministic, so calling ``run`` on the
    correctly classified samples (one batch, as the base class does) gives the raw candidates the base verified."""
    clf, x, y = small_mlp_problem()
    threat = ThreatModel(norm, 0.05)
    res = attack(clf, x, y, threat, generator=generator(0))
    assert res.min_distance is not None
    assert (res.min_distance[:5] == 0).all()  # misclassified from the start: distance 0, not attacked
    correct = (clf.predict(x) == y).nonzero().flatten()
    batch = AttackBatch(clf, x[correct], y[correct], threat, generator(0))
    raw = clip_to_bounds(attack.run(batch).detach(), clf.bounds)
    fooled = clf.predict(raw) != y[correct]
    assert fooled.any() and (~fooled).any()
    md = res.min_distance[correct]
    assert torch.equal(torch.isinf(md), ~fooled)
    dist = NORMS.get(norm).distance(x[correct], raw)
    assert torch.allclose(md[fooled], dist[fooled])


@pytest.mark.parametrize(
    ("attack", "norm"),
    [(DeepFool(), "linf"), (CarliniWagnerL2(steps=10, binary_search_steps=2), "l2")],
    ids=["deepfool", "cw-l2"],
)
def test_same_seed_same_result(attack, norm: str) -> None:
    clf, x, y = small_mlp_problem()
    x_before = x.clone()
    first = attack(clf, x, y, ThreatModel(norm, 0.1), generator=generator(3))
    again = attack(clf, x, y, ThreatModel(norm, 0.1), generator=generator(3))
    assert torch.equal(x, x_before)
    assert torch.equal(first.x_adv, again.x_adv)
    assert first.min_distance is not None and again.min_distance is not None
    assert torch.equal(first.min_distance, again.min_distance)


def test_registered_by_name() -> None:
    assert EVASION_ATTACKS.get("deepfool") is DeepFool
    assert EVASION_ATTACKS.get("cw-l2") is CarliniWagnerL2
    assert DeepFool.minimum_norm and CarliniWagnerL2.minimum_norm
    assert CarliniWagnerL2.supported_norms == ("l2",)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DeepFool(steps=0),
        lambda: DeepFool(candidates=1),
        lambda: DeepFool(overshoot=-0.1),
        lambda: DeepFool(overshoot=float("nan")),
        lambda: CarliniWagnerL2(steps=0),
        lambda: CarliniWagnerL2(binary_search_steps=0),
        lambda: CarliniWagnerL2(lr=0.0),
        lambda: CarliniWagnerL2(initial_const=-1.0),
        lambda: CarliniWagnerL2(initial_const=float("inf")),
        lambda: CarliniWagnerL2(confidence=-1.0),
        lambda: CarliniWagnerL2(lr_schedule="linear"),
    ],
)
def test_invalid_configs_raise_config_error(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError):
        make()


def test_cw_refuses_linf() -> None:
    clf, x, y = small_mlp_problem()
    with pytest.raises(ConfigError, match="linf"):
        CarliniWagnerL2()(clf, x, y, ThreatModel("linf", 0.1), generator=generator(0))
