"""A realistic :class:`AuditResult` for the report tests, built without running any model.

The numbers are those of a small CNN on Fashion-MNIST: 91% clean accuracy, FGSM and PGD at two
L-inf budgets (the "quick" preset, with Square skipped), a DeepFool minimum-norm summary, two sanity
flags (one resolved by a remedy, one not), and two membership attacks whose ROCs are binormal, sampled at about
200 points: loss-threshold (AUC about 0.61) and LiRA (AUC about 0.76, 8 reference models), with the five members
LiRA exposes most and the compute it used.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import beta, norm

from modelsec.results.audit import (
    SCHEMA_VERSION,
    AttackRobustness,
    AuditResult,
    DataInfo,
    ExposedRecord,
    Interval,
    MembershipAttackResult,
    MinNormStats,
    ModelInfo,
    PrivacyResult,
    RobustnessResult,
    SanityFlag,
    SkippedAttack,
    Verdict,
    eps_key,
)
from modelsec.stats.metrics import epsilon_lower_bound

N_EVAL = 1000
N_MEMBERS = 5000
N_NONMEMBERS = 5000
EPS = (0.03, 0.1)
# Correct predictions out of N_EVAL: per attack and eps, then the per-sample worst case.
CORRECT = {"fgsm": (483, 62), "pgd": (351, 4)}
WORST = (342, 2)
CLEAN = 912
SHIFT = 0.4  # binormal ROC: member scores ~ N(SHIFT, 1), non-member scores ~ N(0, 1)
LIRA_SHIFT = 1.0
FPRS = ("0.001", "0.01", "0.1")
# The members LiRA ranks highest: (member index, label, score).
EXPOSED = ((417, 3, 9.82), (1203, 8, 9.41), (56, 0, 8.77), (2981, 6, 8.75), (4410, 3, 8.02))
COMPUTE = {"reference_models": 8, "reference_training_seconds": 312.5, "forward_passes": 90_000}
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def clopper_pearson(k: int, n: int, level: float = 0.95) -> Interval:
    a = (1.0 - level) / 2.0
    low = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - a, k + 1, n - k))
    return Interval(low, high, level, "clopper-pearson")


def _robustness() -> RobustnessResult:
    results = []
    for attack, correct in CORRECT.items():
        for eps, k in zip(EPS, correct, strict=True):
            ci = clopper_pearson(k, N_EVAL)
            params: dict[str, Any] = {} if attack == "fgsm" else {"steps": 40, "step_size": eps / 4, "restarts": 1}
            results.append(
                AttackRobustness(
                    attack=attack,
                    norm="linf",
                    eps=eps,
                    robust_accuracy=k / N_EVAL,
                    ci_low=ci.low,
                    ci_high=ci.high,
                    n=N_EVAL,
                    seconds=0.8 if attack == "fgsm" else 21.4,
                    params=params,
                )
            )
    return RobustnessResult(
        n=N_EVAL,
        clean_accuracy=CLEAN / N_EVAL,
        clean_ci=clopper_pearson(CLEAN, N_EVAL),
        results=results,
        robust_accuracy={eps_key(e): k / N_EVAL for e, k in zip(EPS, WORST, strict=True)},
        robust_ci={eps_key(e): clopper_pearson(k, N_EVAL) for e, k in zip(EPS, WORST, strict=True)},
        flags=[
            SanityFlag(
                check="more-iterations",
                message="PGD with 4x the steps lowered robust accuracy at eps=0.03 "
                "from 35.1% to 33.0%: the attack may not have converged.",
                severity="warning",
                remedy="Re-ran PGD with 160 steps; the worst case includes it.",
                resolved=True,
            ),
            SanityFlag(
                check="nonzero-gradients",
                message="31 of 912 correctly classified samples have zero input gradients.",
                severity="warning",
                remedy="Ran Square (black-box) on those samples; it broke 4 of 31.",
                resolved=False,
            ),
        ],
        checks=[
            "logits-not-probabilities",
            "deterministic-forward",
            "nonzero-gradients",
            "black-box-vs-white-box",
            "large-eps-success",
            "more-iterations",
        ],
        adversarial_file="adversarial.npz",
        preset="quick",
        skipped=[SkippedAttack("square", "needs class scores; the model only returns labels")],
        min_norm=[
            MinNormStats(
                attack="deepfool",
                norm="linf",
                n=CLEAN,
                found=897,
                median=0.0213,
                mean=0.0248,
                quantiles={"0.1": 0.0071, "0.25": 0.0132, "0.5": 0.0213, "0.75": 0.0331, "0.9": 0.0472},
            )
        ],
    )


def _membership(
    attack: str = "loss-threshold",
    shift: float = SHIFT,
    *,
    auc_halfwidth: float = 0.011,
    seconds: float = 0.05,
    params: dict[str, Any] | None = None,
) -> MembershipAttackResult:
    # FPRs from 0 and 1/n up to 1 on a log grid (~200 points), TPRs from the binormal model.
    fpr = np.concatenate([[0.0], np.geomspace(1.0 / N_NONMEMBERS, 1.0, 199)])
    tpr = np.where(fpr > 0, norm.sf(norm.isf(np.clip(fpr, 1e-12, 1.0)) - shift), 0.0)
    tpr[-1] = 1.0
    tprs = {k: float(norm.sf(norm.isf(float(k)) - shift)) for k in FPRS}
    tpr_ci = {k: clopper_pearson(round(v * N_MEMBERS), N_MEMBERS) for k, v in tprs.items()}
    auc = float(norm.cdf(shift / np.sqrt(2.0)))
    adv = float(2 * norm.cdf(shift / 2) - 1)
    # The epsilon bound of seeded scores from the same binormal model.
    rng = np.random.default_rng(0)
    eps = epsilon_lower_bound(rng.normal(shift, 1.0, N_MEMBERS), rng.normal(0.0, 1.0, N_NONMEMBERS))
    return MembershipAttackResult(
        attack=attack,
        auc=auc,
        auc_ci=Interval(auc - auc_halfwidth, auc + auc_halfwidth, 0.95, "bootstrap"),
        tpr_at_fpr=tprs,
        tpr_ci=tpr_ci,
        advantage=adv,
        n_members=N_MEMBERS,
        n_nonmembers=N_NONMEMBERS,
        roc_fpr=[float(x) for x in fpr],
        roc_tpr=[float(x) for x in tpr],
        seconds=seconds,
        params={"signal": "loss"} if params is None else params,
        balanced_accuracy=(1.0 + adv) / 2.0,
        epsilon_lower_bound=eps.value,
        epsilon_evidence=eps.evidence,
    )


def _exposed() -> list[ExposedRecord]:
    return [
        ExposedRecord(rank=i + 1, member_index=idx, label=y, class_name=CLASS_NAMES[y], score=score, attack="lira")
        for i, (idx, y, score) in enumerate(EXPOSED)
    ]


def make_audit_result(**overrides: Any) -> AuditResult:
    """A complete, realistic :class:`AuditResult`; keyword arguments replace top-level fields."""
    result = AuditResult(
        schema_version=SCHEMA_VERSION,
        run_id="20250114-093012-7f3a",
        created_at="2025-01-14T09:30:12+00:00",
        model=ModelInfo(
            path="models/fashion_cnn.safetensors",
            sha256="9f2c4e1ab07d5c3e8a61f0b2d4c97e35a18b6f0c2d7e94a1b3c5d6e7f8091a2b",
            arch="small-cnn",
            format="safetensors",
            num_classes=10,
            input_shape=[1, 28, 28],
            parameters=421_642,
        ),
        data=DataInfo(
            name="fashion-mnist",
            split_seed=0,
            n_members=N_MEMBERS,
            n_nonmembers=N_NONMEMBERS,
            n_population=20_000,
            bounds=[0.0, 1.0],
            sha256={
                "members": "1b4f0e9c2a7d3e5f6a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f",
                "nonmembers": "2c5a1f0d3b8e4f6a7b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a",
                "population": "3d6b2a1e4c9f5a7b8c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b",
            },
            overlaps={"members/nonmembers": 0, "members/population": 0, "nonmembers/population": 0},
            class_names=list(CLASS_NAMES),
        ),
        robustness=_robustness(),
        privacy=PrivacyResult(
            attacks=[
                _membership(),
                _membership(
                    "lira",
                    LIRA_SHIFT,
                    auc_halfwidth=0.009,
                    seconds=318.2,
                    params={"reference_models": 8, "online": False},
                ),
            ],
            notes=[
                "The loss-threshold attack needs no reference models; stronger attacks (LiRA) may find more members."
            ],
            exposed_records=_exposed(),
            compute=dict(COMPUTE),
        ),
        verdict=Verdict(
            level="warning",
            headline="Not robust at ε = 0.03: worst-case robust accuracy 34.2% (clean 91.2%)",
            details=[
                "Worst-case robust accuracy falls to 0.2% at ε = 0.1.",
                "Sanity check 'nonzero-gradients' fired and is unresolved: robustness likely overestimated.",
                "Membership leakage is low: TPR 0.4% at 0.1% FPR (AUC 0.611).",
            ],
        ),
        settings={
            "preset": "quick",
            "attacks": ["fgsm", "pgd"],
            "norm": "linf",
            "eps": list(EPS),
            "samples": N_EVAL,
            "membership_attacks": ["loss-threshold", "lira"],
            "device": "cpu",
        },
        seed=0,
        versions={"modelsec": "0.1.0", "python": "3.11.2", "torch": "2.6.0", "numpy": "2.2.1"},
        timings={"load": 0.4, "clean": 0.3, "robustness": 44.5, "privacy": 3.2, "total": 48.6},
    )
    return dataclasses.replace(result, **overrides)


# -- adversarial.npz -------------------------------------------------------------------------

NPZ_EPS = (0.03, 0.1)
# Per epsilon index: the samples an attack broke among those classified correctly (sample 2 is misclassified).
NPZ_BROKEN = ((5, 9), (1, 3, 5, 7, 9, 11))
NPZ_MISCLASSIFIED = 2


def write_adversarial_npz(path: Path, *, n: int = 12, channels: int = 1, size: int = 28, flat: bool = False) -> Path:
    """An ``adversarial.npz`` in the layout of ``RobustnessRun.npz_arrays``: ``n`` synthetic images (a bright disc
    whose radius depends on the class) with labels ``i % 10``; sample 2 misclassified, the samples of
    :data:`NPZ_BROKEN` (those below ``n``) broken at each epsilon of :data:`NPZ_EPS`.
    ``flat``: inputs of shape ``(n, C*H*W)``."""
    rng = np.random.default_rng(0)
    y = np.arange(n, dtype=np.int64) % 10
    pred_clean = y.copy()
    pred_clean[NPZ_MISCLASSIFIED] = (y[NPZ_MISCLASSIFIED] + 4) % 10
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2)
    x = np.empty((n, channels, size, size), dtype=np.float32)
    for i in range(n):
        disc = np.clip(1.2 - r / (3 + 0.9 * y[i]), 0.0, 1.0)
        for c in range(channels):
            x[i, c] = disc * (0.55 + 0.15 * c) + 0.05 * rng.random((size, size))
    arrays: dict[str, np.ndarray] = {"y": y, "pred_clean": pred_clean, "eps": np.array(NPZ_EPS)}
    for i, (eps, broken) in enumerate(zip(NPZ_EPS, NPZ_BROKEN, strict=True)):
        robust = pred_clean == y
        robust[[b for b in broken if b < n]] = False
        pred_adv = np.where(robust, y, (y + 1) % 10)
        pred_adv[NPZ_MISCLASSIFIED] = pred_clean[NPZ_MISCLASSIFIED]
        x_adv = np.clip(x + eps * np.sign(rng.standard_normal(x.shape)), 0.0, 1.0).astype(np.float32)
        arrays[f"x_adv_{i}"] = x_adv.reshape(n, -1) if flat else x_adv
        arrays[f"robust_{i}"] = robust
        arrays[f"pred_adv_{i}"] = pred_adv
    arrays["x"] = x.reshape(n, -1) if flat else x
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return path
