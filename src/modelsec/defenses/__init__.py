"""Defenses: train a model so that it resists an attack, and record what it is guaranteed to have.

Each defense is registered by name in :data:`DEFENSES` with a typed configuration that is validated when it is
built, before any data is loaded:

>>> from modelsec.defenses import DEFENSES, make_defense
>>> [name for name in ("standard", "pgd-at", "trades", "fgsm-rs") if name in DEFENSES]
['standard', 'pgd-at', 'trades', 'fgsm-rs']
>>> d = make_defense("pgd-at", {"eps": 0.05, "epochs": 4})
>>> d.config.steps, d.guarantees().kind, d.guarantees().threat_model
(7, 'empirical', {'norm': 'linf', 'eps': 0.05})
>>> make_defense("pgd-at", {"eps": -1})
Traceback (most recent call last):
...
modelsec.core.errors.ConfigError: pgd-at: eps must be > 0 (in input units), got -1.0

:func:`harden` trains an architecture with a defense and writes safetensors weights and a provenance JSON.
"""

from __future__ import annotations

from modelsec.defenses import adversarial_training, distillation, dp_sgd, membership, standard
from modelsec.defenses.adversarial_training import (
    FGSMRS,
    PGDAT,
    TRADES,
    AdversarialTraining,
    AdversarialTrainingConfig,
    FGSMRSConfig,
    PGDATConfig,
    TRADESConfig,
    perturb,
)
from modelsec.defenses.base import DEFENSES, Defense, DefenseConfig, Guarantees, make_defense
from modelsec.defenses.checkpoint import Checkpoint, checkpoint_path
from modelsec.defenses.distillation import DefensiveDistillation, DistillationConfig
from modelsec.defenses.dp_sgd import DPSGD, DPSGDDefenseConfig
from modelsec.defenses.harden import harden
from modelsec.defenses.membership import (
    DMP,
    DMPConfig,
    OutputHardeningConfig,
    OutputHardeningDefense,
    Regularised,
    RegularisedConfig,
)
from modelsec.defenses.standard import Standard, StandardConfig

__all__ = [
    "DEFENSES",
    "DMP",
    "DPSGD",
    "FGSMRS",
    "PGDAT",
    "TRADES",
    "AdversarialTraining",
    "AdversarialTrainingConfig",
    "Checkpoint",
    "DMPConfig",
    "DPSGDDefenseConfig",
    "Defense",
    "DefenseConfig",
    "DefensiveDistillation",
    "DistillationConfig",
    "FGSMRSConfig",
    "Guarantees",
    "OutputHardeningConfig",
    "OutputHardeningDefense",
    "PGDATConfig",
    "Regularised",
    "RegularisedConfig",
    "Standard",
    "StandardConfig",
    "TRADESConfig",
    "adversarial_training",
    "checkpoint_path",
    "distillation",
    "dp_sgd",
    "harden",
    "make_defense",
    "membership",
    "perturb",
    "standard",
]
