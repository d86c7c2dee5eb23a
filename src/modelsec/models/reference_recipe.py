"""How to train another model of the target's kind: the recipe of the reference (shadow) models.

The reference-model membership attacks (LiRA, Carlini et al. 2022, "Membership Inference Attacks From First
Principles"; RMIA, Zarifzadeh et al. 2024, "Low-Cost High-Power Membership Inference Attacks"; the shadow models of
Shokri et al. 2017) are only as strong as the reference models are like the target: same model family, same
training. A :class:`ReferenceRecipe` is that training, as an object the audit hands to
:func:`modelsec.audits.reference_models.train_reference_models`, which calls :meth:`ReferenceRecipe.train_logits`
once per reference model (in worker processes, so a recipe must pickle).

The recipes that exist, and where each is built:

=====================  ============================================================  ============================
recipe                 what a reference model is                                     built by
=====================  ============================================================  ============================
``BuiltinRecipe``      a built-in architecture trained with a ``TrainingConfig``     the audit (audits/runner.py)
                       (:mod:`modelsec.audits.reference_models`)
``EstimatorRecipe``    ``sklearn.base.clone`` of the target estimator, refitted      the scikit-learn adapter
                       (:mod:`modelsec.models.adapters.sklearn`)
``KerasRecipe``        a Keras architecture (the target's own, or a ``.keras`` file  the audit (audits/runner.py)
                       given) trained from seeded initial weights with a
                       ``TrainingConfig`` (:mod:`modelsec.audits.keras_reference`)
=====================  ============================================================  ============================

Which recipe an audit uses (the options given, the adapter's, the recorded one, the target's own architecture,
or a guess) is decided in :func:`modelsec.audits.reference_choice.choose_recipe`.

**Adding a recipe**: subclass
:class:`ReferenceRecipe` in the lowest layer that has what its training needs (an adapter module when the
framework fits itself, as scikit-learn does; ``audits/`` when it needs modelsec's training loop), implement
:meth:`~ReferenceRecipe.describe`, :meth:`~ReferenceRecipe.summary` and :meth:`~ReferenceRecipe.train_logits`, and
let the adapter attach it to the :class:`~modelsec.models.loading.LoadedModel` it returns
(``reference_recipe=...``): the audit then uses it instead of guessing one. Import the framework inside the methods
(frameworks are optional extras).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, kw_only=True)
class ReferenceRecipe(abc.ABC):
    """The training of one reference model, for any number of them (each with its own records and seed).

    Args:
        guessed: the recipe is modelsec's guess, not the target's own (an architecture or training settings that
            the model file does not record and the user did not give); the report says so at the top of its
            privacy section.
        guesses: what was guessed, in words, one entry each (the architecture; the training settings).
        how_to_set: what the user does to give the real recipe (the options to pass), shown with a guess.
    """

    guessed: bool = False
    guesses: tuple[str, ...] = ()
    how_to_set: str = ""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Plain JSON values that identify the recipe: two recipes with the same description train the same models
        (from the same records and seed). The reference models' signal cache keys on it."""

    @abc.abstractmethod
    def summary(self) -> dict[str, Any]:
        """What a report says about the recipe: short plain values, merged into the privacy result's
        ``compute``."""

    def record(self) -> dict[str, Any]:
        """What ``result.json`` records of the recipe (``privacy.reference_recipe``): :meth:`summary`, whether it
        was guessed, what was, and how to set it; a recipe that trains with settings adds them (``epochs``,
        ``lr``, ``batch_size``, ...)."""
        return {
            **self.summary(),
            "guessed": self.guessed,
            "guesses": list(self.guesses),
            "how_to_set": self.how_to_set,
        }

    @abc.abstractmethod
    def train_logits(
        self,
        x_in: np.ndarray,
        y_in: np.ndarray,
        x_pool: np.ndarray,
        *,
        num_classes: int,
        bounds: tuple[float, float],
        seed: int,
    ) -> np.ndarray:
        """Train one reference model on ``(x_in, y_in)`` (every random choice from ``seed``) and return its logits
        on ``x_pool``: float32, shape ``(len(x_pool), num_classes)``. Inputs are records as modelsec holds them
        (``(n, *input_shape)``, inside ``bounds``); labels are ``0..num_classes-1``."""
