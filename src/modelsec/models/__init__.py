"""Everything becomes a :class:`Classifier`; a model file's records become its :class:`ModelCard`."""

from modelsec.models.base import Capability, Classifier, eval_mode
from modelsec.models.card import ModelCard
from modelsec.models.formats import ModelFormat, detect_format
from modelsec.models.loading import LoadedModel, bundled_model_path, load_model, read_card
from modelsec.models.zoo import ARCHITECTURES, build_architecture, default_architecture

__all__ = [
    "ARCHITECTURES",
    "Capability",
    "Classifier",
    "LoadedModel",
    "ModelCard",
    "ModelFormat",
    "build_architecture",
    "bundled_model_path",
    "default_architecture",
    "detect_format",
    "eval_mode",
    "load_model",
    "read_card",
]
