"""Order by evidence (issue 16): the zero-gradients check decides where the black-box attacks run in the chain.

- an input-quantised digits model (no gradient at all) gets Square first, on every correctly classified sample,
  HopSkipJump on what Square left, and the gradient attacks only on what both left (the counts are checked);
- its worst-case robust accuracy is no higher than with the old order (black-box last), for several seeds;
- black-box-beats-white-box keeps its meaning: a probe of what the black-box attacks broke, re-attacked by the
  white-box attacks, fires it on the masked model and not on an ordinary one;
- partial evidence (a quarter of the samples masked) keeps the old order, with the black-box attacks last;
- an ordinary model's plan and numbers are unchanged (pinned: the values of the code before the reordering).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from modelsec.attacks.base import EvasionAttack, ThreatModel
from modelsec.audits.presets import PRESETS, AttackSpec, build_attacks, preset_specs
from modelsec.audits.robustness import RobustnessRun, attack_labels, evaluate_robustness
from modelsec.audits.sanity import Remedies, apply_remedies, gradient_evidence, post_checks, pre_checks
from modelsec.core.seeding import generator, seeded
from modelsec.data import load_splits
from modelsec.data.dataset import Splits
from modelsec.defenses.training import TrainingConfig, train_classifier
from modelsec.models import Classifier, build_architecture

EPS = 0.1
SAMPLES = 40
# a small plan with the preset's shape: a gradient chain, the black-box attacks (Square's budget large enough that
# what it breaks no longer depends on the seed on these samples), the single-step reference last
SMALL_PLAN = [
    AttackSpec("apgd", {"steps": 10}),
    AttackSpec("square", {"max_queries": 1000}),
    AttackSpec("hopskipjump", {"iterations": 5, "max_num_evals": 100}),
    AttackSpec("fgsm"),
]


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_splits("digits", seed=0)


@pytest.fixture(scope="module")
def mlp(digits: Splits) -> nn.Module:
    with seeded(0):
        net = build_architecture("mlp", digits.input_shape, 10)
    train_classifier(net, digits.members, config=TrainingConfig(epochs=40, batch_size=64, seed=0))
    return net.eval()


class Quantised(nn.Module):
    """Rounds the inputs of the samples whose mean intensity exceeds ``above`` to 8 levels inside forward (all
    samples by default): their input gradient is zero, for every loss."""

    def __init__(self, net: nn.Module, above: float = -1.0) -> None:
        super().__init__()
        self.net, self.above = net, above

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        masked = (x.flatten(1).mean(1) > self.above).view(-1, *([1] * (x.dim() - 1)))
        return self.net(torch.where(masked, torch.round(x * 7) / 7, x))


class Counting:
    """An attack that records how many samples each call attacked (and otherwise is the attack)."""

    def __init__(self, attack: EvasionAttack) -> None:
        self.attack = attack
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.attack, name)

    def __call__(self, classifier: Classifier, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, **kw: Any) -> Any:
        self.calls.append(x.shape[0])
        return self.attack(classifier, x, y, threat, **kw)


def classifier(net: nn.Module, digits: Splits) -> Classifier:
    return Classifier(net, input_shape=digits.input_shape, num_classes=10, bounds=digits.bounds)


def data(digits: Splits) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(digits.nonmembers.x[:SAMPLES]), torch.from_numpy(digits.nonmembers.y[:SAMPLES])


def run(clf: Classifier, specs: list[AttackSpec], remedies: Remedies, seed: int, digits: Splits) -> RobustnessRun:
    attacks, skipped = build_attacks(apply_remedies(specs, remedies), clf, "linf")
    assert not skipped
    x, y = data(digits)
    return evaluate_robustness(clf, x, y, attacks=attacks, eps=[EPS], generator=generator(seed))


OLD = Remedies(add_black_box=True)  # the order before issue 16: the black-box attacks last
NEW = Remedies(add_black_box=True, black_box_first=True)


def test_masked_model_gets_black_box_first_and_gradients_only_on_the_survivors(mlp: nn.Module, digits: Splits) -> None:
    clf = classifier(Quantised(mlp), digits)
    x, y = data(digits)
    flags, remedies = pre_checks(clf, x, y)
    assert [f.check for f in flags] == ["zero-gradients"]
    assert remedies.black_box_first and remedies.add_black_box
    assert flags[0].remedy is not None and "first in the chain" in flags[0].remedy
    assert [s.attack for s in apply_remedies(list(PRESETS["standard"]), remedies)] == [
        "square", "hopskipjump", "apgd", "apgd", "apgd-t", "deepfool", "fgsm",
    ]  # fmt: skip

    attacks, _ = build_attacks(apply_remedies(SMALL_PLAN, remedies), clf, "linf")
    counting = [Counting(a) for a in attacks]
    labels = attack_labels(attacks)
    assert labels == ["square", "hopskipjump", "apgd", "fgsm"]
    result = evaluate_robustness(clf, x, y, attacks=counting, eps=[EPS], generator=generator(0))  # type: ignore[arg-type]
    correct = int((result.pred_clean == y).sum())
    standing = [correct] + [int(result.per_attack_robust[(label, EPS)].sum()) for label in labels]
    # each attack ran once, on exactly what every attack before it left standing: Square on every correct sample
    assert [c.calls for c in counting] == [[n] for n in standing[:-1]]
    assert standing[1] < correct / 2  # Square broke most samples: the gradient attacks see only a few
    assert standing[-1] == int(result.robust[EPS].sum())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_black_box_first_is_no_weaker_than_the_old_order(mlp: nn.Module, digits: Splits, seed: int) -> None:
    """The same attacks, the worst case over all of them: the new order's robust accuracy is not higher."""
    clf = classifier(Quantised(mlp), digits)
    old, new = run(clf, SMALL_PLAN, OLD, seed, digits), run(clf, SMALL_PLAN, NEW, seed, digits)
    assert [e.attack for e in old.result.results] == ["apgd", "square", "hopskipjump", "fgsm"]
    assert [e.attack for e in new.result.results][:2] == ["square", "hopskipjump"]
    assert new.result.robust_accuracy[repr(EPS)] <= old.result.robust_accuracy[repr(EPS)]
    assert new.result.clean_accuracy == old.result.clean_accuracy


def test_black_box_beats_white_box_is_measured_on_a_probe_when_black_box_ran_first(
    mlp: nn.Module, digits: Splits
) -> None:
    """With the black-box attacks first the chain cannot say what the white-box attacks would have missed; the probe
    re-attacks part of what Square broke: on the masked model no white-box attack breaks them (the flag fires), on
    the ordinary model they all do (it does not)."""

    def flag(net: nn.Module) -> str | None:
        clf = classifier(net, digits)
        res = run(clf, SMALL_PLAN, NEW, 0, digits)
        attacks, _ = build_attacks(apply_remedies(SMALL_PLAN, NEW), clf, "linf")
        post = post_checks(clf, res, attacks, attack_labels(attacks), "linf", generator(0))
        return next((f.message for f in post if f.check == "black-box-beats-white-box"), None)

    masked = flag(Quantised(mlp))
    assert masked is not None and "probe" in masked and "run first" in masked
    assert flag(mlp) is None


def test_partial_evidence_keeps_the_black_box_attacks_last(mlp: nn.Module, digits: Splits) -> None:
    """A quarter of the samples masked: the flag fires, the black-box attacks are added, after the gradient chain."""
    x, y = torch.from_numpy(digits.nonmembers.x[:200]), torch.from_numpy(digits.nonmembers.y[:200])
    above = float(x.flatten(1).mean(1).quantile(0.75))
    clf = classifier(Quantised(mlp, above=above), digits)
    evidence = gradient_evidence(clf, x, y)
    assert evidence is not None and 0.2 < evidence.masked == evidence.zero < 0.3
    flags, remedies = pre_checks(clf, x, y)
    assert [f.check for f in flags] == ["zero-gradients"]
    assert remedies.add_black_box and not remedies.black_box_first
    assert flags[0].remedy is not None and "after the gradient attacks" in flags[0].remedy
    plan = [s.attack for s in apply_remedies(list(PRESETS["standard"]), remedies)]
    assert plan == [s.attack for s in PRESETS["standard"]] + ["hopskipjump"]


def test_a_saturated_softmax_is_not_masked(mlp: nn.Module, digits: Splits) -> None:
    """Logits scaled a thousandfold saturate the float32 softmax (as defensive distillation does): cross-entropy
    gradients vanish, the margin's do not, so the gradient chain (with its DLR losses) keeps running first."""

    class Scaled(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 1000.0 * self.net(x)

    x, y = data(digits)
    evidence = gradient_evidence(classifier(Scaled(mlp), digits), x, y)
    assert evidence is not None and evidence.zero > 0.5 and evidence.masked == 0.0
    flags, remedies = pre_checks(classifier(Scaled(mlp), digits), x, y)
    assert "zero-gradients" in {f.check for f in flags} and not remedies.black_box_first


# the robust accuracy of each attack along the chain (cumulative) on the ordinary MLP, computed by the code before
# the reordering (quick and standard presets, first 40 digits test records, eps 0.1, seed 0); quick's since its
# restarts ascend cross-entropy on the samples closest to breaking (0.45 before: one sample more survived)
PINNED = {
    "quick": [("apgd-margin", 0.425), ("fgsm", 0.425)],
    "standard": [("apgd", 0.425), ("apgd-dlr", 0.425), ("apgd-t", 0.425), ("deepfool", 0.425), ("square", 0.425),
                 ("fgsm", 0.425)],
}  # fmt: skip


@pytest.mark.parametrize("preset", ["quick", "standard"])
def test_an_ordinary_model_keeps_its_plan_and_numbers(mlp: nn.Module, digits: Splits, preset: str) -> None:
    clf = classifier(mlp, digits)
    x, y = data(digits)
    flags, remedies = pre_checks(clf, x, y)
    assert flags == [] and not remedies.black_box_first and not remedies.add_black_box
    assert apply_remedies(list(preset_specs(preset)), remedies) == list(PRESETS[preset])
    specs = list(preset_specs(preset))
    if preset == "standard":  # the standard chain at test scale
        specs = [AttackSpec(s.attack, {**s.params, "steps": 10} if "steps" in s.params else s.params) for s in specs]
        specs = [AttackSpec(s.attack, {"max_queries": 300}) if s.attack == "square" else s for s in specs]
    res = run(clf, specs, remedies, 0, digits)
    got = [(e.attack, round(e.robust_accuracy, 4)) for e in res.result.results]
    assert got == PINNED[preset]


def test_an_added_black_box_attack_takes_the_presets_budget() -> None:
    masked = Remedies(add_black_box=True, black_box_first=True)
    quick = apply_remedies(list(PRESETS["quick"]), masked, "quick")
    assert quick[0] == AttackSpec("square", {"max_queries": 1000})
    assert [s.attack for s in quick][:2] == ["square", "hopskipjump"]
    standard = apply_remedies(list(PRESETS["standard"]), masked, "standard")
    # the plan's own budget, on every sample (a check fired: no probe)
    assert next(s for s in standard if s.attack == "square").params == {"max_queries": 5000, "probe": False}
    assert apply_remedies(list(PRESETS["quick"]), masked)[0] == AttackSpec("square", {})  # no preset: defaults
