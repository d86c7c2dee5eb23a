"""Evasion attacks: the base contract, an analytic linear case, and conformance over every registered attack."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import pytest
import torch

from modelsec.attacks.base import AttackBatch, EvasionAttack, ThreatModel
from modelsec.attacks.evasion import EVASION_ATTACKS, FGSM, PGD
from modelsec.attacks.norms import NORMS
from modelsec.audits.presets import AttackSpec, build_attacks
from modelsec.core.errors import ConfigError, DataError
from modelsec.core.seeding import generator
from modelsec.models.base import Capability, Classifier
from tests.conftest import LinearBinary

pytestmark = pytest.mark.numerics  # rerun by `make test-numerics` under another CPU configuration


def linear_classifier(model: LinearBinary, bounds: tuple[float, float] = (-10.0, 10.0)) -> Classifier:
    return Classifier(model, input_shape=(8,), num_classes=2, bounds=bounds, batch_size=64)


def margins(model: LinearBinary, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (x @ model.w + model.b).abs()


@pytest.mark.parametrize("name", ["fgsm", "pgd", "bim"])
def test_linear_linf_success_exactly_below_margin(linear_problem, name: str) -> None:
    """On a linear model the L-inf distance to the boundary is |margin| / ||w||_1: a fixed-eps attack must break
    exactly the samples closer than eps (FGSM is optimal here; PGD and BIM must match it)."""
    model, x, y = linear_problem
    clf = linear_classifier(model)
    eps = 0.15
    dist = margins(model, x) / model.w.detach().abs().sum()
    clear = (dist - eps).abs() > 1e-4  # leave out samples within float round-off of the boundary
    expected = dist < eps
    assert expected[clear].any() and (~expected[clear]).any()
    for seed in range(4):  # the gradient's sign is the same everywhere: exact from any random start
        res = EVASION_ATTACKS.get(name)()(clf, x, y, ThreatModel("linf", eps), generator=generator(seed))
        assert torch.equal(res.success[clear], expected[clear])


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_linear_l2_success_exactly_below_margin(linear_problem, name: str) -> None:
    model, x, y = linear_problem
    clf = linear_classifier(model)
    eps = 0.3
    dist = margins(model, x) / model.w.detach().norm()
    # PGD from a random start reaches the L2 boundary point only approximately (projection shrinks the
    # component along w): allow 3% of eps
    clear = (dist - eps).abs() > 0.03 * eps
    for seed in range(4):
        res = EVASION_ATTACKS.get(name)()(clf, x, y, ThreatModel("l2", eps), generator=generator(seed))
        assert torch.equal(res.success[clear], (dist < eps)[clear])


def small_mlp_problem(seed: int = 0) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)  # test-local model init; the attacks themselves use explicit generators
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    )
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((50, 2, 4, 4), generator=g)
    y = net(x).argmax(1).detach()
    y[:5] = (y[:5] + 1) % 3  # five samples misclassified from the start
    return Classifier(net, input_shape=(2, 4, 4), num_classes=3, bounds=(0.0, 1.0), batch_size=16), x, y


@pytest.mark.parametrize("name", EVASION_ATTACKS.names())
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_conformance_every_attack(name: str, norm: str) -> None:
    """Every registered attack: outputs in the threat model and the bounds, success = re-classification,
    inputs untouched, same seed -> same result, misclassified inputs count as broken without being attacked."""
    clf, x, y = small_mlp_problem()
    cls = EVASION_ATTACKS.get(name)
    if norm not in cls.supported_norms:
        pytest.skip(f"{name} does not support the {norm} norm")
    attack = cls(**cls.test_params)
    x_before = x.clone()
    eps = 0.05 if norm == "linf" else 0.5
    threat = ThreatModel(norm, eps)
    res = attack(clf, x, y, threat, generator=generator(1))
    assert torch.equal(x, x_before)
    dist = NORMS.get(norm).distance(x, res.x_adv)
    assert float(dist.max()) <= eps * (1 + 1e-5) + 1e-6
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert torch.equal(res.success, clf.predict(res.x_adv) != y)
    assert res.success[:5].all()
    assert torch.equal(res.x_adv[:5], x[:5])
    again = attack(clf, x, y, threat, generator=generator(1))
    assert torch.equal(res.x_adv, again.x_adv)
    assert res.params == attack.params()


@pytest.mark.parametrize("name", EVASION_ATTACKS.names())
def test_unsupported_reason_is_what_the_attack_and_the_plan_use(name: str) -> None:
    """Every registered attack, on every capability, norm and a 2- or 3-class model: where
    ``unsupported_reason`` gives a reason, calling the attack refuses with it before any query and the audit's
    plan skips it with it; where it gives none, the plan keeps it (the conformance test above runs it)."""
    cls = EVASION_ATTACKS.get(name)
    variants = [cls(**cls.test_params)]
    if "loss" in cls.__dataclass_fields__:
        variants.append(cls(**{**cls.test_params, "loss": "dlr"}))
    reasons = set()
    for classes in (2, 3):
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, classes))
        x = torch.rand((4, 2, 4, 4), generator=generator(0))
        for capability in Capability:
            clf = Classifier(net, input_shape=(2, 4, 4), num_classes=classes, capability=capability)
            for norm in NORMS.names():
                threat = ThreatModel(norm, 0.1)
                for attack in variants:
                    reason = attack.unsupported_reason(clf, threat)
                    spec = AttackSpec(name, dataclasses.asdict(attack))
                    planned, skipped = build_attacks([spec], clf, norm)
                    if reason is None:
                        assert attack in planned and not skipped
                        continue
                    reasons.add(reason)
                    assert [s.reason for s in skipped] == [reason] and attack not in planned
                    with pytest.raises(ConfigError, match=re.escape(reason)):
                        attack(clf, x, torch.zeros(4, dtype=torch.int64), threat, generator=generator(0))
                    assert clf.queries == 0
    assert any(r.startswith("needs ") for r in reasons) or cls.requires == Capability.LABELS
    if "loss" in cls.__dataclass_fields__:
        assert "the DLR loss needs at least 3 classes" in reasons
    if set(cls.supported_norms) != set(NORMS.names()):
        assert any(r.startswith("does not support the") for r in reasons)


def test_a_plan_names_a_skipped_attack_by_its_label_where_its_parameters_are_the_reason() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 2))
    two = Classifier(net, input_shape=(8,), num_classes=2)
    _, skipped = build_attacks([AttackSpec("pgd", {"loss": "dlr"}), AttackSpec("cw-l2")], two, "linf")
    assert [(s.attack, s.reason) for s in skipped] == [
        ("pgd-dlr", "the DLR loss needs at least 3 classes"),
        ("cw-l2", "does not support the linf norm"),
    ]
    labels = Classifier(net, input_shape=(8,), num_classes=2, capability=Capability.LABELS)
    _, skipped = build_attacks([AttackSpec("pgd", {"loss": "dlr"})], labels, "linf")
    assert [(s.attack, s.reason) for s in skipped] == [("pgd", "needs gradients; the model offers only labels")]


@pytest.mark.parametrize("name", EVASION_ATTACKS.names())
def test_every_numeric_hyper_parameter_refuses_a_negative_value_by_name(name: str) -> None:
    cls = EVASION_ATTACKS.get(name)
    for field in dataclasses.fields(cls):
        if field.type in ("bool", bool):
            continue
        with pytest.raises(ConfigError) as err:
            cls(**{field.name: -1})
        assert str(err.value).startswith(f"{name}: {field.name} must"), str(err.value)


def test_stronger_attack_is_not_weaker() -> None:
    """PGD-40 with two restarts breaks at least what FGSM breaks, for every model and seed tried, and strictly
    more on the models where FGSM leaves something to gain."""
    threat = ThreatModel("linf", 0.1)
    gained = 0
    for model_seed in (1, 3, 4):
        clf, x, y = small_mlp_problem(seed=model_seed)
        for seed in (0, 1, 2):
            fgsm = FGSM()(clf, x, y, threat, generator=generator(seed))
            pgd = PGD(steps=40, restarts=2)(clf, x, y, threat, generator=generator(seed))
            assert pgd.robust_accuracy <= fgsm.robust_accuracy
            gained += int(pgd.success.sum()) - int(fgsm.success.sum())
    assert gained > 0


@dataclass(frozen=True, kw_only=True)
class LyingAttack(EvasionAttack):
    """Returns points far outside the ball (and NaN) and would claim success: the base class must fix it."""

    name = "lying"

    def run(self, batch: AttackBatch) -> torch.Tensor:
        out = batch.x + 100.0
        out[0] = float("nan")
        return out


def test_base_class_projects_clips_and_reclassifies() -> None:
    clf, x, y = small_mlp_problem()
    res = LyingAttack()(clf, x, y, ThreatModel("linf", 0.05), generator=generator(0))
    assert float(NORMS.get("linf").distance(x, res.x_adv).max()) <= 0.05 + 1e-6
    assert float(res.x_adv.max()) <= 1.0
    assert torch.isfinite(res.x_adv).all()
    assert torch.equal(res.success, clf.predict(res.x_adv) != y)


def test_early_stopping_saves_queries() -> None:
    clf, x, y = small_mlp_problem()
    threat = ThreatModel("linf", 0.3)
    eager = PGD(steps=30, early_stop=True)(clf, x, y, threat, generator=generator(0))
    full = PGD(steps=30, early_stop=False)(clf, x, y, threat, generator=generator(0))
    assert eager.queries < full.queries
    assert eager.robust_accuracy <= full.robust_accuracy + 0.1


def test_invalid_inputs_and_configs() -> None:
    clf, x, y = small_mlp_problem()
    with pytest.raises(ConfigError):
        PGD(steps=0)
    with pytest.raises(ConfigError):
        PGD(loss="hinge")
    with pytest.raises(ConfigError):
        ThreatModel("l7", 0.1)
    with pytest.raises(ConfigError):
        ThreatModel("linf", -1.0)
    with pytest.raises(DataError, match="outside the model's bounds"):
        PGD()(clf, x + 2, y, ThreatModel("linf", 0.1), generator=generator(0))
    with pytest.raises(DataError, match="labels"):
        PGD()(clf, x, y + 5, ThreatModel("linf", 0.1), generator=generator(0))
    with pytest.raises(DataError, match="input shape"):
        PGD()(clf, x[:, :1], y, ThreatModel("linf", 0.1), generator=generator(0))
    labels_only = Classifier(clf.module, input_shape=(2, 4, 4), num_classes=3, capability=Capability.LABELS)
    with pytest.raises(ConfigError, match="gradients"):
        PGD()(labels_only, x, y, ThreatModel("linf", 0.1), generator=generator(0))
