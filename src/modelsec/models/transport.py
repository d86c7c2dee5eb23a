"""A model as bytes that travel to another process or machine: safetensors weights plus the model card, no pickle.

An audit's tasks may run on a Ray cluster (:mod:`modelsec.core.executors`), where the classifier must be rebuilt
from data. Pickling the ``nn.Module`` would ship code (the user's, or whatever a class's ``__reduce__`` says) and
tie the worker to the driver's Python objects; instead a :class:`ModelPayload` is one safetensors file held in
memory, as ``modelsec train`` writes one to disk: the weights of a built-in architecture (:mod:`modelsec.models.zoo`)
and, in its header, the :class:`~modelsec.models.card.ModelCard` (architecture, input shape, classes, bounds, the
output hardening of :mod:`modelsec.models.output`) with the classifier's runtime settings beside it (batch size,
capability, the majority-vote passes of a randomised model, the input normalisation of
:mod:`modelsec.models.normalization`, device, name). Reading it parses JSON and tensors only.

Only a classifier that is exactly a built-in architecture with its weights can travel: :meth:`ModelPayload.
from_classifier` raises :class:`NotTransportable` (with the reason) for anything else (a Keras, ONNX or scikit-learn
model, an endpoint, a Python ``nn.Module`` or preprocessing of the user's), and, given probe inputs, checks that the
rebuilt classifier returns the original's logits bit for bit.

>>> import torch
>>> from modelsec.models.zoo import build_architecture
>>> from modelsec.models.card import ModelCard
>>> torch.manual_seed(0) and None
>>> clf = Classifier(build_architecture("mlp", (4,), 3), input_shape=(4,), num_classes=3)
>>> payload = ModelPayload.from_classifier(clf, ModelCard(arch="mlp"))
>>> x = torch.rand(5, 4)
>>> torch.equal(payload.classifier().predict_logits(x), clf.predict_logits(x))
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from modelsec.core.errors import ConfigError, ModelLoadError
from modelsec.core.seeding import seeded
from modelsec.models.base import Capability, Classifier
from modelsec.models.card import ModelCard
from modelsec.models.normalization import Normalization, normalized
from modelsec.models.output import OutputHardening, harden_output
from modelsec.models.torch import METADATA_KEY, load_state_dict_into
from modelsec.models.zoo import build_architecture

RUNTIME_KEY = "modelsec.runtime"
"""The header key of the classifier's runtime settings (JSON), beside the card's (``"modelsec"``)."""


class NotTransportable(Exception):
    """The classifier cannot be rebuilt from weights and a card (the message says why); its tasks run in the
    process that holds it."""


@dataclass(frozen=True)
class ModelPayload:
    """A classifier as one in-memory safetensors file (``data``): the weights of its built-in architecture, and in
    the header its model card and runtime settings (see the module's docstring)."""

    data: bytes

    @classmethod
    def from_classifier(
        cls, classifier: Classifier, card: ModelCard, *, probe: torch.Tensor | None = None
    ) -> ModelPayload:
        """The payload of ``classifier``, whose architecture ``card.arch`` names (the card's shape, classes and
        bounds are taken from the classifier, its output hardening from the module). With ``probe`` (inputs),
        the rebuilt classifier's logits on them must equal the original's, bit for bit (neither query count
        changes). Raises :class:`NotTransportable` when the classifier is not a built-in architecture with its
        weights, or its preprocessing is not a plain normalisation."""
        if not card.arch:
            raise NotTransportable("it records no built-in architecture")
        module: nn.Module = classifier.module
        output = None
        if isinstance(module, OutputHardening):
            output = module.spec()
            module = module.module
        try:
            built = build_architecture(card.arch, classifier.input_shape, classifier.num_classes)
        except ConfigError as e:
            raise NotTransportable(f"the built-in architecture {card.arch!r} does not fit it: {e}") from None
        if type(module) is not type(built) or repr(module) != repr(built):
            raise NotTransportable(f"its module is not the built-in architecture {card.arch!r}")
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        expected = built.state_dict()
        if state.keys() != expected.keys() or any(state[k].shape != expected[k].shape for k in state):
            raise NotTransportable(f"its weights do not fit the built-in architecture {card.arch!r}")
        runtime = {
            "batch_size": classifier.batch_size,
            "capability": classifier.capability.name,
            "votes": classifier.votes,
            "normalize": _normalization(classifier),
            "device": str(classifier.device),
            "name": classifier.name,
        }
        header = replace(
            card,
            input_shape=classifier.input_shape,
            num_classes=classifier.num_classes,
            bounds=classifier.bounds,
            output=output,
        ).to_header()
        metadata = {METADATA_KEY: json.dumps(header, sort_keys=True), RUNTIME_KEY: json.dumps(runtime, sort_keys=True)}
        payload = cls(save_tensors(state, metadata=metadata))
        if probe is not None and not torch.equal(_logits(payload.classifier(), probe), _logits(classifier, probe)):
            raise NotTransportable("rebuilt from its weights, it returns other logits")
        return payload

    def metadata(self) -> dict[str, Any]:
        """The header's two JSON objects: ``{"card": ..., "runtime": ...}``."""
        size = int.from_bytes(self.data[:8], "little")
        try:
            header = json.loads(self.data[8 : 8 + size])["__metadata__"]
            return {"card": json.loads(header[METADATA_KEY]), "runtime": json.loads(header[RUNTIME_KEY])}
        except (ValueError, KeyError, TypeError) as e:
            raise ModelLoadError(f"a malformed model payload: {e}") from None

    @property
    def card(self) -> ModelCard:
        """The model card the payload carries."""
        return ModelCard.from_header(self.metadata()["card"], source="the model payload")

    def classifier(self, device: str | None = None) -> Classifier:
        """The classifier, rebuilt (on ``device``, default the original's): the built-in architecture with the
        weights, its output hardening, normalisation, batch size, capability and votes."""
        meta = self.metadata()
        card, runtime = ModelCard.from_header(meta["card"], source="the model payload"), meta["runtime"]
        assert card.arch and card.input_shape and card.num_classes and card.bounds
        with seeded(0):  # the architecture's initial weights are replaced; the caller's global generator stays
            module: nn.Module = build_architecture(card.arch, card.input_shape, card.num_classes)
        load_state_dict_into(module, load_tensors(self.data), "the model payload")
        if card.output is not None:
            module = harden_output(module, card.output)
        classifier = Classifier(
            module,
            input_shape=card.input_shape,
            num_classes=card.num_classes,
            bounds=card.bounds,
            capability=Capability[runtime["capability"]],
            device=device or runtime["device"],
            batch_size=int(runtime["batch_size"]),
            name=str(runtime["name"]),
            votes=int(runtime["votes"]),
        )
        normalize = runtime["normalize"]
        return classifier if normalize is None else normalized(classifier, normalize["mean"], normalize["std"])


def _normalization(classifier: Classifier) -> dict[str, list[float]] | None:
    """The classifier's input normalisation as numbers (``None``: no preprocessing); other preprocessing is code
    that cannot travel."""
    pre = classifier.preprocess
    if pre is None:
        return None
    if not isinstance(pre, Normalization) or pre.then is not None:
        raise NotTransportable("its input preprocessing is Python code")
    return {"mean": pre.mean.flatten().tolist(), "std": pre.std.flatten().tolist()}


def _logits(classifier: Classifier, x: torch.Tensor) -> torch.Tensor:
    """``classifier.predict_logits(x)`` without counting the queries (a check, not part of the audit)."""
    before = classifier.queries
    try:
        return classifier.predict_logits(x)
    finally:
        classifier.queries = before
