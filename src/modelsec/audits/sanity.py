"""Sanity checks on a robustness evaluation: they run in every audit, are reported beside the numbers, trigger the
remedies the audit has, and change the verdict while unresolved.

After Carlini et al. 2019, "On Evaluating Adversarial Robustness", Athalye, Carlini & Wagner 2018, "Obfuscated
Gradients Give a False Sense of Security", and AutoAttack's runtime checks (Croce & Hein 2020).

Before the attacks (symptoms of the model; each but batch-dependence has a remedy applied to the attack plan):

| check | fires when | remedy |
| --- | --- | --- |
| probability-outputs | outputs lie in [0, 1] and sum to 1 | margin / DLR losses (APGD-DLR added) |
| randomness | two forward passes on the same inputs differ | EoT gradients; predictions: majority of 10 passes |
| batch-dependence | records alone, in other batches or another order get other logits | none (error, unresolved) |
| zero-gradients | > 1% of samples have an all-zero input gradient | black-box attacks (Square, HopSkipJump) added; |
| | | first in the chain when >= half the samples have no margin gradient either |

After the attacks (symptoms of the evaluation; the worst case already includes every attack, but each means the
gradient attacks were unreliable, so they stay unresolved):

| check | fires when |
| --- | --- |
| single-step-beats-iterative | FGSM breaks > 1% of samples that the iterative attacks did not |
| black-box-beats-white-box | a black-box attack breaks > 1% of samples that every white-box attack missed |
| not-converged | the strongest iterative attack with twice the steps breaks > 1% more samples |
| large-eps-not-broken | at eps = half the input range, > 5% of samples survive the strongest attacks |

Order by evidence (issue 16): the zero-gradients check measures, on up to 500 samples, the share whose cross-entropy
input gradient is all zero and, of those, the share whose logit margin's gradient is all zero too: *masked* samples,
that no gradient attack's loss moves (quantisation or a step in ``forward``), as opposed to a softmax saturated in
float32 (defensive distillation), where the margin and DLR losses of the gradient chain still work. When at least
:data:`BLACK_BOX_FIRST_SHARE` (half) of the samples are masked, the black-box attacks run first in the chain
(Square, then HopSkipJump on what Square left), on every sample, and the gradient attacks then run only on what they
leave: on such a model the gradient chain spends most of its passes on gradients that are zero (issue 16: 823 of
1035 s on an input-quantised CNN, before Square broke every survivor in 39 s). Below half, and on a saturated
softmax, the gradient attacks break the samples they can at their usual cost and the black-box attacks run last, on
what is left (which includes the masked samples): black-box first would spend queries on samples that gradients
break in a few steps (Square first on a distilled digits MLP, where APGD-DLR breaks almost every sample: 1.04x and
1.26x the chain's time for two seeds, 80 samples), while the gradient work wasted on masked samples is bounded by
their share. The worst case is
over every attack in either order.

In a chain an attack's breaks exclude only the attacks that ran before it, so when the black-box attacks ran first
the chain alone cannot say whether they broke samples every white-box attack missed. The black-box-beats-white-box
check then asks it directly: the plan's white-box attacks run (as a chain) on a seeded probe of up to
:data:`PROBE_SAMPLES` of the samples the black-box attacks broke, and the check fires when the share they miss,
scaled to every sample the black-box attacks broke, exceeds the same 1% of samples. The flag keeps its meaning
(black-box broke > 1% of samples that no white-box attack breaks: gradients are masked or misleading), measured on
a probe instead of on every sample, at a bounded cost: the white-box chain on 10 samples (on the quantised
Fashion-MNIST CNN of benchmarks/evidence_order.py, about what the old order's gradient chain spent on 10 samples).

On a model where no pre-attack check fires, the plan's black-box attacks may run as probes (``standard``'s Square):
a seeded draw of the samples the gradient chain left, sized so that a draw without a break bounds, with 95%
confidence, what the attack would break on the rest at 1% of the samples, the black-box-beats-white-box threshold;
the rest only where the draw gave a break (:func:`modelsec.audits.robustness.probe_size`; the report states the
bound). When any check fires (a remedy, or batch-dependence), or the model declares BPDA preprocessing, they run on
every sample (:attr:`Remedies.black_box_probe`).

A pre-attack flag counts as resolved when its remedy ran and the large-epsilon check then passes; batch-dependence
has no remedy and stays unresolved: a model whose logits for a record depend on the records batched with it (batch
statistics baked in, e.g. BatchNorm exported in train mode) gives numbers that depend on how the audit happened to
batch its queries, in either direction (``SanityFlag.consequence``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from modelsec.attacks.base import EvasionAttack, ThreatModel
from modelsec.attacks.evasion import EVASION_ATTACKS
from modelsec.audits.presets import FALLBACK_PARAMS, AttackSpec
from modelsec.audits.robustness import RobustnessRun
from modelsec.core.seeding import generator
from modelsec.models.base import Capability, Classifier
from modelsec.results.audit import SanityFlag

EOT_SAMPLES = 10
VOTES = 10  # forward passes behind each prediction of a randomised model (Classifier.votes)
# batch-dependence: logits of the same record may differ by float32 round-off (batched GEMMs sum in another order:
# at most 5e-7 of the row's largest logit on the bundled CNN and a digits MLP, batch sizes 1 to 1000); more than
# this is not round-off. CUDA may run convolutions and matmuls in TF32 (a 10-bit mantissa), with algorithms chosen
# per batch size: there the tolerance is ten times wider.
BATCH_RTOL = 1e-3
BATCH_RTOL_TF32 = 1e-2
BATCH_ATOL = 1e-5
BATCH_ALONE = 16  # records also evaluated one at a time
# A randomised model is compared on its mean logits over VOTES passes: the check fires when the mean square of
# (difference beyond the tolerance) / (its standard error) exceeds this. Without batch dependence it is about 1,
# but a model that draws one noise for a whole batch moves every row of it together, so the mean barely averages.
BATCH_NOISE_LIMIT = 25.0
BLACK_BOX = ("square", "hopskipjump")
ZERO_GRADIENT_SAMPLES = 500  # samples whose input gradient the zero-gradients check computes
# black-box attacks first in the chain when at least this share of samples has an all-zero cross-entropy gradient
BLACK_BOX_FIRST_SHARE = 0.5
# black-box-beats-white-box when the black-box attacks ran first: the white-box attacks re-run on this many of the
# samples the black-box attacks broke
PROBE_SAMPLES = 10
# HopSkipJump needs ~17k queries a sample at its defaults; as a remedy it runs after Square, on what is left.
REMEDY_PARAMS: dict[str, dict[str, Any]] = {"hopskipjump": {"iterations": 20, "max_num_evals": 500}}
SINGLE_STEP = ("fgsm",)


@dataclass
class Remedies:
    """What the pre-attack checks ask of the attack plan."""

    eot_samples: int = 1
    votes: int = 1
    add_margin_loss: bool = False
    add_black_box: bool = False
    black_box_first: bool = False
    notes: list[str] = field(default_factory=list)
    # the pre-attack checks ran and none fired: the plan's black-box attacks may run as probes (robustness.probe_size)
    black_box_probe: bool = False


# -- checks before the attacks --------------------------------------------------------------------------------


def check_probability_outputs(classifier: Classifier, x: torch.Tensor) -> SanityFlag | None:
    """Outputs look like probabilities (in [0, 1], rows summing to 1) rather than logits: cross-entropy on them
    saturates and gradient attacks weaken."""
    out = classifier.predict_logits(x)
    in_unit = bool(((out >= 0) & (out <= 1)).all())
    if in_unit and bool(torch.allclose(out.sum(1), torch.ones(len(out)), atol=1e-3)):
        return SanityFlag(
            "probability-outputs",
            "the model outputs probabilities, not logits; cross-entropy gradients through a softmax saturate",
            remedy="attacks with the margin-based DLR loss were added",
        )
    return None


def check_randomness(classifier: Classifier, x: torch.Tensor) -> SanityFlag | None:
    """Two forward passes on the same inputs disagree: a randomised model needs EoT (Athalye et al. 2018)."""
    a, b = classifier.predict_logits(x), classifier.predict_logits(x)
    if not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
        return SanityFlag(
            "randomness",
            "repeated forward passes give different outputs: the model is randomised",
            remedy=f"expectation over transformation: gradients averaged over {EOT_SAMPLES} passes; every "
            f"prediction (clean and adversarial) a majority vote over {VOTES} passes",
        )
    return None


def _arrangements(classifier: Classifier, x: torch.Tensor, passes: int) -> dict[str, tuple[torch.Tensor, ...]]:
    """The logits of ``x``, ``passes`` times each: in the audit's batches (first), in batches of another size in a
    fixed other order, and its first records one at a time; every tensor in the order of ``x``."""
    n = x.shape[0]
    other = max(1, min(classifier.batch_size, n) // 3)
    perm = torch.randperm(n, generator=generator(0))

    def shuffled() -> torch.Tensor:
        out = torch.empty(n, classifier.num_classes)
        out[perm] = classifier.predict_logits(x[perm], batch_size=other)
        return out

    return {
        f"batches of {min(classifier.batch_size, n)}": tuple(classifier.predict_logits(x) for _ in range(passes)),
        f"in batches of {other} in another order": tuple(shuffled() for _ in range(passes)),
        "alone": tuple(classifier.predict_logits(x[:BATCH_ALONE], batch_size=1) for _ in range(passes)),
    }


def _batch_rtol(classifier: Classifier) -> float:
    tf32 = torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
    return BATCH_RTOL_TF32 if classifier.device.type == "cuda" and tf32 else BATCH_RTOL


def _batch_discrepancy(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...], rtol: float) -> tuple[float, float]:
    """(largest difference of the mean logits, mean squared standardised excess) between two arrangements of the
    same records (their common first rows): the excess is the difference beyond ``rtol`` of the row's largest
    logit plus ``BATCH_ATOL``, in standard errors over the passes (infinite where the passes agree)."""
    rows = min(a[0].shape[0], b[0].shape[0])
    sa = torch.stack([t[:rows] for t in a]).double()
    sb = torch.stack([t[:rows] for t in b]).double()
    ma, mb = sa.mean(0), sb.mean(0)
    diff = torch.where(ma.isnan() & mb.isnan(), 0.0, (ma - mb).abs().nan_to_num(nan=torch.inf))
    scale = torch.maximum(ma.abs(), mb.abs()).nan_to_num(nan=0.0, posinf=0.0).amax(dim=1, keepdim=True)
    excess = (diff - (BATCH_ATOL + rtol * scale)).clamp(min=0.0)
    passes = sa.shape[0]
    se = ((sa.var(0) + sb.var(0)) / passes).sqrt().nan_to_num(nan=0.0) if passes > 1 else torch.zeros_like(diff)
    z2 = torch.where(excess > 0, (excess / se) ** 2, 0.0)  # an excess where the passes agree: infinite
    return float(diff.max()), float(z2.mean())


def check_batch_dependence(classifier: Classifier, x: torch.Tensor, passes: int = 1) -> SanityFlag | None:
    """The same records alone, in batches of another size and in another order must get the same logits: a model
    whose output for a record depends on its batch-mates (batch statistics, e.g. BatchNorm in train mode baked into
    a ``torch.export`` program) makes every number of the audit depend on how the audit batched its queries.

    A randomised model (``passes`` > 1) is compared on its mean logits over ``passes`` passes per arrangement, with
    the differences measured in standard errors, so that its randomness alone does not fire the check."""
    arrangements = _arrangements(classifier, x, passes)
    base_name, base = next(iter(arrangements.items()))
    seen: list[str] = []
    for name, logits in list(arrangements.items())[1:]:
        largest, excess = _batch_discrepancy(logits, base, _batch_rtol(classifier))
        if excess > BATCH_NOISE_LIMIT:
            seen.append(f"by up to {largest:.3g} {name}")
    if not seen:
        return None
    mean = f" (means over {passes} passes)" if passes > 1 else ""
    return SanityFlag(
        "batch-dependence",
        f"the model's logits for a record depend on the other records in its batch: compared with {base_name}, "
        f"they differ{mean} {' and '.join(seen)}. Batch statistics are baked into the model (e.g. BatchNorm "
        "exported or saved in train mode), so every number of this audit depends on how its queries were batched "
        "and is not trustworthy; put the model in eval mode (model.eval()) before exporting or saving it",
        severity="error",
    )


@dataclass(frozen=True)
class GradientEvidence:
    """What one input gradient per sample says about the gradient attacks' prospects (the zero-gradients check).

    ``zero``: the share of samples whose cross-entropy input gradient is all zero; ``masked``: the share whose
    logit margin's (``z_y - max_{j != y} z_j``) gradient is all zero too, so that no loss of the gradient attacks
    moves them (quantisation, a step in ``forward``). The difference is a softmax saturated in float32 (defensive
    distillation): the margin and DLR losses still have a gradient there."""

    samples: int
    zero: float
    masked: float

    @property
    def black_box_first(self) -> bool:
        """Whether the evidence orders the black-box attacks first (:data:`BLACK_BOX_FIRST_SHARE` masked)."""
        return self.masked >= BLACK_BOX_FIRST_SHARE


def gradient_evidence(classifier: Classifier, x: torch.Tensor, y: torch.Tensor) -> GradientEvidence | None:
    """The cross-entropy input gradients of the first :data:`ZERO_GRADIENT_SAMPLES` samples and, where they are all
    zero, the logit margin's (at most two forward and backward passes); ``None`` for a model without gradients."""
    if classifier.capability < Capability.GRADIENTS:
        return None
    xb, yb = x[:ZERO_GRADIENT_SAMPLES].to(classifier.device), y[:ZERO_GRADIENT_SAMPLES].to(classifier.device)
    zero = classifier.input_gradient(xb, yb).flatten(1).abs().amax(dim=1) == 0
    masked = zero.clone()
    if bool(zero.any()):
        xz = xb[zero].detach().clone().requires_grad_(True)
        logits = classifier.logits(xz)
        mine = torch.nn.functional.one_hot(yb[zero], logits.shape[1]).bool()
        margin = logits[mine] - logits.masked_fill(mine, -torch.inf).amax(dim=1)
        (grad,) = torch.autograd.grad(margin.sum(), xz)
        masked[zero] = grad.flatten(1).abs().amax(dim=1) == 0
    return GradientEvidence(int(zero.numel()), float(zero.float().mean()), float(masked.float().mean()))


def check_zero_gradients(
    classifier: Classifier, x: torch.Tensor, y: torch.Tensor, evidence: GradientEvidence | None = None
) -> SanityFlag | None:
    """More than 1% of samples have an all-zero input gradient: gradient masking, quantisation or saturation. The
    remedy says whether the black-box attacks run first (:attr:`GradientEvidence.black_box_first`)."""
    evidence = evidence or gradient_evidence(classifier, x, y)
    if evidence is None or evidence.zero <= 0.01:
        return None
    saturated = evidence.zero - evidence.masked
    detail = (
        f"; {evidence.masked:.1%} have no logit-margin gradient either (masked), {saturated:.1%} have one (a "
        "softmax saturated in float32: the margin and DLR losses still work there)"
    )
    where = (
        f"first in the chain (>= {BLACK_BOX_FIRST_SHARE:.0%} of samples masked), the gradient attacks on what they left"
        if evidence.black_box_first
        else f"after the gradient attacks (< {BLACK_BOX_FIRST_SHARE:.0%} of samples masked)"
    )
    return SanityFlag(
        "zero-gradients",
        f"{evidence.zero:.1%} of {evidence.samples} samples have an all-zero cross-entropy input gradient: gradients "
        f"are masked (e.g. quantisation in forward) or the loss saturates{detail}",
        remedy=f"black-box attacks (Square, HopSkipJump) were added, {where}",
    )


def pre_checks(classifier: Classifier, x: torch.Tensor, y: torch.Tensor) -> tuple[list[SanityFlag], Remedies]:
    """Run the model checks and derive the remedies."""
    remedies = Remedies()
    flags: list[SanityFlag] = []
    if (f := check_probability_outputs(classifier, x[:200])) is not None:
        flags.append(f)
        remedies.add_margin_loss = True
    if (f := check_randomness(classifier, x[:200])) is not None:
        flags.append(f)
        remedies.eot_samples = EOT_SAMPLES
        remedies.votes = VOTES
    if (f := check_batch_dependence(classifier, x[:200], passes=remedies.votes)) is not None:
        flags.append(f)
    evidence = gradient_evidence(classifier, x, y)
    if (f := check_zero_gradients(classifier, x, y, evidence)) is not None:
        flags.append(f)
        remedies.add_black_box = True
        if evidence is not None and evidence.black_box_first:
            remedies.black_box_first = True
            remedies.notes.append(
                f"black-box attacks first: {evidence.masked:.0%} of samples have no input gradient (cross-entropy "
                "and logit margin)"
            )
    if classifier.uses_bpda:
        remedies.notes.append("BPDA: gradients pass through the declared non-differentiable preprocessing")
    # a symptom of masked or unreliable gradients (or outputs that depend on the batch): black-box attacks in full
    remedies.black_box_probe = not flags and not classifier.uses_bpda
    return flags, remedies


def apply_remedies(specs: list[AttackSpec], remedies: Remedies, preset: str | None = None) -> list[AttackSpec]:
    """The attack plan with the remedies applied (EoT on every attack that supports it; added attacks). With
    ``remedies.black_box_first`` the black-box attacks (the plan's and the added ones, Square before HopSkipJump)
    move to the front, the others keep their order. When a pre-attack check fired, an attack the plan runs as a
    probe (``standard``'s Square) runs on every sample instead. An added black-box attack takes ``preset``'s budget
    when it has one (:data:`~modelsec.audits.presets.FALLBACK_PARAMS`: ``quick``'s Square makes 1,000 queries, not
    5,000)."""
    out = []
    for spec in specs:
        cls = EVASION_ATTACKS.get(spec.attack)
        has_eot = any(f.name == "eot_samples" for f in dataclasses.fields(cls))
        if remedies.eot_samples > 1 and has_eot:
            spec = AttackSpec(spec.attack, {**spec.params, "eot_samples": remedies.eot_samples})
        if not remedies.black_box_probe and spec.params.get("probe"):
            spec = AttackSpec(spec.attack, {**spec.params, "probe": False})
        out.append(spec)
    names = {s.attack for s in out}
    if remedies.add_margin_loss and not any(s.params.get("loss") in ("dlr", "margin") for s in out):
        params: dict[str, Any] = {"loss": "dlr"} if "apgd" in EVASION_ATTACKS else {"loss": "margin"}
        if remedies.eot_samples > 1:
            params["eot_samples"] = remedies.eot_samples
        out.append(AttackSpec("apgd" if "apgd" in EVASION_ATTACKS else "pgd", params))
    if remedies.add_black_box:
        budget = FALLBACK_PARAMS.get(preset or "", {})
        out += [
            AttackSpec(name, {**REMEDY_PARAMS.get(name, {}), **budget.get(name, {})})
            for name in BLACK_BOX
            if name not in names
        ]
    if remedies.black_box_first:
        black = sorted((s for s in out if s.attack in BLACK_BOX), key=lambda s: BLACK_BOX.index(s.attack))
        out = black + [s for s in out if s.attack not in BLACK_BOX]
    return out


# -- checks after the attacks ---------------------------------------------------------------------------------


def _broken_by(run: RobustnessRun, labels: list[str], eps: float) -> torch.Tensor:
    broken = torch.zeros(run.x.shape[0], dtype=torch.bool)
    for label in labels:
        if (label, eps) in run.per_attack_broken:
            broken |= run.per_attack_broken[(label, eps)]
    return broken


def _exclusive_breaks(
    run: RobustnessRun, group: list[str], others: list[str], check: str, what: str
) -> SanityFlag | None:
    if not group or not others:
        return None
    for eps in sorted({e for (_, e) in run.per_attack_broken}):
        extra = int((_broken_by(run, group, eps) & ~_broken_by(run, others, eps)).sum())
        if extra > max(1, 0.01 * run.x.shape[0]):
            return SanityFlag(
                check,
                f"{', '.join(group)} broke {extra} samples at eps={eps:g} that {', '.join(others)} did not: {what}",
                remedy="the worst case includes them, but the gradient attacks are unreliable on this model",
            )
    return None


def _probe_white_box(
    classifier: Classifier,
    run: RobustnessRun,
    by_label: dict[str, EvasionAttack],
    black: list[str],
    white: list[str],
    norm: str,
    generator: torch.Generator,
    samples: int = PROBE_SAMPLES,
) -> SanityFlag | None:
    """Black-box-beats-white-box for black-box attacks that ran before the white-box ones in a chain (the order by
    evidence): the white-box attacks, as a chain, on a seeded probe of up to ``samples`` of the samples the
    black-box attacks broke; fires when the share they miss, times the black-box breaks, exceeds 1% of samples."""
    if not black or not white:
        return None
    n = run.x.shape[0]
    for eps in sorted({e for (_, e) in run.per_attack_broken}):
        broken = _broken_by(run, black, eps).nonzero().flatten()
        if broken.numel() <= max(1, 0.01 * n):
            continue
        idx = broken[torch.randperm(broken.numel(), generator=generator)[:samples]]
        standing = torch.ones(idx.numel(), dtype=torch.bool)
        threat = ThreatModel(norm, eps)
        for label in white:
            todo = standing.nonzero().flatten()
            if todo.numel() == 0:
                break
            res = by_label[label](classifier, run.x[idx[todo]], run.y[idx[todo]], threat, generator=generator)
            standing[todo] = res.robust
        missed = int(standing.sum())
        estimate = missed / idx.numel() * broken.numel()
        if estimate > max(1, 0.01 * n):
            return SanityFlag(
                "black-box-beats-white-box",
                f"{', '.join(black)} (run first: the gradients looked masked) broke {broken.numel()} samples at "
                f"eps={eps:g}; on a seeded probe of {idx.numel()} of them, {', '.join(white)} missed {missed}: about "
                f"{estimate:.0f} samples that no white-box attack breaks, so gradients are masked or misleading",
                remedy="the worst case includes them, but the gradient attacks are unreliable on this model",
            )
    return None


def check_not_converged(
    classifier: Classifier,
    run: RobustnessRun,
    attacks: list[EvasionAttack],
    norm: str,
    generator: torch.Generator,
    samples: int = 200,
) -> SanityFlag | None:
    """Twice the steps of the strongest iterative gradient attack still breaks more samples: not converged."""
    iterative = [a for a in attacks if hasattr(a, "steps") and a.name not in SINGLE_STEP + BLACK_BOX and
                 a.requires == Capability.GRADIENTS and not a.minimum_norm]  # fmt: skip
    if not iterative:
        return None
    base = iterative[0]
    eps = max(run.robust)
    idx = run.robust[eps].nonzero().flatten()[:samples]
    if idx.numel() == 0:
        return None
    doubled = dataclasses.replace(base, steps=2 * base.steps)  # type: ignore[call-arg]
    res = doubled(classifier, run.x[idx], run.y[idx], ThreatModel(norm, eps), generator=generator)
    newly = int(res.success.sum())
    if newly > max(1, 0.01 * run.x.shape[0] * idx.numel() / max(int(run.robust[eps].sum()), 1)):
        return SanityFlag(
            "not-converged",
            f"{base.label} with {2 * base.steps} steps broke {newly} of {idx.numel()} samples that survived every "
            f"attack at eps={eps:g}: more iterations still help",
            remedy="use --preset thorough (more steps and restarts)",
        )
    return None


def check_large_eps(
    classifier: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    generator: torch.Generator,
    eot_samples: int = 1,
    samples: int = 100,
) -> SanityFlag | None:
    """At a huge epsilon (half the input range) robust accuracy must be near 0. The strongest cheap attacks run:
    PGD with the margin loss (white-box) and Square (scores); if > 5% of samples survive, attacks are misled."""
    lo, hi = classifier.bounds
    eps = 0.5 * (hi - lo)
    if norm == "l2":
        eps *= float(x[0].numel()) ** 0.5
    threat = ThreatModel(norm=norm, eps=eps)
    xs, ys = x[:samples], y[:samples]
    robust = torch.ones(xs.shape[0], dtype=torch.bool)
    plan: list[EvasionAttack] = []
    if classifier.capability >= Capability.GRADIENTS:
        plan.append(EVASION_ATTACKS.get("pgd")(steps=20, loss="margin", eot_samples=eot_samples))  # type: ignore[call-arg]
    if "square" in EVASION_ATTACKS and classifier.capability >= Capability.SCORES:
        plan.append(EVASION_ATTACKS.get("square")(max_queries=1000))  # type: ignore[call-arg]
    for attack in plan:
        todo = robust.nonzero().flatten()
        if todo.numel() == 0:
            break
        robust[todo] = attack(classifier, xs[todo], ys[todo], threat, generator=generator).robust
    rate = float(robust.float().mean()) if len(robust) else 0.0
    if rate > 0.05:
        return SanityFlag(
            "large-eps-not-broken",
            f"{rate:.1%} of samples survive at eps={eps:g} (half the input range), where any input can be turned "
            "into another class: the attacks are being misled",
            severity="error",
        )
    return None


def post_checks(
    classifier: Classifier,
    run: RobustnessRun,
    attacks: list[EvasionAttack],
    labels: list[str],
    norm: str,
    generator: torch.Generator,
    eot_samples: int = 1,
) -> list[SanityFlag]:
    """Checks of the evaluation itself, after the attacks. In a chain, black-box attacks that ran before the last
    white-box one (first, by evidence) are judged on a probe (:func:`_probe_white_box`), the others on the chain's
    own per-sample breaks."""
    by_kind: dict[str, list[str]] = {"single": [], "iterative": [], "black": []}
    for label, attack in zip(labels, attacks, strict=True):
        if attack.name in SINGLE_STEP:
            by_kind["single"].append(label)
        elif attack.requires < Capability.GRADIENTS:
            by_kind["black"].append(label)
        else:
            by_kind["iterative"].append(label)
    early_black: list[str] = []  # black-box attacks that ran before white-box ones in a chain
    if run.result.chain:  # in a chain, an attack's breaks exclude only the attacks that ran before it
        position = {label: i for i, label in enumerate(labels)}
        last_white = max((position[lb] for lb in by_kind["iterative"]), default=-1)
        by_kind["single"] = [lb for lb in by_kind["single"] if position[lb] > last_white]
        early_black = [lb for lb in by_kind["black"] if position[lb] < last_white]
        by_kind["black"] = [lb for lb in by_kind["black"] if position[lb] > last_white]
    white = [lb for lb, a in zip(labels, attacks, strict=True) if a.requires >= Capability.GRADIENTS]
    flags = [
        _exclusive_breaks(
            run, by_kind["single"], by_kind["iterative"], "single-step-beats-iterative",
            "the iterative attacks are not converging (gradient masking, or too few steps)",
        ),
        _exclusive_breaks(
            run, by_kind["black"], by_kind["iterative"] + by_kind["single"], "black-box-beats-white-box",
            "gradients are masked or misleading",
        ) or _probe_white_box(
            classifier, run, dict(zip(labels, attacks, strict=True)), early_black, white, norm, generator
        ),
        check_not_converged(classifier, run, attacks, norm, generator),
        check_large_eps(classifier, run.x, run.y, norm, generator, eot_samples=eot_samples),
    ]  # fmt: skip
    return [f for f in flags if f is not None]


def resolve(pre: list[SanityFlag], post: list[SanityFlag], attacks: list[EvasionAttack]) -> list[SanityFlag]:
    """Mark the pre-attack flags whose remedy ran (and left the large-eps check passing) as resolved."""
    large_eps_ok = not any(f.check == "large-eps-not-broken" for f in post)
    names = {a.name for a in attacks}
    ran = {
        "probability-outputs": any(
            getattr(a, "loss", None) in ("dlr", "margin") or a.name == "apgd-t" for a in attacks
        ),
        "randomness": any(getattr(a, "eot_samples", 1) > 1 for a in attacks),
        "zero-gradients": bool(names & set(BLACK_BOX)),
    }
    out = [dataclasses.replace(f, resolved=ran.get(f.check, False) and large_eps_ok) for f in pre]
    return out + post


CHECKS = (
    "probability-outputs",
    "randomness",
    "batch-dependence",
    "zero-gradients",
    "single-step-beats-iterative",
    "black-box-beats-white-box",
    "not-converged",
    "large-eps-not-broken",
)
