"""``distillation``: defensive distillation (Papernot, McDaniel, Wu, Jha & Swami 2016, "Distillation as a Defense
to Adversarial Perturbations against Deep Neural Networks"), kept as the textbook example of a broken defense.

**No robustness guarantee.** Carlini & Wagner 2017 ("Defensive Distillation is Not Robust to Adversarial Examples")
showed that its apparent robustness is gradient masking: the deployed model's logits are about T times larger than
a standard model's, its softmax saturates (the top probability is 1.0 in float32), so the cross-entropy gradient is
zero and gradient attacks on that loss find nothing, while the decision boundary is as close as before. modelsec's
audit flags it (the ``zero-gradients`` sanity check) and its ``standard`` preset, whose margin/DLR losses do not go
through the softmax and whose black-box Square attack needs no gradient at all, is expected to bring robust accuracy
down to the undefended model's level. It is here so that an audit can show that, not as a defense to deploy.

The procedure, with ``T = temperature`` (default 100, the paper's strongest setting):

1. train a teacher on the members with the cross-entropy of ``softmax(z / T)`` against the labels
   (``teacher_epochs`` epochs, default ``epochs``);
2. train a student of the same architecture (from the same initialisation) on the teacher's soft labels
   ``softmax(z_teacher / T)``, again through ``softmax(z / T)``: loss ``-sum(soft * log_softmax(z / T))``;
3. deploy the student at temperature 1: the saved model returns its raw logits ``z``.

Both stages run in :class:`~modelsec.defenses.teacher_student.TeacherStudentDefense` (the shared training loop,
a per-epoch checkpoint that holds the stage, so a resumed run skips the finished teacher). The provenance records
both histories and how saturated the deployed student is.

>>> from modelsec.defenses import make_defense
>>> d = make_defense("distillation", {"temperature": 50, "epochs": 4})
>>> d.config.teacher_epochs is None, d.guarantees().kind, d.guarantees().certified
(True, 'none', False)
>>> "gradient masking" in d.guarantees().summary
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional

from modelsec.data.dataset import Dataset
from modelsec.defenses.base import DEFENSES, DefenseConfig, Guarantees
from modelsec.defenses.teacher_student import TeacherStudentConfig, TeacherStudentDefense
from modelsec.defenses.training import BatchLoss
from modelsec.models.base import eval_mode

SATURATION_TOLERANCE = 1e-6
"""A prediction counts as saturated when its top softmax probability is within this of 1."""
DEPLOYED_SAMPLE = 1000
"""Records (of the test set, else the training set) on which the deployed model's saturation is measured."""
BROKEN_BY = (
    'Carlini & Wagner 2017, "Defensive Distillation is Not Robust to Adversarial Examples": the apparent '
    "robustness is gradient masking from a saturated softmax"
)


@dataclass(frozen=True, kw_only=True)
class DistillationConfig(TeacherStudentConfig):
    """Defensive distillation.

    Args:
        temperature: T of the teacher's and the student's training softmax (default 100); the student is deployed
            at temperature 1.
        teacher_epochs: the teacher's epochs (default: ``epochs``, the student's).
    """

    defense_name: ClassVar[str] = "distillation"
    temperature: float = 100.0


@DEFENSES.register("distillation")
class DefensiveDistillation(TeacherStudentDefense):
    """Defensive distillation at temperature T (Papernot et al. 2016); see the module docstring.

    No robustness guarantee: Carlini & Wagner 2017 broke it (gradient masking from a saturated softmax). modelsec's
    audit flags it and its ``standard`` preset is expected to bring robust accuracy down to the undefended model's.
    Threat model claimed by the paper: white-box evasion; what it actually resists: attacks on the cross-entropy
    gradient only.
    """

    name = "distillation"
    config_class = DistillationConfig
    config: DistillationConfig
    teacher_seed_name = "teacher"

    def __init__(self, config: DefenseConfig | Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.deployed_: dict[str, Any] | None = None

    def teacher_loss(self) -> BatchLoss:
        """Cross-entropy of ``softmax(z / T)`` against the labels."""
        temperature = self.config.temperature

        def loss(
            m: nn.Module, x: torch.Tensor, y: torch.Tensor, _g: torch.Generator
        ) -> tuple[torch.Tensor, torch.Tensor]:
            logits = m(x)
            return functional.cross_entropy(logits / temperature, y), logits

        return loss

    def student_loss(self, teacher: nn.Module) -> BatchLoss:
        """``-sum(softmax(z_teacher / T) * log_softmax(z / T))``, averaged over the batch."""
        temperature = self.config.temperature

        def loss(
            m: nn.Module, x: torch.Tensor, y: torch.Tensor, _g: torch.Generator
        ) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                soft = functional.softmax(teacher(x) / temperature, dim=1)
            logits = m(x)
            return -(soft * functional.log_softmax(logits / temperature, dim=1)).sum(dim=1).mean(), logits

        return loss

    def teacher_note(self) -> str:
        return f"distillation: training the teacher at temperature {self.config.temperature:g}"

    def after_fit(self, module: nn.Module, train: Dataset, test: Dataset | None, device: str) -> None:
        """Measure how saturated the deployed student's softmax is."""
        self.deployed_ = saturation(module, test if test is not None and len(test) else train, device=device)

    def provenance(self) -> dict[str, Any]:
        """Both histories and the deployed model's saturation, under ``distillation`` (after :meth:`fit`)."""
        histories = self.histories()
        if not histories:
            return {}
        return {
            "distillation": {
                "temperature": self.config.temperature,
                "deployed_temperature": 1.0,
                **histories,
                "deployed": self.deployed_,
            }
        }

    def guarantees(self) -> Guarantees:
        c = self.config
        return Guarantees(
            kind="none",
            summary=(
                f"no robustness guarantee: defensive distillation at temperature {c.temperature:g} (Papernot et al. "
                "2016) was shown by Carlini & Wagner 2017 to owe its apparent robustness to gradient masking from a "
                "saturated softmax; modelsec's audit flags it, and its standard preset (margin/DLR losses, "
                "black-box Square) is expected to bring robust accuracy down to the undefended model's level"
            ),
            certified=False,
            details={
                "temperature": c.temperature,
                "teacher_epochs": c.teacher_epochs or c.epochs,
                "deployed_temperature": 1.0,
                "broken_by": BROKEN_BY,
                "expected_audit": (
                    "sanity flag zero-gradients (saturated softmax); robust accuracy under the standard preset at "
                    "the undefended model's level"
                ),
            },
        )


@torch.no_grad()
def saturation(
    module: nn.Module, data: Dataset, *, device: str = "cpu", limit: int = DEPLOYED_SAMPLE
) -> dict[str, Any]:
    """How saturated ``module``'s softmax is at temperature 1 on the first ``limit`` records of ``data``: the median
    top probability, the fraction of records whose top probability is within :data:`SATURATION_TOLERANCE` of 1,
    and the median logit margin (top logit minus the runner-up) and largest absolute logit."""
    x = torch.from_numpy(data.x[:limit]).to(torch.device(device))
    with eval_mode(module):
        logits = module(x).float()
    top = functional.softmax(logits, dim=1).amax(dim=1)
    two = logits.topk(min(2, logits.shape[1]), dim=1).values
    margin = two[:, 0] - two[:, -1]
    return {
        "records": len(x),
        "median_max_probability": float(top.median()),
        "saturated_fraction": float((1 - top <= SATURATION_TOLERANCE).float().mean()),
        "median_logit_margin": float(margin.median()),
        "median_abs_max_logit": float(logits.abs().amax(dim=1).median()),
    }
