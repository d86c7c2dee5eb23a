"""Defenses against membership inference: ``dmp``, ``regularised`` and ``output-hardening``.

Threat model: an attacker who queries the trained model (scores or labels; for ``dmp`` and ``regularised`` also
the weights) and wants to tell whether a record was in its training set, the members split. None of the three
gives a proven bound: their protection is *empirical*, what an audit's membership attacks still achieve against
them, and nothing is promised against a stronger or adaptive attack (Song & Mittal 2021, "Systematic Evaluation
of Privacy Risks of Machine Learning Models", found two such defenses, adversarial regularisation and MemGuard,
weaker than reported once attacked with metric-based and adaptive attacks). For a guarantee, train with ``dp-sgd``.

- ``dmp`` (Shejwalkar & Houmansadr 2021, "Membership Privacy for Machine Learning Models Through Knowledge
  Transfer", AAAI; "distillation for membership privacy"): a teacher trained on the members; the deployed student
  trained only on the teacher's soft labels over *reference* records the teacher never trained on. The student
  never sees a member, nor any label but the teacher's.
- ``regularised``: standard training with label smoothing (Szegedy et al. 2016), weight decay and early stopping
  on the generalisation gap measured against held-out population records: membership inference feeds on the gap
  between training and test behaviour (Yeom, Giacomelli, Fredrikson & Jha 2018, "Privacy Risk in Machine
  Learning: Analyzing the Connection to Overfitting"), so a model kept near its best held-out epoch within a gap
  budget leaks less.
- ``output-hardening``: the model reveals only its top-k probabilities, rounded probabilities, or its label
  (:mod:`modelsec.models.output`). It protects a prediction API, not the weights: anyone holding the file can
  remove the wrapper. It either trains a standard model and hardens it, or hardens an existing model file without
  training (``harden(..., base=FILE)``, ``modelsec harden --defense output-hardening --base FILE``).

``dmp`` and ``regularised`` need data that is not trained on with labels: they use the splits' ``population``
records (``harden`` hands them over through :meth:`~modelsec.defenses.Defense.use_population`). The population is
also what an audit's reference models train on: an audit with reference models then calibrates against records
that the DMP student trained on (without labels) or that chose the regularised model's epoch; the members and
non-members an audit scores are never touched.

>>> from modelsec.defenses import make_defense
>>> d = make_defense("dmp", {"selection": "low-entropy", "reference_size": 500})
>>> d.config.temperature, d.guarantees().kind, d.guarantees().certified
(2.0, 'empirical', False)
>>> make_defense("regularised").config.label_smoothing
0.1
>>> make_defense("output-hardening", {"output": "top-k", "k": 3}).output_spec()
{'kind': 'top-k', 'k': 3}
>>> make_defense("dmp", {"selection": "low-entropy"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelsec.core.errors.ConfigError: dmp: selection 'low-entropy' needs reference_size (how many of the lowest-entropy ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from modelsec.core.errors import ConfigError
from modelsec.core.seeding import derived_generator
from modelsec.data.dataset import Dataset
from modelsec.defenses.base import DEFENSES, Defense, DefenseConfig, Guarantees
from modelsec.defenses.teacher_student import TeacherStudentConfig, TeacherStudentDefense
from modelsec.defenses.training import BatchLoss, TrainingState
from modelsec.models.base import eval_mode
from modelsec.models.card import BaseRecord, DefenseRecord, ModelCard, RunRecord
from modelsec.models.output import MAX_DECIMALS, OUTPUT_HARDENINGS, harden_output

SELECTIONS = ("all", "low-entropy")
PROTECTS_AGAINST = "membership inference"


def _no_guarantee(summary: str, **details: Any) -> Guarantees:
    return Guarantees(
        kind="empirical",
        summary=summary,
        certified=False,
        details={
            "protects_against": PROTECTS_AGAINST,
            "differential_privacy": False,
            "measured_by": "the audit's membership attacks (AUC, TPR at low FPR)",
            **details,
        },
    )


def _population(defense: Defense) -> Dataset:
    """The population records handed to the defense, or a :class:`ConfigError` saying how to provide them."""
    population = defense.population
    if population is None or len(population) == 0:
        raise ConfigError(
            f"{defense.name} needs the data's population records (data it does not train on with labels); "
            "train it through harden(), or call use_population(splits.population) before fit()"
        )
    return population


def _fixed_subset(n: int, size: int, seed: int, *labels: object) -> np.ndarray:
    """``size`` of ``range(n)`` (all if ``size >= n``), drawn with a seed derived for this purpose, sorted."""
    if size >= n:
        return np.arange(n)
    perm = torch.randperm(n, generator=derived_generator(seed, *labels)).numpy()
    return np.sort(perm[:size])


@torch.no_grad()
def _predict(module: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``module`` on ``x`` in eval mode (the caller's mode restored), on the CPU."""
    outs = []
    with eval_mode(module):
        for i in range(0, len(x), batch_size):
            outs.append(module(torch.from_numpy(x[i : i + batch_size]).to(device)).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = functional.log_softmax(logits.double(), dim=1)
    return -(logp.exp() * logp).sum(dim=1)


# ---------------------------------------------------------------------------------------------------- dmp


@dataclass(frozen=True, kw_only=True)
class DMPConfig(TeacherStudentConfig):
    """Distillation for membership privacy.

    Args:
        temperature: T of the soft labels ``softmax(z_teacher / T)`` and of the student's softmax in the
            distillation loss (default 2). T = 1 passes the teacher's probabilities as they are; a larger T
            flattens them, so the student also learns how the teacher ranks the wrong classes (Hinton, Vinyals &
            Dean 2015's "dark knowledge"), which helps a student that sees few reference records. The student is
            deployed at temperature 1.
        teacher_epochs: the teacher's epochs (default: ``epochs``, the student's).
        selection: which population records become the reference set: "all" (default; or ``reference_size`` of
            them drawn at random) or "low-entropy": the ``reference_size`` records on which the teacher's
            prediction has the lowest entropy, the paper's criterion (the soft labels of such records differ least
            between teachers trained with and without any one member, so they transfer the least about members).
        reference_size: how many population records the student trains on (default: all of them).
    """

    defense_name: ClassVar[str] = "dmp"
    temperature: float = 2.0
    selection: str = "all"
    reference_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.selection not in SELECTIONS:
            raise self.fail(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.reference_size is not None and self.reference_size < 1:
            raise self.fail(
                f"reference_size must be >= 1 (or unset: every population record), got {self.reference_size}"
            )
        if self.selection == "low-entropy" and self.reference_size is None:
            raise self.fail(
                "selection 'low-entropy' needs reference_size (how many of the lowest-entropy population records "
                "to keep)"
            )


@DEFENSES.register("dmp")
class DMP(TeacherStudentDefense):
    """Distillation for membership privacy (Shejwalkar & Houmansadr 2021, "Membership Privacy for Machine Learning
    Models Through Knowledge Transfer").

    1. A teacher (a copy of the module, same initialisation) is trained on the members with cross-entropy: the
       unprotected model, never saved.
    2. The reference set: population records (with any whose input equals a member's removed), all of them, a
       random ``reference_size`` of them, or the ``reference_size`` with the lowest teacher entropy.
    3. The student (the module itself) is trained only on those records, against the teacher's soft labels:
       loss ``T^2 * KL(softmax(z_teacher / T) || softmax(z / T))`` (the ``T^2`` keeps gradient sizes comparable
       across temperatures, Hinton et al. 2015). It never sees a member, nor a true label of any record; its
       ``train_accuracy`` counts agreement with the teacher's labels.

    Protects against membership inference on the members (the student's exposure to them is only through the
    teacher's predictions on other records). Empirical only: no differential privacy. The per-epoch checkpoint
    records the stage; in the student stage it holds the teacher's weights (deleted with the checkpoint once the
    model is saved). The provenance (``dmp``) records both histories and the reference set's size and selection.
    """

    name = "dmp"
    config_class = DMPConfig
    config: DMPConfig
    teacher_seed_name = "dmp-teacher"

    def __init__(self, config: DefenseConfig | Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.reference_: dict[str, Any] | None = None

    def guarantees(self) -> Guarantees:
        c = self.config
        size = "every" if c.reference_size is None else str(c.reference_size)
        return _no_guarantee(
            "empirical membership privacy only, no differential privacy: the deployed student learnt only the "
            f"teacher's soft labels (T={c.temperature:g}) on {size} population records ({c.selection}), never a "
            "member; an audit measures what it still leaks, nothing is promised against adaptive attacks",
            defense="distillation for membership privacy (Shejwalkar & Houmansadr 2021)",
            temperature=c.temperature,
            selection=c.selection,
            reference_size=c.reference_size,
        )

    def check_data(self, train: Dataset) -> None:
        population = _population(self)
        size = self.config.reference_size
        if size is not None and size > len(population):
            raise self.config.fail(
                f"reference_size {size} exceeds the {len(population)} population records; pick at most that many"
            )

    def student_data(self, teacher: nn.Module, train: Dataset, *, device: torch.device) -> Dataset:
        """The student's training set: the selected population records, labelled with the teacher's predictions
        (only the training accuracy counts them; the loss uses the soft labels). Records whose input equals a
        member's are left out. Sets ``self.reference_`` (what the provenance records)."""
        c = self.config
        population = _population(self)
        members = set(train.record_hashes())
        keep = np.array([h not in members for h in population.record_hashes()], dtype=bool)
        candidates = np.flatnonzero(keep)
        if len(candidates) == 0:
            raise ConfigError("dmp: every population record is also a member; the student has nothing to train on")
        size = len(candidates) if c.reference_size is None else min(c.reference_size, len(candidates))
        logits = _predict(teacher, population.x[candidates], device)
        entropy = _entropy(logits)
        if c.selection == "low-entropy":
            order = np.argsort(entropy.numpy(), kind="stable")[:size]
            chosen = np.sort(order)
        else:
            chosen = _fixed_subset(len(candidates), size, c.seed, "dmp-reference")
        index = candidates[chosen]
        picked = torch.from_numpy(chosen)
        self.reference_ = {
            "source": "population",
            "population_records": len(population),
            "excluded_as_members": int((~keep).sum()),
            "records": len(index),
            "selection": c.selection,
            "mean_teacher_entropy": float(entropy[picked].mean()),
            "mean_population_entropy": float(entropy.mean()),
        }
        return Dataset(
            name=f"{population.name} (dmp reference)",
            x=np.ascontiguousarray(population.x[index]),
            y=logits[picked].argmax(dim=1).numpy().astype(np.int64),
            num_classes=population.num_classes,
            bounds=population.bounds,
            class_names=population.class_names,
        )

    def student_loss(self, teacher: nn.Module) -> BatchLoss:
        """The student's batch loss: ``T^2 * KL(softmax(teacher(x) / T) || softmax(student(x) / T))``; the labels
        ``y`` of the batch are not used."""
        temperature = self.config.temperature

        def loss(
            m: nn.Module, x: torch.Tensor, y: torch.Tensor, _g: torch.Generator
        ) -> tuple[torch.Tensor, torch.Tensor]:
            soft = self.soft_labels(teacher, x)
            logits = m(x)
            kl = functional.kl_div(functional.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean")
            return kl * temperature**2, logits

        return loss

    def soft_labels(self, teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The teacher's soft labels ``softmax(teacher(x) / T)`` (eval mode, no gradient)."""
        with torch.no_grad(), eval_mode(teacher):
            return functional.softmax(teacher(x) / self.config.temperature, dim=1)

    def provenance(self) -> dict[str, Any]:
        """Both histories and the reference set, under ``dmp`` (after :meth:`fit`)."""
        histories = self.histories()
        if not histories:
            return {}
        return {
            "dmp": {
                "temperature": self.config.temperature,
                "deployed_temperature": 1.0,
                "reference": self.reference_,
                **histories,
                "student_train_accuracy_means": "agreement with the teacher's labels on the reference records",
            }
        }


# ---------------------------------------------------------------------------------------------------- regularised


@dataclass(frozen=True, kw_only=True)
class RegularisedConfig(DefenseConfig):
    """Regularised training with early stopping on the generalisation gap.

    Args:
        label_smoothing: the cross-entropy's target puts ``1 - label_smoothing`` on the label and spreads the rest
            evenly (Szegedy et al. 2016; default 0.1): the model is never pushed to full confidence on a member.
        weight_decay: Adam's L2 penalty (default 5e-4 here, 0 in standard training).
        validation_size: population records held out to measure the gap (default 1000, at most the population);
            the training accuracy of the gap is measured on as many training records, fixed once from the seed.
        max_gap: an epoch is admissible when its training accuracy exceeds its validation accuracy by at most this
            (default 0.05, 5 points); the admissible epoch with the best validation accuracy is restored at the end.
        patience: stop after this many epochs without a new best admissible epoch (default 3; 0: never stop early,
            only restore).
    """

    defense_name: ClassVar[str] = "regularised"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    validation_size: int = 1000
    max_gap: float = 0.05
    patience: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.label_smoothing < 1:
            raise self.fail(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.validation_size < 1:
            raise self.fail(f"validation_size must be >= 1, got {self.validation_size}")
        if not 0 <= self.max_gap <= 1:
            raise self.fail(f"max_gap must be in [0, 1] (a difference of accuracies), got {self.max_gap}")
        if self.patience < 0:
            raise self.fail(f"patience must be >= 0 (0: never stop early), got {self.patience}")


@DEFENSES.register("regularised")
class Regularised(Defense):
    """Label smoothing, weight decay and early stopping on the generalisation gap.

    After each epoch: accuracy on ``validation_size`` held-out population records and, in eval mode, on as many
    fixed training records; their difference is the gap. Among the epochs whose gap is at most ``max_gap``, the
    one with the best validation accuracy (the earliest on a tie) is kept and restored when training ends (after
    the last epoch, or after ``patience`` epochs without a better one). If no epoch was within ``max_gap``, the
    epoch with the smallest gap is restored, and the history's event says so.

    The members stay exactly the training set: the validation records come from the population, and the
    non-members an audit scores are never used to choose the epoch. Protects against membership inference
    empirically (a smaller gap leaves loss- and confidence-based attacks less to separate); no guarantee.
    """

    name = "regularised"
    config_class = RegularisedConfig
    config: RegularisedConfig

    def __init__(self, config: DefenseConfig | Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.selected_: dict[str, Any] | None = None

    def guarantees(self) -> Guarantees:
        c = self.config
        return _no_guarantee(
            "empirical membership privacy only, no differential privacy: label smoothing "
            f"{c.label_smoothing:g}, weight decay {c.weight_decay:g} and the epoch with the best held-out accuracy "
            f"within a generalisation gap of {c.max_gap:g}; an audit measures what it still leaks",
            label_smoothing=c.label_smoothing,
            weight_decay=c.weight_decay,
            max_gap=c.max_gap,
            patience=c.patience,
            validation="held-out population records",
        )

    def check_data(self, train: Dataset) -> None:
        _population(self)

    def setup(self, module: nn.Module, train: Dataset, *, device: torch.device) -> None:
        c = self.config
        population = _population(self)
        self.device = device
        self.validation = population.subset(_fixed_subset(len(population), c.validation_size, c.seed, "validation"))
        self.train_check = train.subset(_fixed_subset(len(train), len(self.validation), c.seed, "train-check"))

    def batch_loss(
        self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = module(x)
        return functional.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing), logits

    def measure(self, module: nn.Module, epoch: int) -> tuple[float, float]:
        """Eval-mode accuracy on the fixed training records and on the validation records after ``epoch``."""

        def acc(data: Dataset) -> float:
            pred = _predict(module, data.x, self.device).argmax(dim=1).numpy()
            return float((pred == data.y).mean())

        return acc(self.train_check), acc(self.validation)

    def on_epoch_end(self, state: TrainingState) -> str | None:
        c = self.config
        train_acc, val_acc = self.measure(state.module, state.epoch)
        gap = train_acc - val_acc
        metrics = state.history.metrics
        metrics.setdefault("gap_train_accuracy", []).append(train_acc)
        metrics.setdefault("validation_accuracy", []).append(val_acc)
        metrics.setdefault("generalisation_gap", []).append(gap)
        self.progress.note(
            f"epoch {state.epoch}: validation accuracy {val_acc:.2%}, generalisation gap {gap:+.2%} "
            f"(max {c.max_gap:.2%})"
        )
        record = {"epoch": state.epoch, "validation_accuracy": val_acc, "gap": gap}

        def snapshot() -> dict[str, Any]:
            weights = {k: v.detach().cpu().clone() for k, v in state.module.state_dict().items()}
            return {**record, "weights": weights}

        best = state.extra.get("best")
        if gap <= c.max_gap and (best is None or val_acc > best["validation_accuracy"]):
            state.extra["best"] = best = snapshot()
        closest = state.extra.get("closest")
        if best is None and (closest is None or gap < closest["gap"]):
            state.extra["closest"] = snapshot()
        last_good = int(best["epoch"]) if best is not None else 0
        stale = c.patience > 0 and state.epoch - last_good >= c.patience
        if not stale and state.epoch < c.epochs:
            return None
        return self._restore(state, stopped=stale and state.epoch < c.epochs)

    def _restore(self, state: TrainingState, *, stopped: bool) -> str | None:
        c = self.config
        best = state.extra.get("best")
        chosen = best if best is not None else state.extra["closest"]
        epoch = int(chosen["epoch"])
        if epoch != state.epoch:
            state.module.load_state_dict(chosen["weights"])
        within = best is not None
        event: dict[str, Any] = {
            "epoch": state.epoch,
            "event": "early-stopping" if stopped else "best-epoch-restored",
            "restored_epoch": epoch,
            "validation_accuracy": float(chosen["validation_accuracy"]),
            "generalisation_gap": float(chosen["gap"]),
            "within_max_gap": within,
        }
        tests = state.history.test_accuracy
        if len(tests) >= epoch:
            event["test_accuracy"] = tests[epoch - 1]
        state.history.events.append(event)
        self.selected_ = {k: v for k, v in event.items() if k not in ("epoch", "event")}
        what = (
            f"epoch {epoch} (validation accuracy {chosen['validation_accuracy']:.2%}, gap {chosen['gap']:+.2%})"
            if within
            else f"epoch {epoch}, the smallest gap ({chosen['gap']:+.2%}): no epoch was within max_gap {c.max_gap:g}"
        )
        self.progress.note(f"regularised: restored {what}")
        if not stopped:
            return None
        return f"no better epoch within the generalisation gap {c.max_gap:g} for {c.patience} epochs; restored {what}"

    def provenance(self) -> dict[str, Any]:
        """The restored epoch and its numbers, under ``regularised`` (after :meth:`fit`)."""
        if self.selected_ is None:
            return {}
        return {"regularised": {"selected": self.selected_, "validation_records": len(self.validation)}}


# ---------------------------------------------------------------------------------------------------- output hardening


@dataclass(frozen=True, kw_only=True)
class OutputHardeningConfig(DefenseConfig):
    """Output hardening of a prediction API (see :mod:`modelsec.models.output`).

    Args:
        output: "label-only" (default: only the predicted label), "top-k" (the k largest probabilities; the
            other classes share the rest equally) or "rounding" (probabilities rounded to ``decimals``).
        k: top-k's k (default 1), fewer than the classes.
        decimals: rounding's decimals, 1 to 6 (default 2).

    The shared training knobs train the standard model that is hardened; they are unused when an existing model
    file is hardened (``base``).
    """

    defense_name: ClassVar[str] = "output-hardening"
    output: str = "label-only"
    k: int = 1
    decimals: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.output not in OUTPUT_HARDENINGS:
            raise self.fail(f"output must be one of {', '.join(OUTPUT_HARDENINGS.names())}, got {self.output!r}")
        if self.k < 1:
            raise self.fail(f"k must be >= 1, got {self.k}")
        if not 1 <= self.decimals <= MAX_DECIMALS:
            raise self.fail(f"decimals must be from 1 to {MAX_DECIMALS}, got {self.decimals}")
        for option, kind in (("k", "top-k"), ("decimals", "rounding")):
            if getattr(self, option) != getattr(OutputHardeningConfig, option) and self.output != kind:
                raise self.fail(f"{option} is an option of output '{kind}', not of {self.output!r}")


WHAT_IS_REVEALED = {
    "label-only": "only the predicted label",
    "top-k": "only the {k} largest probabilities",
    "rounding": "probabilities rounded to {decimals} decimals",
}


@DEFENSES.register("output-hardening")
class OutputHardeningDefense(Defense):
    """Output hardening: the saved model's header records ``"output": {"kind": ..., <params>}`` and
    :func:`~modelsec.models.load_model` wraps the module so that it returns the log-probabilities of what the
    hardened API reveals, with the capability an attacker of that API has (LABELS for label-only; SCORES for top-k
    and rounding, whose gradients would be meaningless). An audit of the file then runs only the attacks that API
    allows: for label-only, the label-only membership attack and decision-based evasion (HopSkipJump).

    Protects against membership inference through the API's outputs (Shokri et al. 2017 evaluate top-k and
    rounding; Choquette-Choo et al. 2021 show labels alone still leak). Not the weights: the file holds the
    unhardened model, and anyone with it can drop the wrapper. Without ``base`` it trains a standard model (the
    shared knobs) and hardens it; :meth:`wrap_card` hardens an existing model instead, without training
    (``harden --base``).
    """

    name = "output-hardening"
    wraps_trained_models = True
    config_class = OutputHardeningConfig
    config: OutputHardeningConfig

    def output_spec(self) -> dict[str, Any]:
        """The ``"output"`` entry of the saved model's header."""
        c = self.config
        params = {"top-k": {"k": c.k}, "rounding": {"decimals": c.decimals}}.get(c.output, {})
        return harden_output(nn.Identity(), {"kind": c.output, **params}).spec()

    def guarantees(self) -> Guarantees:
        spec = self.output_spec()
        revealed = WHAT_IS_REVEALED[spec["kind"]].format(**spec)
        return _no_guarantee(
            f"empirical membership privacy of a prediction API only, no differential privacy: it reveals {revealed}; "
            "the weights are not protected (the file holds the unhardened model, and white-box access bypasses the "
            "wrapper); an audit of the file measures what the API still leaks, including to the label-only attack",
            output=spec,
            protects="the model's outputs (a prediction API), not its weights",
        )

    def check_data(self, train: Dataset) -> None:
        self._check_classes(train.num_classes)

    def _check_classes(self, num_classes: int) -> None:
        harden_output(nn.Identity(), self.output_spec()).check_classes(num_classes)

    def wrap_card(self, recorded: ModelCard, base: BaseRecord, base_provenance: dict[str, Any] | None) -> ModelCard:
        """The card of the trained model ``recorded`` behind this output hardening: its own records plus
        ``output`` and a defense record naming the ``base`` file (its path, hash and defense); the run record
        keeps the base's provenance. The weights stay as they are."""
        from modelsec.core.version import __version__

        missing = [key for key in ("arch", "input_shape", "num_classes") if not getattr(recorded, key)]
        if missing:
            raise ConfigError(
                f"{base.path!r} does not record its {', '.join(missing)}; harden a model written by "
                "`modelsec train` or `modelsec harden`"
            )
        if recorded.output is not None:
            raise ConfigError(
                f"{base.path!r} already hardens its output ({recorded.output}); harden the model it was made from"
            )
        assert recorded.num_classes
        self._check_classes(recorded.num_classes)
        return replace(
            recorded,
            output=self.output_spec(),
            defense=DefenseRecord(
                name=self.name, config=self.config.to_dict(), guarantees=self.guarantees(), base=base
            ),
            run=RunRecord.now(
                seed=self.config.seed, training_seconds=0.0, epochs_completed=0, base_provenance=base_provenance
            ),
            modelsec_version=__version__,
        )
