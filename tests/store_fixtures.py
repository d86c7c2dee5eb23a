"""A small, realistic AuditResult for the store and schema tests (every nested dataclass filled)."""

from __future__ import annotations

import dataclasses
from typing import Any

from modelsec.results import (
    SCHEMA_VERSION,
    AttackRobustness,
    AuditResult,
    DataInfo,
    Interval,
    MembershipAttackResult,
    ModelInfo,
    PrivacyResult,
    RobustnessResult,
    SanityFlag,
    Verdict,
    eps_key,
)


def make_result(**overrides: Any) -> AuditResult:
    """A small CNN audited on 1000 Fashion-MNIST images; ``overrides`` replace top-level fields."""
    eps_small, eps_large = 0.03, 0.1
    robustness = RobustnessResult(
        n=1000,
        clean_accuracy=0.912,
        clean_ci=Interval(low=0.8929, high=0.9286),
        results=[
            AttackRobustness(
                attack="pgd",
                norm="linf",
                eps=eps_small,
                robust_accuracy=0.634,
                ci_low=0.6033,
                ci_high=0.6639,
                n=1000,
                seconds=3.81,
                params={"steps": 40, "step_size": 0.0075, "random_start": True},
            ),
            AttackRobustness(
                attack="pgd",
                norm="linf",
                eps=eps_large,
                robust_accuracy=0.071,
                ci_low=0.0560,
                ci_high=0.0885,
                n=1000,
                seconds=3.92,
                params={"steps": 40, "step_size": 0.025, "random_start": True},
            ),
            AttackRobustness(
                attack="square",
                norm="linf",
                eps=eps_small,
                robust_accuracy=0.688,
                ci_low=0.6582,
                ci_high=0.7167,
                n=1000,
                seconds=21.4,
                params={"queries": 1000, "p_init": 0.8},
            ),
        ],
        robust_accuracy={eps_key(eps_small): 0.627, eps_key(eps_large): 0.069},
        robust_ci={
            eps_key(eps_small): Interval(low=0.5963, high=0.6570),
            eps_key(eps_large): Interval(low=0.0541, high=0.0866),
        },
        flags=[
            SanityFlag(
                check="black_box_beats_white_box",
                message="square beats pgd on 4 samples at eps=0.03",
                severity="warning",
            )
        ],
        checks=["logits_not_probabilities", "deterministic", "black_box_beats_white_box"],
        adversarial_file="adversarial.npz",
    )
    privacy = PrivacyResult(
        attacks=[
            MembershipAttackResult(
                attack="loss_threshold",
                auc=0.583,
                auc_ci=Interval(low=0.558, high=0.608, method="bootstrap"),
                tpr_at_fpr={"0.001": 0.004, "0.01": 0.021},
                tpr_ci={
                    "0.001": Interval(low=0.0011, high=0.0102),
                    "0.01": Interval(low=0.0130, high=0.0320),
                },
                advantage=0.142,
                n_members=1000,
                n_nonmembers=1000,
                roc_fpr=[0.0, 0.001, 0.01, 0.1, 0.5, 1.0],
                roc_tpr=[0.0, 0.004, 0.021, 0.153, 0.641, 1.0],
                seconds=0.02,
                params={},
            ),
            MembershipAttackResult(
                attack="lira",
                auc=0.641,
                auc_ci=Interval(low=0.617, high=0.665, method="bootstrap"),
                tpr_at_fpr={"0.001": 0.018, "0.01": 0.057},
                tpr_ci={
                    "0.001": Interval(low=0.0107, high=0.0284),
                    "0.01": Interval(low=0.0434, high=0.0733),
                },
                advantage=0.213,
                n_members=1000,
                n_nonmembers=1000,
                roc_fpr=[0.0, 0.001, 0.01, 0.1, 0.5, 1.0],
                roc_tpr=[0.0, 0.018, 0.057, 0.244, 0.733, 1.0],
                seconds=0.41,
                params={"reference_models": 8, "online": False},
            ),
        ],
        notes=["reference models trained on the population split"],
    )
    result = AuditResult(
        schema_version=SCHEMA_VERSION,
        run_id="20261125-224501-3fa2c1",
        created_at="2026-11-25T22:45:01+00:00",
        model=ModelInfo(
            path="/models/small_cnn.safetensors",
            sha256="9f2c" + "0" * 56 + "ab12",
            arch="small_cnn",
            format="safetensors",
            num_classes=10,
            input_shape=[1, 28, 28],
            parameters=421_642,
        ),
        data=DataInfo(
            name="fashion_mnist",
            split_seed=0,
            n_members=1000,
            n_nonmembers=1000,
            n_population=5000,
            bounds=[0.0, 1.0],
            sha256={"members": "1" * 64, "nonmembers": "2" * 64, "population": "3" * 64},
            overlaps={"members/nonmembers": 0},
        ),
        robustness=robustness,
        privacy=privacy,
        verdict=Verdict(
            level="warning",
            headline="robust accuracy 6.9% at eps=0.1; LiRA TPR 1.8% at 0.1% FPR",
            details=["1 sanity check fired: black_box_beats_white_box"],
        ),
        settings={"eps": [eps_small, eps_large], "samples": 1000, "attacks": ["pgd", "square"]},
        seed=1234,
        versions={"modelsec": "0.1.0", "torch": "2.13.0", "python": "3.11.7"},
        timings={"load": 0.31, "robustness": 29.13, "privacy": 12.7, "total": 42.14},
    )
    return dataclasses.replace(result, **overrides)
