"""The ``quick`` preset's strength, seeded, on a trained model (issue 16): its cross-entropy restarts on the samples
closest to breaking leave no more standing than ART's PGD-20 recipe (modelsec's PGD with the same settings: 20
steps of 2.5 * eps / 20 from a random start, cross-entropy), nor than the margin-only restarts it replaced, on the
committed golden digits MLP for several seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modelsec.attacks.evasion import EVASION_ATTACKS
from modelsec.audits.presets import PRESETS, AttackSpec, build_attacks
from modelsec.audits.robustness import evaluate_robustness
from modelsec.core.seeding import generator
from modelsec.data import load_splits
from modelsec.models.base import Classifier
from modelsec.models.zoo import build_architecture

MODEL = Path(__file__).parent / "data" / "golden-digits-mlp.safetensors"
SAMPLES, EPS = 200, 0.1


@pytest.fixture(scope="module")
def problem() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    splits = load_splits("digits", seed=0)
    net = build_architecture("mlp", splits.input_shape, 10)
    net.load_state_dict(load_file(str(MODEL)))
    clf = Classifier(net.eval(), input_shape=splits.input_shape, num_classes=10, bounds=splits.bounds)
    x = torch.from_numpy(splits.nonmembers.x[:SAMPLES])
    y = torch.from_numpy(splits.nonmembers.y[:SAMPLES])
    return clf, x, y


def robust(clf: Classifier, x: torch.Tensor, y: torch.Tensor, specs: list[AttackSpec], seed: int) -> int:
    attacks, skipped = build_attacks(specs, clf, "linf")
    assert not skipped
    run = evaluate_robustness(clf, x, y, attacks=attacks, eps=[EPS], generator=generator(seed))
    return int(run.robust[EPS].sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quick_leaves_no_more_than_pgd20_or_margin_restarts(
    problem: tuple[Classifier, torch.Tensor, torch.Tensor], seed: int
) -> None:
    clf, x, y = problem
    quick = list(PRESETS["quick"])
    assert quick[0].params["restart_loss"] == "ce"
    margin_restarts = [AttackSpec("apgd", {**quick[0].params, "restart_loss": None}), *quick[1:]]
    pgd20 = [AttackSpec("pgd", {"steps": 20, "loss": "ce"})]
    assert EVASION_ATTACKS.get("pgd")(steps=20).params()["random_start"] is True
    ours = robust(clf, x, y, quick, seed)
    assert 0 < ours < SAMPLES  # a model in the middle range, where a weaker attack shows
    assert ours <= robust(clf, x, y, pgd20, seed)
    assert ours <= robust(clf, x, y, margin_restarts, seed)
