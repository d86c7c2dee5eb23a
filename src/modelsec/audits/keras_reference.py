"""Reference models of a Keras architecture: the target's own, or one the user gives (``--reference-arch x.keras``),
re-created with fresh seeded weights and trained with modelsec's training loop.

LiRA and RMIA (Carlini et al. 2022; Zarifzadeh et al. 2024) need reference models trained like the target; for a
Keras model that is its architecture trained from its initial weights. :class:`KerasRecipe` holds the architecture
as Keras's configuration (JSON text, so that the recipe pickles into the worker processes that train reference
models), and each reference model is that configuration deserialised, given fresh weights from the model's seed
(:func:`~modelsec.models.adapters.keras.fresh_model`), wrapped as the layout-mapping torch module modelsec trains
(:func:`~modelsec.models.adapters.keras.keras_module`) and trained by
:func:`~modelsec.defenses.training.train_classifier` with the recipe's :class:`TrainingConfig`: Adam and
cross-entropy, as modelsec trains its own models, not the Keras ``fit`` the target may have used (give the epochs,
learning rate and batch size it used).

Threat model: a configuration from a file is checked for code (Lambda layers, custom objects) by the Keras adapter
before it becomes a recipe, unless ``--trust-model``; the worker deserialises it with Keras's ``safe_mode`` on unless
the recipe is ``trusted`` (a trusted file, or the user's own model object).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from modelsec.audits.reference_models import training_record
from modelsec.core.errors import ModelLoadError, printable
from modelsec.data.dataset import Dataset
from modelsec.defenses.training import TrainingConfig
from modelsec.models.adapters import LoadRequest
from modelsec.models.base import Classifier
from modelsec.models.formats import ModelFormat
from modelsec.models.reference_recipe import ReferenceRecipe


@dataclass(frozen=True, kw_only=True)
class KerasRecipe(ReferenceRecipe):
    """A Keras architecture trained from seeded initial weights with modelsec's training loop.

    Args:
        config: the model's Keras configuration, as JSON text (``model.to_json()``).
        name: what the report calls the architecture (``keras:Sequential``).
        source: where the architecture came from (the target, or the file given).
        training: the training settings (its ``seed`` replaced by each reference model's).
        trusted: deserialise with Keras's safe mode off (the configuration may hold Lambda layers or custom
            objects, which must then be importable in the worker processes).
    """

    config: str
    name: str
    source: str
    training: TrainingConfig
    trusted: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "keras_config_sha256": hashlib.sha256(self.config.encode()).hexdigest(),
            "keras": _keras_version(),
            "training": asdict(self.training),
            "trusted": self.trusted,
        }

    def summary(self) -> dict[str, Any]:
        return {"arch": self.name, "epochs": self.training.epochs}

    def record(self) -> dict[str, Any]:
        return {**super().record(), "source": self.source, **training_record(self.training)}

    def build(self, seed: int) -> Any:
        """The architecture as a Keras model with fresh weights drawn from ``seed``."""
        from modelsec.models.adapters.keras import fresh_model, import_keras

        keras = import_keras()
        try:
            model = keras.saving.deserialize_keras_object(json.loads(self.config), safe_mode=not self.trusted)
        except Exception as e:  # Keras's deserialiser: whatever it raises means the configuration cannot be built
            raise ModelLoadError(
                f"Keras could not re-create the architecture of {self.source}: {printable(e)}"
            ) from None
        return fresh_model(model, seed)

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
        from modelsec.defenses.training import train_classifier
        from modelsec.models.adapters.keras import keras_module

        input_shape = tuple(int(s) for s in x_pool.shape[1:])
        module = keras_module(self.build(seed), input_shape)
        train = Dataset(name="reference", x=x_in, y=y_in, num_classes=num_classes, bounds=bounds)
        train_classifier(module, train, config=replace(self.training, seed=seed))
        classifier = Classifier(module, input_shape=input_shape, num_classes=num_classes, bounds=bounds)
        return classifier.predict_logits(x_pool).numpy().astype(np.float32)


def _keras_version() -> str:
    try:
        return importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def keras_model_of(module: nn.Module) -> Any | None:
    """The Keras model behind a target's torch module (the Keras adapter's ``KerasModule``), else ``None``; Keras
    is not imported to answer."""
    if type(module).__name__ == "KerasModule" and type(module).__module__ == "modelsec.models.adapters.keras":
        return module.model
    return None


def keras_architecture(model: Any) -> tuple[str, str]:
    """A Keras model's architecture for a :class:`KerasRecipe`: its configuration (JSON text) and its name."""
    return model.to_json(), f"keras:{type(model).__name__}"


def keras_architecture_of_file(path: Path, fmt: ModelFormat, request: LoadRequest) -> tuple[str, str]:
    """The architecture (:func:`keras_architecture`) in a ``.keras`` / ``.h5`` file, loaded by the Keras adapter:
    its configuration checked for code unless ``request.trust_model``, the data's records mapped to its input and
    its classes checked against the data's (:class:`~modelsec.core.errors.ModelLoadError` otherwise)."""
    from modelsec.models.adapters import keras as keras_adapter

    loaded = keras_adapter.load(path, fmt, request)
    model = keras_model_of(loaded.classifier.module)
    assert model is not None
    return keras_architecture(model)
