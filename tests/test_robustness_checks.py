"""The sanity checks on models built to fool gradient attacks (issue 3's acceptance cases), on digits:

- defensive distillation at T=100 (Papernot et al. 2016): saturated softmax, zero cross-entropy gradients; the
  checks fire and the standard preset (DLR losses, black-box attacks) brings robust accuracy to within 5 points of
  the undefended model's (Carlini & Wagner 2017);
- input quantisation inside ``forward``: zero gradients; the black-box attacks break it;
- random noise inside ``forward``: the randomness check fires and EoT is used.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional

from modelsec.audits import AuditConfig, run_audit
from modelsec.data import load_splits
from modelsec.data.dataset import Splits
from modelsec.models import Classifier, build_architecture
from modelsec.seeding import generator, seeded
from modelsec.training import TrainingConfig, train_classifier

EPS = 0.1
CONFIG = AuditConfig(eps=(EPS,), samples=80, mia_samples=100, preset="standard", seed=0)


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_splits("digits", seed=0)


@pytest.fixture(scope="module")
def undefended(digits: Splits) -> nn.Module:
    with seeded(0):
        net = build_architecture("mlp", digits.input_shape, 10)
    train_classifier(net, digits.members, config=TrainingConfig(epochs=40, batch_size=64, seed=0))
    return net.eval()


@pytest.fixture(scope="module")
def undefended_robust_accuracy(undefended: nn.Module, digits: Splits) -> float:
    rob, _ = audit(undefended, digits)
    return rob.robust_accuracy[repr(EPS)]


def _train_at_temperature(net: nn.Module, x: torch.Tensor, targets: torch.Tensor, temperature: float) -> None:
    """Cross-entropy between softmax(logits / T) and soft ``targets``, full-batch Adam (test-scale distillation)."""
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = generator(1)
    for _ in range(60):
        for idx in torch.randperm(x.shape[0], generator=g).split(64):
            logp = functional.log_softmax(net(x[idx]) / temperature, dim=1)
            loss = -(targets[idx] * logp).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


@pytest.fixture(scope="module")
def distilled(digits: Splits) -> nn.Module:
    """Defensive distillation at T=100: teacher and student trained at temperature T, deployed at T=1."""
    t = 100.0
    x = torch.from_numpy(digits.members.x)
    onehot = functional.one_hot(torch.from_numpy(digits.members.y), 10).float()
    with seeded(1):
        teacher = build_architecture("mlp", digits.input_shape, 10)
        student = build_architecture("mlp", digits.input_shape, 10)
    _train_at_temperature(teacher, x, onehot, t)
    with torch.no_grad():
        soft = functional.softmax(teacher(x) / t, dim=1)
    _train_at_temperature(student, x, soft, t)
    return student.eval()


class Quantised(nn.Module):
    """Rounds inputs to 8 levels inside forward: the input gradient is zero almost everywhere."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 7) / 7)


class Noisy(nn.Module):
    """Adds Gaussian noise to the inputs in forward (its own seeded generator)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.g = generator(123)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + 0.05 * torch.randn(x.shape, generator=self.g))


def audit(net: nn.Module, digits: Splits):  # type: ignore[no-untyped-def]
    clf = Classifier(net, input_shape=digits.input_shape, num_classes=10, bounds=digits.bounds)
    result = run_audit(clf, digits, config=CONFIG).result
    assert result.robustness is not None
    return result.robustness, result


@pytest.mark.slow
def test_distilled_model_is_flagged_and_broken(
    undefended_robust_accuracy: float, distilled: nn.Module, digits: Splits
) -> None:
    rob, result = audit(distilled, digits)
    assert rob.clean_accuracy > 0.85
    fired = {f.check for f in rob.flags}
    assert fired & {"zero-gradients", "probability-outputs", "large-eps-not-broken", "black-box-beats-white-box"}
    # cross-entropy gradients vanish: APGD-CE (first in the chain) leaves far more standing than the worst case
    assert rob.chain and rob.results[0].attack == "apgd"
    assert rob.results[0].robust_accuracy > rob.robust_accuracy[repr(EPS)] + 0.2
    assert rob.robust_accuracy[repr(EPS)] <= undefended_robust_accuracy + 0.05
    assert "overestimated" in result.verdict.headline or all(f.resolved for f in rob.flags)


@pytest.mark.slow
def test_quantised_model_zero_gradients_broken_by_black_box(
    undefended: nn.Module, undefended_robust_accuracy: float, digits: Splits
) -> None:
    rob, _ = audit(Quantised(undefended), digits)
    flag = next(f for f in rob.flags if f.check == "zero-gradients")
    assert flag.remedy and "black-box" in flag.remedy
    by_attack = {r.attack: r.robust_accuracy for r in rob.results}  # cumulative along the chain
    assert "hopskipjump" in by_attack and "square" in by_attack
    assert by_attack["square"] < by_attack["apgd-t"] - 0.3  # the black-box attack breaks what gradients cannot
    assert rob.robust_accuracy[repr(EPS)] <= undefended_robust_accuracy + 0.05


@pytest.mark.slow
def test_noisy_model_randomness_triggers_eot(undefended: nn.Module, digits: Splits) -> None:
    rob, result = audit(Noisy(undefended), digits)
    assert any(f.check == "randomness" for f in rob.flags)
    assert any("EoT" in r for r in result.settings["remedies"])
    apgd = next(r for r in rob.results if r.attack == "apgd")
    assert apgd.params["eot_samples"] == 10


def test_labels_only_model_gets_the_attacks_it_supports(undefended: nn.Module, digits: Splits) -> None:
    """A model that returns only labels: gradient and score attacks are skipped with a reason, HopSkipJump runs."""
    from modelsec.models import Capability

    clf = Classifier(
        undefended, input_shape=digits.input_shape, num_classes=10, bounds=digits.bounds, capability=Capability.LABELS
    )
    config = AuditConfig(eps=(0.2,), samples=20, mia_samples=50, preset="quick", checks=False)
    rob = run_audit(clf, digits, config=config).result.robustness
    assert rob is not None
    assert {s.attack for s in rob.skipped} == {"apgd", "fgsm"}
    assert all("needs gradients" in s.reason for s in rob.skipped)
    assert [r.attack for r in rob.results] == ["hopskipjump"]
    assert rob.min_norm and rob.min_norm[0].attack == "hopskipjump"


def test_standard_preset_skips_the_dlr_stage_on_two_class_models() -> None:
    from modelsec.audits.presets import build_attacks, preset_specs
    from modelsec.models import Classifier

    net = torch.nn.Linear(4, 2)
    attacks, skipped = build_attacks(preset_specs("standard"), Classifier(net, input_shape=(4,), num_classes=2), "linf")
    assert [s.attack for s in skipped] == ["apgd-dlr"] and "3 classes" in skipped[0].reason
    assert [a.label for a in attacks][:2] == ["apgd", "apgd-t"]
    three, skipped3 = build_attacks(
        preset_specs("standard"), Classifier(torch.nn.Linear(4, 3), input_shape=(4,), num_classes=3), "linf"
    )
    assert not skipped3 and [a.label for a in three][:3] == ["apgd", "apgd-dlr", "apgd-t"]
