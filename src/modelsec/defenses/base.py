"""The defense contract: a registered name, a typed configuration validated before training, the training hooks,
and what the trained model is guaranteed to have.

A defense trains through :func:`modelsec.defenses.training.train_classifier`, the same loop as standard training, by
supplying its override points: the per-batch loss (adversarial training replaces the clean batch by its
adversarial examples), an epoch-start and an epoch-end hook (an eps warm-up; a catastrophic-overfitting check that
may restore the best weights and stop). Everything a defense must carry across epochs lives in the loop's
:class:`~modelsec.defenses.training.TrainingState` (its ``extra`` dict), so the per-epoch checkpoint of
:func:`modelsec.defenses.harden` resumes a defense exactly where it stopped.

Adding a defense: subclass :class:`DefenseConfig` (a frozen, keyword-only dataclass whose ``__post_init__``
raises :class:`~modelsec.core.errors.ConfigError`) and :class:`Defense`, and register the class in :data:`DEFENSES`.
It then appears in ``modelsec harden --defense``, ``modelsec list`` and the tests over every registered defense.
Its config follows the options convention of :mod:`modelsec.core.options`: every field is documented in the class
docstring's ``Args:`` section, and a choice or a range the command line should check as it parses is an
``Annotated`` marker (``Annotated[str, OneOf("linf", "l2")]``); each field then is an option of ``modelsec harden``
and ``modelsec audit-dp`` (``--l2-norm-clip`` for ``l2_norm_clip``) with that help, without touching the CLI.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from modelsec.core.errors import ConfigError
from modelsec.core.progress import NullProgress, Progress
from modelsec.core.registry import Registry
from modelsec.data.dataset import Dataset
from modelsec.defenses.training import (
    TrainingConfig,
    TrainingHistory,
    TrainingState,
    cross_entropy_loss,
    train_classifier,
)
from modelsec.models.card import BaseRecord, Guarantees, ModelCard


@dataclass(frozen=True, kw_only=True)
class DefenseConfig(TrainingConfig):
    """Hyper-parameters of a defense: the training knobs every defense shares with standard training (``epochs``,
    ``batch_size``, ``lr``, ``weight_decay``, ``lr_schedule``, ``seed``; see
    :class:`~modelsec.defenses.training.TrainingConfig`) plus the defense's own fields in a subclass.

    Construction validates every field (types first, then values) and raises :class:`ConfigError` naming the
    defense, so a bad option fails before any data is loaded or any model is built.
    """

    defense_name: ClassVar[str] = "defense"

    def __post_init__(self) -> None:
        self._check_types()
        try:
            super().__post_init__()
        except ConfigError as e:
            raise ConfigError(f"{self.defense_name}: {e}") from None

    def fail(self, message: str) -> ConfigError:
        """A :class:`ConfigError` about this defense's configuration."""
        return ConfigError(f"{self.defense_name}: {message}")

    def _check_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            allowed = _allowed_types(hints[f.name])
            if value is None and type(None) in allowed:
                continue
            if float in allowed and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))  # 1 -> 1.0: the same number, one spelling
                value = float(value)
            ok = any(isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in allowed)
            if not ok:
                names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
                raise self.fail(f"{f.name} must be {names}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise self.fail(f"{f.name} must be a finite number, got {value!r}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DefenseConfig:
        """Build the configuration from a mapping (a parsed ``--config-json``); unknown keys are an error that
        lists the known ones."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(
                f"{cls.defense_name} has no option {', '.join(map(repr, unknown))}; "
                f"its options: {', '.join(cls.field_names())}"
            )
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _allowed_types(hint: Any) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for arg in typing.get_args(hint) for t in _allowed_types(arg))
    if isinstance(hint, type):
        return (hint,)
    raise TypeError(f"unsupported config field type {hint!r}")  # a bug in a config class, not a user error


class Defense(abc.ABC):
    """A training-time defense: ``Defense(config).fit(module, train)`` trains ``module`` in place.

    Subclasses set ``name`` and ``config_class`` and implement :meth:`guarantees`; they override the training
    hooks they need (:meth:`batch_loss`, :meth:`on_epoch_start`, :meth:`on_epoch_end`), :meth:`check_data` for
    checks that need the data (eps against the input bounds), and :meth:`setup` for per-run state built from the
    data. Per-run state that must survive a resume goes in ``state.extra``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[DefenseConfig]]
    # options for the conformance tests' tiny run (a few epochs on a small MLP), beside their own
    test_params: ClassVar[dict[str, Any]] = {}
    # hardens an existing trained model without training (``harden --base``, :meth:`wrap_card`)
    wraps_trained_models: ClassVar[bool] = False

    def __init__(self, config: DefenseConfig | Mapping[str, Any] | None = None) -> None:
        if config is None:
            config = self.config_class()
        elif isinstance(config, Mapping):
            config = self.config_class.from_mapping(config)
        elif type(config) is not self.config_class:
            raise ConfigError(
                f"{self.name} takes a {self.config_class.__name__}, got a {type(config).__name__}; "
                "pass a dict of options or the defense's own config"
            )
        self.config: DefenseConfig = config
        self.progress: Progress = NullProgress()
        self.population: Dataset | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    @abc.abstractmethod
    def guarantees(self) -> Guarantees:
        """What the trained model is guaranteed to have (and, as important, what it is not)."""

    def use_population(self, population: Dataset | None) -> None:
        """Hand over the data's population records (the splits' ``population``: neither members nor the test set),
        for defenses that need records they do not train on with labels (DMP's reference set, a validation slice
        for early stopping); they read ``self.population``. :func:`~modelsec.defenses.harden` calls this before
        :meth:`check_data`."""
        self.population = population

    def output_spec(self) -> dict[str, Any] | None:
        """The output hardening the saved model's card records (``ModelCard.output``, read back by
        :func:`~modelsec.models.load_model`: what the model's API reveals); default ``None``, the plain logits."""
        return None

    def wrap_card(self, recorded: ModelCard, base: BaseRecord, base_provenance: dict[str, Any] | None) -> ModelCard:
        """The card of the trained model ``recorded`` hardened without training (``wraps_trained_models``
        defenses: output hardening); :func:`~modelsec.defenses.harden.harden_model_file` reads the base file and
        writes the result. The others train and refuse (:meth:`refuse_wrapping`)."""
        self.refuse_wrapping()
        raise AssertionError("unreachable")

    def refuse_wrapping(self) -> None:
        """Raise :class:`ConfigError` unless this defense hardens trained models without training."""
        if self.wraps_trained_models:
            return
        wrapping = [n for n in DEFENSES.names() if DEFENSES.get(n).wraps_trained_models]
        raise ConfigError(
            f"{self.name} trains a model and cannot harden a trained one as it is (that is for "
            f"{', '.join(wrapping) or 'none of the registered defenses'}); with --base (base=) it trains the base's "
            "architecture from its initial weights"
        )

    def check_data(self, train: Dataset) -> None:
        """Raise :class:`ConfigError` if the configuration does not fit the data (called before training)."""
        return

    def setup(self, module: nn.Module, train: Dataset, *, device: torch.device) -> None:
        """Prepare per-run state from the data (called once before the first epoch, also when resuming)."""
        return

    def batch_loss(
        self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mini-batch loss and the logits the training accuracy counts; default: clean cross-entropy."""
        return cross_entropy_loss(module, x, y, generator)

    def on_epoch_start(self, state: TrainingState) -> None:
        """Called before each epoch, ``state.epoch`` epochs having been completed."""
        return

    def on_epoch_end(self, state: TrainingState) -> str | None:
        """Called after each epoch; returns a reason to stop training now, or ``None``."""
        return None

    def provenance(self) -> dict[str, Any]:
        """The defense's own reports after :meth:`fit` (a privacy report, a teacher's history), which the provenance
        JSON holds as top-level keys (``RunRecord.reports``); default none."""
        return {}

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
        """Train ``module`` in place on ``train`` with this defense; returns the history.

        ``resume``: a :meth:`TrainingState.state_dict` to continue from (a checkpoint). ``after_epoch``: called
        with the state after the defense's own end-of-epoch hook (where a checkpoint is saved).
        """
        self.progress = progress or NullProgress()
        self.check_data(train)
        self.setup(module, train, device=torch.device(device))

        def end(state: TrainingState) -> str | None:
            reason = self.on_epoch_end(state)
            if reason is not None:
                state.history.stop_reason = reason
            if after_epoch is not None:
                after_epoch(state)
            return reason

        return train_classifier(
            module,
            train,
            config=self.config,
            test=test,
            device=device,
            progress=progress,
            batch_loss=self.batch_loss,
            on_epoch_start=self.on_epoch_start,
            on_epoch_end=end,
            resume=resume,
        )


DEFENSES: Registry[type[Defense]] = Registry("defense")


def make_defense(name: str, config: DefenseConfig | Mapping[str, Any] | None = None) -> Defense:
    """The registered defense ``name`` with ``config`` (validated now: a bad option raises :class:`ConfigError`)."""
    return DEFENSES.get(name)(config)
