"""The sanity checks on models built to fool gradient attacks (issue 3's acceptance cases), on digits:

- defensive distillation at T=100 (Papernot et al. 2016): saturated softmax, zero cross-entropy gradients; the
  checks fire and the standard preset (DLR losses, black-box attacks) brings robust accuracy to within 5 points of
  the undefended model's (Carlini & Wagner 2017);
- input quantisation inside ``forward``: zero gradients; the black-box attacks break it;
- random noise inside ``forward``: the randomness check fires and EoT is used;
- batch statistics baked into the model (BatchNorm exported in train mode, or computed in ``forward``): the
  batch-dependence check fires and the verdict says the numbers are not trustworthy; it stays silent on normal
  models at any batch size, and on randomised models without batch statistics.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional

from modelsec.audits import AuditConfig, run_audit
from modelsec.audits.presets import build_attacks, preset_specs
from modelsec.audits.sanity import CHECKS, apply_remedies, check_batch_dependence, pre_checks
from modelsec.audits.verdict import make_verdict
from modelsec.data import load_splits
from modelsec.data.dataset import Splits
from modelsec.models import Classifier, build_architecture
from modelsec.models.loading import load_model
from modelsec.report import render_markdown
from modelsec.results import Interval, RobustnessResult, SanityFlag
from modelsec.seeding import generator, seeded
from modelsec.training import TrainingConfig, train_classifier
from tests.conftest import needs_fashion_mnist

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


def test_noisy_model_randomness_triggers_eot(undefended: nn.Module, digits: Splits) -> None:
    """Noise inside forward fires the randomness check (and not batch-dependence), and its remedy reaches the
    standard preset: EoT on every attack that supports it."""
    clf = Classifier(Noisy(undefended), input_shape=digits.input_shape, num_classes=10, bounds=digits.bounds)
    x, y = torch.from_numpy(digits.nonmembers.x[:80]), torch.from_numpy(digits.nonmembers.y[:80])
    flags, remedies = pre_checks(clf, x, y)
    assert [f.check for f in flags] == ["randomness"]
    assert remedies.eot_samples == 10
    attacks, _ = build_attacks(apply_remedies(list(preset_specs("standard")), remedies), clf, "linf")
    apgd = next(a for a in attacks if a.label == "apgd")
    assert apgd.params()["eot_samples"] == 10
    with_eot = [a for a in attacks if "eot_samples" in a.params()]
    assert len(with_eot) >= 4 and all(a.params()["eot_samples"] == 10 for a in with_eot)


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


# -- batch dependence ------------------------------------------------------------------------------------------


class BatchStatistics(nn.Module):
    """Normalises its hidden layer with the batch's own mean and spread inside ``forward`` (BatchNorm in train mode,
    written out so that eval mode cannot switch it off): a record's logits depend on its batch-mates."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(64, 32)
        self.out = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x.flatten(1))
        h = (h - h.mean(0)) / (h.std(0, unbiased=False) + 1e-3)
        return self.out(torch.relu(h))


def _export_train_mode(digits: Splits, folder: Path, *, dropout: bool) -> Path:
    """A digits MLP with BatchNorm (and Dropout), trained, then exported by torch.export in TRAIN mode with a
    dynamic batch dimension: the batch statistics (and the dropout) are baked into the program."""
    with seeded(0):
        layers = [nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU()]
        net = nn.Sequential(*layers, *([nn.Dropout(0.3)] if dropout else []), nn.Linear(64, 10))
    train_classifier(net, digits.members, config=TrainingConfig(epochs=10, batch_size=64, seed=0))
    example = (torch.from_numpy(digits.nonmembers.x[:8]),)
    program = torch.export.export(net.train(), example, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    path = folder / f"bn-train{'-dropout' if dropout else ''}.pt2"
    torch.export.save(program, path)
    return path


@pytest.fixture(scope="module")
def bn_train_pt2(digits: Splits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export_train_mode(digits, tmp_path_factory.mktemp("pt2"), dropout=False)


def _loaded(path: Path, digits: Splits) -> Classifier:
    return load_model(path, input_shape=digits.input_shape, num_classes=10, bounds=digits.bounds).classifier


@pytest.mark.parametrize("batch_size", [1, 7, 64, 128, 1000])
def test_batch_dependence_is_silent_on_a_normal_mlp(undefended: nn.Module, digits: Splits, batch_size: int) -> None:
    clf = Classifier(undefended, input_shape=digits.input_shape, num_classes=10, batch_size=batch_size)
    assert check_batch_dependence(clf, torch.from_numpy(digits.nonmembers.x[:200])) is None


@needs_fashion_mnist
@pytest.mark.parametrize("batch_size", [7, 128, 1000])
def test_batch_dependence_is_silent_on_the_bundled_cnn(batch_size: int) -> None:
    clf = load_model().classifier
    clf.batch_size = batch_size
    x = torch.from_numpy(load_splits("fashion-mnist", seed=0).nonmembers.x[:200])
    assert check_batch_dependence(clf, x) is None


def test_batch_statistics_in_forward_fire_the_check(digits: Splits) -> None:
    with seeded(0):
        clf = Classifier(BatchStatistics(), input_shape=digits.input_shape, num_classes=10)
    flag = check_batch_dependence(clf, torch.from_numpy(digits.nonmembers.x[:200]))
    assert flag is not None and flag.check == "batch-dependence" and flag.severity == "error"
    assert "alone" in flag.message and "in another order" in flag.message and "not trustworthy" in flag.message
    assert flag.untrustworthy and flag.consequence == "robustness numbers not trustworthy"


def test_bn_exported_in_train_mode_is_flagged_and_the_verdict_distrusts_the_numbers(
    bn_train_pt2: Path, digits: Splits
) -> None:
    config = AuditConfig(eps=(0.1,), samples=100, mia_samples=100, preset="quick", seed=0)
    result = run_audit(bn_train_pt2, digits, config=config).result
    rob = result.robustness
    assert rob is not None and "batch-dependence" in rob.checks
    flag = next(f for f in rob.flags if f.check == "batch-dependence")
    assert flag.severity == "error" and not flag.resolved and flag.remedy is None
    assert not any(f.check == "randomness" for f in rob.flags)  # deterministic: only the batch changes its output
    assert result.verdict.level == "fail"
    assert "robustness numbers not trustworthy" in result.verdict.headline
    assert "overestimated" not in result.verdict.headline
    md = render_markdown(result)
    assert "unresolved: robustness numbers not trustworthy** — No remedy was applied." in md


def test_verdict_fails_on_untrustworthy_numbers_whatever_they_are() -> None:
    ci = Interval(0.9, 0.98)
    flag = SanityFlag("batch-dependence", "logits differ alone", severity="error")
    rob = RobustnessResult(100, 0.95, ci, [], {"0.1": 0.94}, {"0.1": ci}, flags=[flag], checks=list(CHECKS))
    verdict = make_verdict(rob, None, "linf")
    assert verdict.level == "fail" and verdict.headline.startswith("Robust: 94.0% accuracy under attack")
    assert "robustness numbers not trustworthy" in verdict.headline and "overestimated" not in verdict.headline
    assert any("'batch-dependence' fired, UNRESOLVED" in d for d in verdict.details)
    other = make_verdict(dataclasses.replace(rob, flags=[SanityFlag("zero-gradients", "zero")]), None, "linf")
    assert other.level == "warning" and "robustness likely overestimated" in other.headline


def test_randomised_models_are_judged_on_their_mean_logits(
    bn_train_pt2: Path, digits: Splits, tmp_path: Path, undefended: nn.Module
) -> None:
    """Train-mode Dropout alone is randomness, not batch dependence, for several seeds of its noise; with BatchNorm
    in train mode as well, both checks fire."""
    x, y = torch.from_numpy(digits.nonmembers.x[:200]), torch.from_numpy(digits.nonmembers.y[:200])
    dropout = Classifier(DropoutAlways(undefended), input_shape=digits.input_shape, num_classes=10)
    for seed in range(3):
        with seeded(seed):
            fired = {f.check for f in pre_checks(dropout, x, y)[0]}
        assert "randomness" in fired and "batch-dependence" not in fired
    both = _loaded(_export_train_mode(digits, tmp_path, dropout=True), digits)
    with seeded(0):
        fired = {f.check for f in pre_checks(both, x, y)[0]}
    assert {"randomness", "batch-dependence"} <= fired


class DropoutAlways(nn.Module):
    """Dropout on the inputs that stays on in eval mode (torch's global generator), as in a train-mode export."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(functional.dropout(x, 0.3, training=True))
