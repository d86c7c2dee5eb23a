"""The sanity checks on models built to fool gradient attacks (issue 3's acceptance cases), on digits:

- defensive distillation at T=100 (Papernot et al. 2016): saturated softmax, zero cross-entropy gradients; the
  checks fire and the standard preset (DLR losses, black-box attacks) brings robust accuracy to within 5 points of
  the undefended model's (Carlini & Wagner 2017);
- input quantisation inside ``forward``: zero gradients; the black-box attacks break it;
- random noise inside ``forward``: the randomness check fires, EoT is used, and every prediction (clean and
  adversarial) is a majority vote, equal to a slow per-record reference;
- batch statistics baked into the model (BatchNorm exported in train mode, or computed in ``forward``): the
  batch-dependence check fires and the verdict says the numbers are not trustworthy; it stays silent on normal
  models at any batch size, and on randomised models without batch statistics.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional

from modelsec.audits import AuditConfig, run_audit
from modelsec.audits.presets import build_attacks, preset_specs
from modelsec.audits.sanity import CHECKS, VOTES, apply_remedies, check_batch_dependence, pre_checks
from modelsec.audits.verdict import make_verdict
from modelsec.core.seeding import generator, seeded
from modelsec.data import load_splits
from modelsec.data.dataset import Splits
from modelsec.defenses.training import TrainingConfig, train_classifier
from modelsec.models import Classifier, build_architecture
from modelsec.models.loading import load_model
from modelsec.report import render_markdown
from modelsec.results.audit import Interval, RobustnessResult, SanityFlag
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
    rob, result = audit(Quantised(undefended), digits)
    flag = next(f for f in rob.flags if f.check == "zero-gradients")
    assert flag.remedy and "black-box" in flag.remedy and "first in the chain" in flag.remedy
    # every gradient is zero: the black-box attacks run first (tests/test_evidence_order.py checks the counts)
    assert [r.attack for r in rob.results][:2] == ["square", "hopskipjump"]
    assert any("black-box attacks first" in note for note in result.settings["remedies"])
    by_attack = {r.attack: r.robust_accuracy for r in rob.results}  # cumulative along the chain
    assert by_attack["square"] < rob.clean_accuracy - 0.3  # the black-box attack breaks what gradients cannot
    # and the white-box attacks, re-run on a probe of what it broke, miss them
    probe = next(f for f in rob.flags if f.check == "black-box-beats-white-box")
    assert "probe" in probe.message
    assert rob.robust_accuracy[repr(EPS)] <= undefended_robust_accuracy + 0.05


def test_noisy_model_randomness_triggers_eot(undefended: nn.Module, digits: Splits) -> None:
    """Noise inside forward fires the randomness check (and not batch-dependence), and its remedies reach the
    standard preset: EoT on every attack that supports it, and every prediction a majority vote (what these do in
    an audit: test_randomised_audit_clean_and_robust_accuracy_share_the_vote)."""
    clf = Classifier(Noisy(undefended), input_shape=digits.input_shape, num_classes=10, bounds=digits.bounds)
    x, y = torch.from_numpy(digits.nonmembers.x[:80]), torch.from_numpy(digits.nonmembers.y[:80])
    flags, remedies = pre_checks(clf, x, y)
    assert [f.check for f in flags] == ["randomness"]
    assert remedies.eot_samples == 10 and remedies.votes == VOTES
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


# -- predictions of a randomised model -------------------------------------------------------------------------


class CyclicNoise(nn.Module):
    """Gaussian input noise (sigma 0.4: single passes disagree often) that, for each record, cycles through
    ``VOTES`` fixed draws: any ``VOTES`` consecutive passes over a record see each draw once, so a majority vote
    over them is a function of the record, which a slow reference can reproduce exactly. Records are told apart by
    their content rounded to 1/64 (digits pixels are multiples of 1/16), so perturbations below 1/128 keep a
    record's draws; the draws are seeded by that content, so every instance draws the same ones."""

    def __init__(self, net: nn.Module, sigma: float = 0.4) -> None:
        super().__init__()
        self.net, self.sigma = net, sigma
        self.passes: dict[bytes, int] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = []
        for row in x.detach():
            key = torch.round(row * 64).to(torch.int16).numpy().tobytes()
            seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") % 2**62
            draws = torch.randn((VOTES, *row.shape), generator=generator(seed))
            noise.append(draws[self.passes.get(key, 0) % VOTES])
            self.passes[key] = self.passes.get(key, 0) + 1
        return self.net(x + self.sigma * torch.stack(noise))


def reference_votes(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The definition, slowly: each record alone, ``VOTES`` passes, the most frequent label (ties: the highest
    mean probability)."""
    out = []
    with torch.no_grad():
        for row in x:
            logits = [model(row[None])[0] for _ in range(VOTES)]
            counts = torch.zeros(10)
            for lg in logits:
                counts[int(lg.argmax())] += 1
            best = counts == counts.max()
            mean_p = torch.stack([lg.softmax(0) for lg in logits]).mean(0)
            out.append(int(torch.where(best, mean_p, -1.0).argmax()))
    return torch.tensor(out)


def test_majority_vote_matches_the_slow_reference(undefended: nn.Module, digits: Splits) -> None:
    x = torch.from_numpy(digits.nonmembers.x[:120])
    clf = Classifier(CyclicNoise(undefended), input_shape=digits.input_shape, num_classes=10, batch_size=32)
    single = [clf.predict(x) for _ in range(3)]
    assert (single[0] != single[1]).any() or (single[1] != single[2]).any()  # single passes disagree
    voted = clf.with_votes(VOTES)
    expected = reference_votes(CyclicNoise(undefended), x)
    assert torch.equal(voted.predict(x), expected) and torch.equal(voted.predict(x), expected)
    assert clf.votes == 1 and voted.votes == VOTES and voted.module is clf.module
    assert "majority vote over 10" in voted.prediction_rule


def test_randomised_audit_clean_and_robust_accuracy_share_the_vote(undefended: nn.Module, digits: Splits) -> None:
    """Clean accuracy is the vote's, exactly as the slow reference computes it; at an eps that moves no vote,
    robust accuracy equals it (one pass per re-classification would break samples the vote keeps)."""
    eps = 1e-5
    config = AuditConfig(eps=(eps,), samples=60, mia_samples=60, attacks=("pgd",), pgd_steps=3, seed=0)
    noisy = Classifier(CyclicNoise(undefended), input_shape=digits.input_shape, num_classes=10)
    outcome = run_audit(noisy, digits, config=config)
    rob, run = outcome.result.robustness, outcome.robustness_run
    assert rob is not None and run is not None
    expected = reference_votes(CyclicNoise(undefended), run.x)
    assert rob.clean_accuracy == int((expected == run.y).sum()) / len(run.y)
    assert torch.equal(run.pred_clean, expected)
    assert rob.robust_accuracy[repr(eps)] == rob.clean_accuracy
    assert rob.prediction == f"majority vote over {VOTES} forward passes (ties: the highest mean probability)"
    fired = {f.check for f in rob.flags}
    assert "randomness" in fired and "batch-dependence" not in fired
    assert rob.results[0].params["eot_samples"] == 10
    assert any("majority vote" in r for r in outcome.result.settings["remedies"])
    assert rob.prediction in render_markdown(outcome.result)
    assert noisy.votes == 1  # the caller's classifier is left as it was


class GlobalNoise(nn.Module):
    """Gaussian input noise from torch's global generator."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + 0.3 * torch.randn(x.shape))


def test_audit_seeds_a_model_that_draws_from_the_global_generator(undefended: nn.Module, digits: Splits) -> None:
    config = AuditConfig(eps=(0.05,), samples=40, mia_samples=50, attacks=("fgsm",), seed=3)
    state = torch.get_rng_state()
    runs = [run_audit(GlobalNoise(undefended), digits, config=config) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is left where it was
    a, b = (r.robustness_run for r in runs)
    assert a is not None and b is not None
    assert torch.equal(a.pred_clean, b.pred_clean) and torch.equal(a.robust[0.05], b.robust[0.05])
    assert torch.equal(a.x_adv[0.05], b.x_adv[0.05])
    ra, rb = (r.result.robustness for r in runs)
    assert ra is not None and rb is not None and ra.flags == rb.flags
    assert (ra.clean_accuracy, ra.robust_accuracy) == (rb.clean_accuracy, rb.robust_accuracy)
    pa, pb = ([(m.attack, m.auc, m.tpr_at_fpr) for m in r.result.privacy.attacks] for r in runs)
    assert pa == pb
