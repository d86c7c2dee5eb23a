"""Which recipe an audit's reference models follow, and whether it is a guess.

A reference-model attack (LiRA, Carlini et al. 2022; RMIA, Zarifzadeh et al. 2024) is only as strong as its
reference models are like the target: trained on a model a different architecture or for a tenth of the epochs,
they can score below the plain loss threshold. So the recipe is chosen in this order, and what had to be guessed
is said (:attr:`ReferenceRecipe.guessed <modelsec.models.reference_recipe.ReferenceRecipe.guessed>`; the report
shows it at the top of its privacy section):

architecture
    ``--reference-arch`` (a built-in architecture's name; a ``.keras`` / ``.h5`` file, whose architecture is
    trained from fresh weights; a modelsec safetensors file, whose recorded architecture is used); else the
    recipe the model's adapter brings (a scikit-learn estimator's clones, exact); else the target's own
    architecture when modelsec can train it (a built-in one, or a Keras model); else the built-in architecture for
    the input shape: a **guess**.
training settings
    each of ``--reference-epochs``, ``--reference-lr``, ``--reference-batch-size``, ``--reference-weight-decay``,
    ``--reference-lr-schedule`` given; else the target's recorded recipe (a model modelsec trained records it),
    else the one the ``--reference-arch`` safetensors file records; else modelsec's defaults. Epochs, learning rate
    and batch size left at the defaults are a **guess** (weight decay and the schedule are shown, not flagged).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from modelsec.audits.keras_reference import KerasRecipe, keras_architecture, keras_architecture_of_file, keras_model_of
from modelsec.audits.reference_models import BuiltinRecipe
from modelsec.core.errors import ConfigError, ModelsecError, printable
from modelsec.defenses.training import TrainingConfig
from modelsec.models.adapters import LoadRequest
from modelsec.models.card import ModelCard
from modelsec.models.formats import ModelFormat
from modelsec.models.loading import check_loadable, read_card
from modelsec.models.reference_recipe import ReferenceRecipe
from modelsec.models.zoo import ARCHITECTURES, default_architecture
from modelsec.results.audit import ModelInfo

GUESSED_SETTINGS = {"epochs": "epochs", "lr": "learning rate", "batch_size": "batch size"}
"""The training settings whose default is reported as a guess, with their names in words."""

HOW_TO_SET_ARCH = (
    "--reference-arch NAME|FILE (a built-in architecture, see `modelsec list`, or a .keras file of the target's "
    "architecture)"
)
HOW_TO_SET_TRAINING = (
    "--reference-epochs N, --reference-lr LR and --reference-batch-size N as the target was trained (also "
    "--reference-weight-decay, --reference-lr-schedule)"
)


def how_to_set(*, architecture: bool, training: bool) -> str:
    """What the user passes to give the recipe, for what was guessed.

    >>> how_to_set(architecture=False, training=True)  # doctest: +ELLIPSIS
    'pass --reference-epochs N, ... (in Python: the same names, reference_epochs=...); a model that modelsec ...'
    """
    options = [HOW_TO_SET_ARCH] * architecture + [HOW_TO_SET_TRAINING] * training
    python = "reference_arch=..." if architecture else "reference_epochs=..."
    return (
        f"pass {'; '.join(options)} (in Python: the same names, {python}); a model that modelsec trained records its "
        "own recipe"
    )


def choose_recipe(
    *,
    arch_option: str | None,
    overrides: Mapping[str, Any],
    info: ModelInfo,
    card: ModelCard,
    own: ReferenceRecipe | None,
    module: nn.Module,
    request: LoadRequest,
) -> tuple[ReferenceRecipe, list[str]]:
    """The reference models' recipe (see the module) and notes for the privacy result.

    Args:
        arch_option: ``--reference-arch``, or ``None``.
        overrides: the training settings given, by :class:`TrainingConfig` field (``--reference-epochs`` ...).
        info, card: the target's model info and the card its file records.
        own: the recipe the target's adapter brought, or ``None``.
        module: the target's torch module (a Keras model's architecture is read from it).
        request: the data's shape, classes and bounds, ``--trust-model`` and the device, for loading a file given
            as ``--reference-arch``.
    """
    if own is not None and arch_option is None:
        notes = []
        if overrides:
            given = ", ".join("--reference-" + k.replace("_", "-") for k in overrides)
            verb = "does" if len(overrides) == 1 else "do"
            described = own.summary().get("recipe") or type(own).__name__
            notes.append(f"{given} {verb} not apply to this model's reference models: they follow its own recipe "
                         f"({described})")  # fmt: skip
        return own, notes
    recorded = dict(card.recipe)
    if arch_option is not None:
        arch_recipe = _given_architecture(arch_option, request)
        arch_guess = None
    else:
        arch_recipe, arch_guess = _target_architecture(info, module, request)
    if not recorded and isinstance(arch_recipe, _RecordedArch):
        recorded = arch_recipe.recipe
    training = _training(recorded, overrides)
    guesses = [] if arch_guess is None else [arch_guess]
    missing = [k for k in GUESSED_SETTINGS if k not in recorded and k not in overrides]
    if missing:
        defaults = ", ".join(f"{GUESSED_SETTINGS[k]} {getattr(training, k):g}" for k in missing)
        guesses.append(f"the training settings {defaults} (modelsec's defaults: the model records no recipe)")
    how = how_to_set(architecture=arch_guess is not None, training=bool(missing)) if guesses else ""
    recipe: ReferenceRecipe
    if isinstance(arch_recipe, _KerasArch):
        keras = arch_recipe
        recipe = KerasRecipe(
            config=keras.config, name=keras.name, source=keras.source, trusted=keras.trusted, training=training,
            guessed=bool(guesses), guesses=tuple(guesses), how_to_set=how,
        )  # fmt: skip
    else:
        recipe = BuiltinRecipe(
            arch=arch_recipe.arch, training=training, guessed=bool(guesses), guesses=tuple(guesses), how_to_set=how
        )
    return recipe, []


@dataclasses.dataclass(frozen=True)
class _BuiltinArch:
    arch: str


@dataclasses.dataclass(frozen=True)
class _RecordedArch(_BuiltinArch):
    """A built-in architecture recorded by a modelsec safetensors file, with the training recipe it records."""

    recipe: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class _KerasArch:
    """A Keras architecture: its configuration (JSON), name, where it came from, and whether it may hold code."""

    config: str
    name: str
    source: str
    trusted: bool


def _training(recorded: Mapping[str, Any], overrides: Mapping[str, Any]) -> TrainingConfig:
    known = {f.name for f in dataclasses.fields(TrainingConfig)} - {"seed"}
    return TrainingConfig(**({k: v for k, v in recorded.items() if k in known} | dict(overrides)))


def _target_architecture(
    info: ModelInfo, module: nn.Module, request: LoadRequest
) -> tuple[_BuiltinArch | _KerasArch, str | None]:
    """The target's own architecture when modelsec can train it, else the default one and the guess, in words."""
    if info.arch is not None and info.arch in ARCHITECTURES:
        return _BuiltinArch(info.arch), None
    keras_model = keras_model_of(module)
    if keras_model is not None:  # the user's own object, or a file already checked for code
        config, name = keras_architecture(keras_model)
        return _KerasArch(config, name, "the target's own architecture", request.trust_model or info.path is None), None
    arch = default_architecture(tuple(info.input_shape))
    why = "the model is neither a built-in architecture nor a Keras model"
    return _BuiltinArch(arch), f"the architecture {arch} ({why})"


def _given_architecture(option: str, request: LoadRequest) -> _BuiltinArch | _KerasArch:
    """``--reference-arch``: a built-in architecture's name, or a file (see the module)."""
    if option in ARCHITECTURES:
        return _BuiltinArch(option)
    path = Path(option)
    where = printable(option)
    if not path.exists():
        raise ConfigError(
            f"--reference-arch {where!r} is neither a built-in architecture ({', '.join(ARCHITECTURES.names())}) "
            "nor a file; give one of those names, a .keras file of the target's architecture, or a modelsec "
            "safetensors file"
        )
    try:
        fmt = check_loadable(path, trust_model=request.trust_model)
        if fmt in (ModelFormat.KERAS, ModelFormat.KERAS_H5):
            config, name = keras_architecture_of_file(path, fmt, request)
            return _KerasArch(config, name, str(path), request.trust_model)
        if fmt is ModelFormat.SAFETENSORS:
            card = read_card(path, trust_model=request.trust_model)
            if card.arch is None or card.arch not in ARCHITECTURES:
                raise ConfigError(
                    f"--reference-arch {where!r} records no built-in architecture (it records {card.arch!r}); "
                    "give the architecture's name (modelsec list) or a .keras file"
                )
            return _RecordedArch(card.arch, dict(card.recipe))
    except ModelsecError as e:
        raise type(e)(f"--reference-arch: {e}") from None
    raise ConfigError(
        f"--reference-arch {where!r} is a {fmt.value} file, which records no architecture modelsec can train from "
        "its initial weights; give a built-in architecture's name (modelsec list), a .keras file or a modelsec "
        "safetensors file"
    )
