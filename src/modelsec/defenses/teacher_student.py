"""The two-stage training shared by the distillation defenses: train a teacher (a copy of the module, same
initialisation), then train the module itself as the student against the teacher's outputs.

Used by ``distillation`` (Papernot et al. 2016: the student learns the teacher's soft labels at temperature T on
the members) and ``dmp`` (Shejwalkar & Houmansadr 2021: the student learns them on population records the teacher
never saw). A subclass says what differs (the teacher's batch loss, the student's data and batch loss, what to
measure on the deployed student); this base does the rest:

- both stages run the shared training loop (:func:`modelsec.defenses.training.train_classifier`) with the
  defense's knobs, the teacher with ``teacher_epochs`` (default: ``epochs``) and a seed derived from the defense's seed;
- the per-epoch checkpoint records the stage; in the student stage it also holds the teacher's weights and
  history, so a resumed run skips the finished teacher;
- the returned history is the student's, with ``seconds`` covering both stages; both histories are kept for the
  provenance.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from torch import nn

from modelsec.core.options import COUNT
from modelsec.core.progress import NullProgress, Progress
from modelsec.core.seeding import derived_seed
from modelsec.data.dataset import Dataset
from modelsec.defenses.base import Defense, DefenseConfig
from modelsec.defenses.training import BatchLoss, TrainingConfig, TrainingHistory, TrainingState, train_classifier


@dataclass(frozen=True, kw_only=True)
class TeacherStudentConfig(DefenseConfig):
    """The knobs every teacher-student defense has besides the shared ones.

    Args:
        temperature: T of the teacher's soft labels ``softmax(z_teacher / T)`` and of the student's softmax in its
            loss; the student is deployed at temperature 1.
        teacher_epochs: the teacher's epochs (default: ``epochs``, the student's).
    """

    temperature: float = 1.0
    teacher_epochs: Annotated[int | None, COUNT] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperature > 0:
            raise self.fail(f"temperature must be > 0, got {self.temperature}")
        if self.teacher_epochs is not None and self.teacher_epochs < 1:
            raise self.fail(f"teacher_epochs must be >= 1 (or unset: the same as epochs), got {self.teacher_epochs}")


class TeacherStudentDefense(Defense):
    """A defense that trains a teacher, then the module as its student (see the module docstring).

    Subclasses set :attr:`teacher_seed_name` and implement :meth:`student_loss`; they may override
    :meth:`teacher_loss` (default: cross-entropy), :meth:`student_data` (default: the members) and
    :meth:`after_fit` (what to measure on the trained student).
    """

    config: TeacherStudentConfig
    teacher_seed_name = "teacher"
    """The label the teacher's seed is derived under (:func:`~modelsec.core.seeding.derived_seed`)."""

    def __init__(self, config: DefenseConfig | Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.teacher_history_: TrainingHistory | None = None
        self.student_history_: TrainingHistory | None = None

    def teacher_config(self) -> TrainingConfig:
        """The teacher's training knobs: the shared ones, ``teacher_epochs`` and a seed derived for it."""
        c = self.config
        return TrainingConfig(
            epochs=c.teacher_epochs or c.epochs,
            batch_size=c.batch_size,
            lr=c.lr,
            weight_decay=c.weight_decay,
            lr_schedule=c.lr_schedule,
            seed=derived_seed(c.seed, self.teacher_seed_name),
        )

    def teacher_loss(self) -> BatchLoss | None:
        """The teacher's batch loss (None: the training loop's cross-entropy)."""
        return None

    def student_data(self, teacher: nn.Module, train: Dataset, *, device: torch.device) -> Dataset:
        """The records the student trains on (default: the members)."""
        return train

    @abc.abstractmethod
    def student_loss(self, teacher: nn.Module) -> BatchLoss:
        """The student's batch loss against ``teacher`` (in eval mode, on the training device)."""

    def teacher_note(self) -> str:
        """The progress note that opens the teacher's stage."""
        return f"{self.name}: training the teacher on the members"

    def student_note(self, student_records: int) -> str:
        """The progress note that opens the student's stage."""
        return (
            f"{self.name}: training the student on the teacher's soft labels (T={self.config.temperature:g}) over "
            f"{student_records} records"
        )

    def after_fit(self, module: nn.Module, train: Dataset, test: Dataset | None, device: str) -> None:
        """Measure what the provenance records about the trained student (default: nothing)."""

    def fit(
        self,
        module: nn.Module,
        train: Dataset,
        *,
        test: Dataset | None = None,
        device: str = "cpu",
        progress: Progress | None = None,
        resume: Mapping[str, Any] | None = None,
        after_epoch: Callable[[TrainingState], None] | None = None,
    ) -> TrainingHistory:
        """Train a teacher (a copy of ``module``), then ``module`` as the student; returns the student's history
        with ``seconds`` covering both stages."""
        self.progress = progress or NullProgress()
        self.check_data(train)
        saved = dict((resume or {}).get("extra") or {})
        teacher = copy.deepcopy(module)

        def checkpoint(phase: str, **extra: Any) -> Callable[[TrainingState], str | None]:
            def on_epoch_end(state: TrainingState) -> str | None:
                state.extra.update(phase=phase, **extra)
                if after_epoch is not None:
                    after_epoch(state)
                return None

            return on_epoch_end

        if saved.get("phase") == "student":
            teacher.load_state_dict(saved["teacher"])
            teacher_history = TrainingHistory.from_dict(saved["teacher_history"])
            student_resume = resume
        else:
            self.progress.note(self.teacher_note())
            teacher_history = train_classifier(
                teacher,
                train,
                config=self.teacher_config(),
                test=test,
                device=device,
                progress=self.progress,
                batch_loss=self.teacher_loss(),
                on_epoch_end=checkpoint("teacher"),
                resume=resume,
            )
            student_resume = None

        dev = torch.device(device)
        teacher.to(dev).eval()
        teacher_weights = {k: v.detach().cpu().clone() for k, v in teacher.state_dict().items()}
        student_train = self.student_data(teacher, train, device=dev)
        self.progress.note(self.student_note(len(student_train)))
        history = train_classifier(
            module,
            student_train,
            config=self.config,
            test=test,
            device=device,
            progress=self.progress,
            batch_loss=self.student_loss(teacher),
            on_epoch_end=checkpoint("student", teacher=teacher_weights, teacher_history=teacher_history.to_dict()),
            resume=student_resume,
        )
        self.teacher_history_ = teacher_history
        self.student_history_ = TrainingHistory.from_dict(history.to_dict())
        self.after_fit(module, train, test, device)
        history.seconds += teacher_history.seconds
        return history

    def histories(self) -> dict[str, Any]:
        """Both stages' histories, for the provenance (empty before :meth:`fit`)."""
        if self.teacher_history_ is None or self.student_history_ is None:
            return {}
        return {
            "teacher_training": self.teacher_history_.to_dict(),
            "student_training": self.student_history_.to_dict(),
        }
