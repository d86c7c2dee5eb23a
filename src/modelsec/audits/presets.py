"""Robustness presets: which attacks an audit runs, by name and parameters.

- ``quick``: APGD (a step-size-free PGD, Croce & Hein 2020) on the margin loss (Carlini & Wagner 2017), 12 steps,
  then restarts that ascend cross-entropy on the samples still standing that came closest to breaking, as many
  sample-restarts as a quarter of the first run pays for, then FGSM: a fast first look. The margin first, because
  it is the stronger loss on adversarially trained and distilled models, where few samples break and the restarts
  reach only the near misses; cross-entropy in the restarts, because it is the stronger loss on undefended models,
  where few samples survive and the restarts reach all of them (benchmark zoo, 449 digits / 1000 Fashion-MNIST
  test images, L-inf eps 0.1: margin alone left 17.6% of the Fashion-MNIST MLP where cross-entropy left 14.3%,
  and 74.4% of the TRADES digits model where cross-entropy left 77.3%; benchmarks/zoo_quick_vs_art.py compares
  the preset with ART's PGD-20 on every zoo model).
- ``standard``: an AutoAttack-like chain (Croce & Hein 2020): APGD-CE, APGD-DLR (untargeted, as in ART's AutoAttack
  list), targeted APGD-DLR against the 4 most likely wrong classes from 2 random starts, DeepFool
  (minimum norm) and the Square attack (score-based black-box, 5,000 queries); FGSM is added as the single-step
  reference of the sanity checks (last, so that what it breaks is what the iterative attacks missed). Each attack
  runs only on the samples every earlier one failed to break (per-sample worst case). Against ART's AutoAttack on
  1000 / 200 Fashion-MNIST test images (standard / PGD-trained CNN), the untargeted DLR stage and APGD-T's second
  start each broke one borderline image the rest of the chain missed (benchmarks/robustness_vs_art.py), where ART's
  AutoAttack (5 restarts per APGD) broke them; the DLR stages are skipped on models with fewer than 3 classes.
  APGD-T's 4 targets are chosen by measurement (AutoAttack tries 9): over the 19 models of the benchmark zoo
  (2,300 images reaching APGD-T, benchmarks/zoo_cost.py), every image APGD-T broke broke at one of the 3 most
  likely wrong classes (8, 6 and 4 images at ranks 1, 2 and 3; none at ranks 4-9), so 3 targets lose no break and
  spend a third of 9's passes; the fourth is a margin, since rank 3 still broke images (0.45x of 9's passes).
  ``thorough`` keeps 9.
  Square runs as a probe when the pre-attack checks find nothing: first on a seeded draw of the survivors (300 / N
  of them for N records, all of them up to 300 records), and on the rest only if the draw gives a break. A draw
  without a break bounds, with 95% confidence, what Square would break on the rest at 1% of the records (the
  black-box-beats-white-box threshold), and the report says so (:func:`modelsec.audits.robustness.probe_size`). On
  the bundled CNN, Square's 5,000 queries on the 390 images the gradient chain left at eps 0.03 were 489 of the
  audit's 740 s of robustness and broke none. ``thorough`` runs Square on every survivor.
- ``thorough``: more restarts and iterations, APGD with the DLR loss, Carlini-Wagner (L2), both black-box attacks
  (Square with 10,000 queries and HopSkipJump).

The sanity checks' remedies may add attacks and reorder the chain: when most samples have no input gradient at all,
the black-box attacks run first and the gradient attacks only on what they leave (order by evidence,
:mod:`modelsec.audits.sanity`).

Attacks that need more access than the model offers (gradients, scores) are skipped and the report says why. A
model that returns labels only also gets HopSkipJump; one that returns scores only (an output-hardened model, a
scikit-learn estimator) gets Square when nothing in the plan can run on it, with the preset's budget
(:data:`FALLBACK_PARAMS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelsec.attacks.base import EvasionAttack, ThreatModel
from modelsec.attacks.evasion import EVASION_ATTACKS
from modelsec.core.errors import ConfigError
from modelsec.models.base import Capability, Classifier
from modelsec.results.audit import SkippedAttack


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a preset: a registered name and its hyper-parameters."""

    attack: str
    params: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, tuple[AttackSpec, ...]] = {
    "quick": (
        AttackSpec(
            "apgd", {"steps": 12, "loss": "margin", "restart_loss": "ce", "restarts": 10, "restart_budget": 0.25}
        ),
        AttackSpec("fgsm"),
    ),
    "standard": (
        AttackSpec("apgd", {"steps": 100}),
        AttackSpec("apgd", {"steps": 100, "loss": "dlr"}),
        AttackSpec("apgd-t", {"steps": 100, "n_targets": 4, "restarts": 2}),
        AttackSpec("deepfool"),
        AttackSpec("square", {"max_queries": 5000, "probe": True}),
        AttackSpec("fgsm"),
    ),
    "thorough": (
        AttackSpec("pgd", {"steps": 100, "restarts": 5}),
        AttackSpec("apgd", {"steps": 200, "restarts": 3}),
        AttackSpec("apgd", {"steps": 200, "restarts": 3, "loss": "dlr"}),
        AttackSpec("apgd-t", {"steps": 200, "n_targets": 9}),
        AttackSpec("deepfool"),
        AttackSpec("cw-l2"),
        AttackSpec("square", {"max_queries": 10000, "restarts": 2}),
        AttackSpec("hopskipjump"),
        AttackSpec("fgsm"),
    ),
}


FALLBACK_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {"square": {"max_queries": 1000}},
}
"""The parameters, by preset and then attack, of the black-box attack that :func:`build_attacks` adds for a model
that none of the preset's attacks can run on; otherwise the attack's defaults. ``quick`` stays a quick look:
Square with 1,000 queries instead of 5,000 (on a scikit-learn LogisticRegression on breast-cancer, 50 test records,
L-inf eps 0.03 and 0.1: the same robust accuracy as 5,000 queries, in a fifth of the time)."""


def preset_specs(preset: str) -> tuple[AttackSpec, ...]:
    try:
        return PRESETS[preset]
    except KeyError:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}") from None


def build_attacks(
    specs: tuple[AttackSpec, ...] | list[AttackSpec], classifier: Classifier, norm: str, *, preset: str | None = None
) -> tuple[list[EvasionAttack], list[SkippedAttack]]:
    """Instantiate the specs that this classifier and norm allow; the others become :class:`SkippedAttack`.
    A model that returns only labels also gets HopSkipJump, the decision-based attack, if the plan lacks it; one
    that returns scores only gets Square when nothing in the plan can run on it (with ``preset``'s
    :data:`FALLBACK_PARAMS` when the specs are that preset's)."""
    attacks: list[EvasionAttack] = []
    skipped: list[SkippedAttack] = []
    specs = list(specs)
    fallback = FALLBACK_PARAMS.get(preset or "", {})
    if classifier.capability < Capability.SCORES and not any(s.attack == "hopskipjump" for s in specs):
        # a labels-only model still gets a decision-based attack
        specs.append(AttackSpec("hopskipjump", dict(fallback.get("hopskipjump", {}))))
    elif classifier.capability == Capability.SCORES and all(
        EVASION_ATTACKS.get(s.attack).requires > Capability.SCORES for s in specs
    ):
        # a scores-only model (hardened outputs, an estimator) still gets a score-based attack
        specs.append(AttackSpec("square", dict(fallback.get("square", {}))))
    threat = ThreatModel(norm)  # whether an attack can run does not depend on eps
    for spec in specs:
        cls = EVASION_ATTACKS.get(spec.attack)
        attack = cls(**spec.params)
        reason = attack.unsupported_reason(classifier, threat)
        if reason is None:
            attacks.append(attack)
            continue
        # named by its label (apgd-dlr) where only its parameters are what the model does not allow
        blames_params = cls().unsupported_reason(classifier, threat) is None
        skipped.append(SkippedAttack(attack.label if blames_params else spec.attack, reason))
    return attacks, skipped
