"""Everything becomes a :class:`Classifier`."""

from modelsec.models.base import Capability, Classifier, eval_mode
from modelsec.models.formats import ModelFormat, detect_format
from modelsec.models.loading import LoadedModel, bundled_model_path, load_model
from modelsec.models.zoo import ARCHITECTURES, build_architecture, default_architecture

__all__ = [
    "ARCHITECTURES",
    "Capability",
    "Classifier",
    "LoadedModel",
    "ModelFormat",
    "build_architecture",
    "bundled_model_path",
    "default_architecture",
    "detect_format",
    "eval_mode",
    "load_model",
]
