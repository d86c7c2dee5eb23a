"""The model card: what a model file written by modelsec records about itself, as one typed, frozen record.

A trained model travels as two files, both written from its :class:`ModelCard`:

- ``OUT`` (safetensors): the weights, and in the header (key ``"modelsec"``, JSON) :meth:`ModelCard.to_header`:
  the architecture, input shape, classes, bounds, class names and the data it was trained on (so ``modelsec audit
  --model OUT`` needs no other flag); when known, the training recipe (``training.config``: the reference models of
  a membership audit follow it), the output hardening (``output``: what the model's API reveals,
  :mod:`modelsec.models.output`) and the defense (``defense``: name, config, :class:`Guarantees`, and for a model
  hardened from another file the ``base`` it came from);
- ``OUT.json``: :meth:`ModelCard.to_provenance`: the same, with the whole training history in place of the recipe
  and the record of the run that made it (:class:`RunRecord`: seed, data hashes, seconds, epochs, device, date,
  versions, and the defense's own reports such as DP-SGD's privacy accounting).

``modelsec train`` writes no defense and no run record (plain training, as it always has); ``modelsec harden``
writes both. Reading is forgiving where files differ and strict where they are wrong: keys this version does not
know are ignored (a later version only adds keys), missing sections are ``None``, and a value of the wrong type is a
:class:`~modelsec.core.errors.ModelLoadError` naming the key.

>>> card = ModelCard(arch="mlp", input_shape=(64,), num_classes=10, bounds=(0.0, 1.0),
...                  data=DataRecord(source="digits", split_seed=0, members_used=898))
>>> header = card.to_header()
>>> header["data"], header["input_shape"]
({'source': 'digits', 'split_seed': 0, 'members_used': 898}, [64])
>>> ModelCard.from_header(header) == card
True
>>> ModelCard.from_header({"arch": "mlp", "num_classes": "ten"}, source="m")
Traceback (most recent call last):
...
modelsec.core.errors.ModelLoadError: 'm' has a malformed modelsec header: num_classes must be an integer, got 'ten'
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from modelsec.core.errors import ModelLoadError, printable
from modelsec.core.records import RecordError, from_dict
from modelsec.data.dataset import Splits


@dataclass(frozen=True, kw_only=True)
class Guarantees:
    """What a trained model is guaranteed to have, as recorded in its file and provenance.

    ``kind``: "none" (no defense), "empirical" (robustness or privacy that only an audit can measure; no
    certificate), "certified" or "differential-privacy" (a proven bound, with its assumptions in ``details``; a
    DP claim's ``epsilon`` and ``delta`` are there). ``threat_model``: the perturbations the model was trained
    against (norm, eps in input units), if any. ``training_attack``: the inner attack of adversarial training, if
    any.
    """

    kind: str
    summary: str
    certified: bool = False
    threat_model: dict[str, Any] | None = None
    training_attack: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingHistory:
    """Per-epoch numbers of one training run.

    ``train_loss`` and ``train_accuracy`` are measured on what the model was trained on (the adversarial examples,
    for adversarial training); ``metrics`` holds further per-epoch series a defense records (for example the PGD
    accuracy of a catastrophic-overfitting check), ``events`` what happened on the way (a collapse detected, best
    weights restored), ``stop_reason`` why training ended before its last epoch (``None``: it ran them all).
    It grows while the model trains (:func:`modelsec.defenses.training.train_classifier`), so it is not frozen.
    """

    config: dict[str, Any]
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0
    metrics: dict[str, list[float]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingHistory:
        """A history from :meth:`to_dict`'s output (a copy: nothing is shared with ``d``)."""
        return from_dict(cls, d)

    @property
    def epochs(self) -> int:
        """Epochs completed."""
        return len(self.train_loss)


@dataclass(frozen=True, kw_only=True)
class DataRecord:
    """The data a model was trained on: the data set's name or file (``source``), the seed of its member /
    non-member / population split, and how many members it trained on (the first ``members_used``). For the
    user's own split (``--members FILE --nonmembers FILE``), ``files``: each split's file, ``{"path", "sha256"}``
    by split name, from which a later audit reads the same split."""

    source: str | None = None
    split_seed: int | None = None
    members_used: int | None = None
    files: dict[str, dict[str, str]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (``files`` only when recorded, so that other records stay as they were)."""
        d = asdict(self)
        if self.files is None:
            del d["files"]
        return d


@dataclass(frozen=True, kw_only=True)
class TrainingRecord:
    """How the model was trained: the recipe (``config``: the training or defense configuration's fields, which
    reference models copy) and, in the provenance only, the history of the run."""

    config: dict[str, Any] = field(default_factory=dict)
    history: TrainingHistory | None = None


@dataclass(frozen=True, kw_only=True)
class BaseRecord:
    """The model file a model was hardened from without training (``harden --base``): its path, its SHA-256 and
    its own defense record (``None``: plain training)."""

    path: str
    sha256: str
    defense: DefenseRecord | None = None


@dataclass(frozen=True, kw_only=True)
class DefenseRecord:
    """The defense a model was made with: its registered name, its configuration's fields, what it guarantees, and
    for a model hardened from a trained file, that ``base``."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    guarantees: Guarantees | None = None
    base: BaseRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "config": copy.deepcopy(self.config),
            "guarantees": None if self.guarantees is None else self.guarantees.to_dict(),
        }
        if self.base is not None:
            base = self.base
            d["base"] = {
                "path": base.path,
                "sha256": base.sha256,
                "defense": None if base.defense is None else base.defense.to_dict(),
            }
        return d


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """The run that wrote a model (provenance only, ``modelsec harden``): the seed, content hashes of the training
    and test data (``None`` when nothing was trained), training seconds and epochs, the epoch a resumed run
    continued after, why training stopped early, the device, the date, the versions, the base's own provenance (a
    model hardened from a file), and the defense's own reports (:meth:`~modelsec.defenses.Defense.provenance`:
    ``dp_sgd``, ``distillation``, ``dmp``, ``regularised``), written as top-level keys of ``OUT.json``."""

    seed: int | None = None
    data_sha256: dict[str, str] | None = None
    training_seconds: float | None = None
    epochs_completed: int | None = None
    resumed_from_epoch: int | None = None
    stop_reason: str | None = None
    device: str | None = None
    created: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    base_provenance: dict[str, Any] | None = None
    reports: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def now(cls, **fields: Any) -> RunRecord:
        """A run record dated now (UTC, to the second), with the versions a model file records (modelsec, torch,
        Python) and the given fields."""
        import platform
        from datetime import datetime, timezone

        import torch

        from modelsec.core.version import __version__

        return cls(
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            versions={"modelsec": __version__, "torch": torch.__version__, "python": platform.python_version()},
            **fields,
        )


HEADER_KEYS = ("training", "arch", "input_shape", "num_classes", "bounds", "class_names", "data", "output", "defense")
"""The keys of a modelsec safetensors header, in the order :meth:`ModelCard.to_header` writes them."""

_RUN_KEYS = tuple(f.name for f in dataclasses.fields(RunRecord) if f.name != "reports")
_DERIVED_KEYS = ("guarantees", "modelsec_version")  # provenance keys written from other fields


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """What a model file records about itself (see the module's docstring for the two files written from it).

    Every field is optional on reading (a file from another tool records nothing); a model written by modelsec has
    at least ``arch``, ``input_shape``, ``num_classes``, ``bounds`` and ``data``. ``output``: the output
    hardening's spec, ``{"kind": ..., <params>}`` as :func:`modelsec.models.output.harden_output` reads it.
    ``run`` and ``modelsec_version`` are written to the provenance only.
    """

    arch: str | None = None
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    bounds: tuple[float, float] | None = None
    class_names: tuple[str, ...] | None = None
    data: DataRecord | None = None
    training: TrainingRecord | None = None
    output: dict[str, Any] | None = None
    defense: DefenseRecord | None = None
    run: RunRecord | None = None
    modelsec_version: str | None = None

    @classmethod
    def for_training(
        cls,
        arch: str,
        splits: Splits,
        *,
        members_used: int,
        recipe: Mapping[str, Any] | None = None,
        history: TrainingHistory | None = None,
    ) -> ModelCard:
        """The card of ``arch`` trained on the first ``members_used`` members of ``splits`` with ``recipe`` (the
        training configuration's fields; ``None``: not recorded) and, once trained, its ``history``."""
        return cls(
            arch=arch,
            input_shape=tuple(splits.input_shape),
            num_classes=splits.num_classes,
            bounds=(splits.bounds[0], splits.bounds[1]),
            class_names=tuple(splits.members.class_names) if splits.members.class_names else None,
            data=DataRecord(
                source=splits.source,
                split_seed=splits.seed,
                members_used=members_used,
                files={name: {"path": f.path, "sha256": f.sha256} for name, f in splits.files.items()} or None,
            ),
            training=None if recipe is None else TrainingRecord(config=dict(recipe), history=history),
        )

    @property
    def recipe(self) -> dict[str, Any]:
        """The recorded training configuration's fields (``{}`` when none is recorded)."""
        return {} if self.training is None else dict(self.training.config)

    @property
    def guarantees(self) -> Guarantees | None:
        """The defense's guarantees, if the card records a defense that states them."""
        return None if self.defense is None else self.defense.guarantees

    def as_plain_training(self) -> ModelCard:
        """This card as ``modelsec train`` writes it: without the defense and the run record."""
        return replace(self, defense=None, run=None)

    # ------------------------------------------------------------------------------------------- the header

    def to_header(self) -> dict[str, Any]:
        """The JSON object of the safetensors header: the architecture, shape, classes, bounds, class names and data
        (``null`` when unknown), then ``training`` (the recipe only), ``output`` and ``defense`` when recorded."""
        header: dict[str, Any] = {}
        if self.training is not None:
            header["training"] = {"config": copy.deepcopy(self.training.config)}
        header.update(
            arch=self.arch,
            input_shape=None if self.input_shape is None else list(self.input_shape),
            num_classes=self.num_classes,
            bounds=None if self.bounds is None else list(self.bounds),
            class_names=None if self.class_names is None else list(self.class_names),
            data=None if self.data is None else self.data.to_dict(),
        )
        if self.output is not None:
            header["output"] = copy.deepcopy(self.output)
        if self.defense is not None:
            header["defense"] = self.defense.to_dict()
        return header

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *, source: str = "the model file") -> ModelCard:
        """The card a parsed safetensors header records (``{}``: nothing recorded). Unknown keys are ignored; a
        value of the wrong type raises :class:`ModelLoadError` naming ``source`` and the key."""
        return _read(cls, header, source, "modelsec header")

    # --------------------------------------------------------------------------------------- the provenance

    def to_provenance(self) -> dict[str, Any]:
        """The JSON object of ``OUT.json``: the header's keys with the training history in place of the recipe,
        then the run record's (with the defense's ``guarantees`` repeated at the top), ``modelsec_version`` and
        the defense's reports."""
        provenance: dict[str, Any] = {}
        if self.training is not None or self.run is not None:
            history = None if self.training is None else self.training.history
            provenance["training"] = None if history is None else history.to_dict()
        provenance.update((k, v) for k, v in self.to_header().items() if k != "training")
        run = self.run
        if run is not None:
            provenance.update(
                seed=run.seed,
                **({} if run.data_sha256 is None else {"data_sha256": dict(run.data_sha256)}),
                training_seconds=run.training_seconds,
                epochs_completed=run.epochs_completed,
                resumed_from_epoch=run.resumed_from_epoch,
                stop_reason=run.stop_reason,
                guarantees=None if self.guarantees is None else self.guarantees.to_dict(),
            )
            if self.defense is not None and self.defense.base is not None:
                provenance["base_provenance"] = copy.deepcopy(run.base_provenance)
            if run.device is not None:
                provenance["device"] = run.device
            provenance.update(created=run.created, versions=dict(run.versions))
        if self.modelsec_version is not None:
            provenance["modelsec_version"] = self.modelsec_version
        if run is not None:
            if clash := sorted(set(run.reports) & set(provenance)):
                raise ValueError(f"the defense's reports {clash} clash with the provenance's own keys")  # a bug
            provenance.update(copy.deepcopy(run.reports))
        return provenance

    @classmethod
    def from_provenance(cls, provenance: Mapping[str, Any], *, source: str = "the provenance") -> ModelCard:
        """The card a parsed ``OUT.json`` records: its training history (with the recipe it holds) and, when it
        has one, its run record, whose reports are the keys this version does not otherwise know. Raises
        :class:`ModelLoadError` like :meth:`from_header`."""
        if not isinstance(provenance, Mapping):
            raise ModelLoadError(f"{printable(source)!r} has a malformed provenance: not a JSON object")
        header = {k: v for k, v in provenance.items() if k in HEADER_KEYS and k != "training"}
        card = _read(cls, header, source, "provenance")
        training = provenance.get("training")
        try:
            history = None if training is None else from_dict(TrainingHistory, training, strict=True)
            version = provenance.get("modelsec_version")
            if version is not None and not isinstance(version, str):
                raise RecordError(f"modelsec_version must be a str, got {version!r}")
            run = None
            if any(k in provenance for k in _RUN_KEYS):
                known = {*HEADER_KEYS, *_RUN_KEYS, *_DERIVED_KEYS}
                reports = {k: v for k, v in provenance.items() if k not in known}
                run = from_dict(RunRecord, {**provenance, "reports": reports}, strict=True)
        except RecordError as e:
            raise ModelLoadError(_malformed(source, "provenance", e)) from None
        record = None if history is None else TrainingRecord(config=dict(history.config), history=history)
        return replace(card, training=record, run=run, modelsec_version=version)


def _read(cls: type[ModelCard], values: Mapping[str, Any], source: str, what: str) -> ModelCard:
    if not isinstance(values, Mapping):
        raise ModelLoadError(f"{printable(source)!r} has a malformed {what}: not a JSON object")
    known = {k: v for k, v in values.items() if k in HEADER_KEYS}
    try:
        return from_dict(cls, known, strict=True)
    except RecordError as e:
        raise ModelLoadError(_malformed(source, what, e)) from None


def _malformed(source: str, what: str, error: Exception) -> str:
    return f"{printable(source)!r} has a malformed {what}: {printable(error)}"
