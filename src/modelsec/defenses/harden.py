"""``harden``: train an architecture with a defense and save it with its provenance.

Writes, for ``out = models/at.safetensors``:

- ``models/at.safetensors``: the weights; the header records the architecture, input shape, classes, bounds, class
  names and data split (so ``modelsec audit --model`` needs no other flag) and ``defense`` (name, config,
  guarantees);
- ``models/at.safetensors.json``: the provenance: the same metadata plus the seed, the data hashes, the training
  seconds and history (with any catastrophic-overfitting event), the guarantees and the versions;
- ``models/at.safetensors.ckpt`` while training: the per-epoch checkpoint (:mod:`modelsec.defenses.checkpoint`),
  resumed by a rerun of the same command and deleted once the model is saved.

The architecture trained is a built-in one (``arch``), or the user's own (``base``, :class:`Architecture`): a
Keras model file (``.keras`` / ``.h5``, checked for code as the Keras adapter checks it) re-created with freshly
initialised weights and trained through :func:`~modelsec.models.adapters.keras.keras_module` (its parameters are
the Keras variables, so the torch optimizers update them in place), then saved in its own format: ``models/at.keras``
with the card as the archive's ``modelsec.json`` entry, the provenance in ``models/at.keras.json``; or a modelsec
safetensors file, whose recorded architecture is trained anew.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from modelsec.core.errors import ConfigError
from modelsec.core.progress import NullProgress, Progress
from modelsec.data.dataset import Splits
from modelsec.data.user_split import SplitFiles
from modelsec.defenses.base import Defense, DefenseConfig, make_defense
from modelsec.defenses.checkpoint import Checkpoint, checkpoint_path
from modelsec.defenses.training import (
    check_outputs,
    check_run_options,
    save_model,
    training_set,
    write_provenance,
)
from modelsec.models.card import BaseRecord, DefenseRecord, ModelCard, RunRecord
from modelsec.models.formats import ModelFormat

KERAS_SUFFIX = ".keras"


@dataclass(frozen=True)
class Architecture:
    """What ``harden`` trains from its initial weights: a built-in architecture (``name``), or the user's own Keras
    model (``keras_model``, from the file ``source``; ``name`` is then ``keras:<class>``)."""

    name: str | None
    keras_model: Any = None
    source: dict[str, str] | None = None

    @property
    def is_keras(self) -> bool:
        return self.keras_model is not None

    def check_output(self, out: Path) -> None:
        """:class:`ConfigError` for an output file of another format than the model's own: a Keras model stays a
        ``.keras`` archive, any other is written as safetensors (which a ``.keras`` name would misdescribe)."""
        if self.is_keras and out.suffix != KERAS_SUFFIX:
            raise ConfigError(
                f"--base is a Keras model, saved in its own format: name --out *{KERAS_SUFFIX}, not {out.name!r}"
            )
        if not self.is_keras and out.suffix == KERAS_SUFFIX:
            raise ConfigError(
                f"--out {out.name!r} names a Keras archive, but this model is written as safetensors; name it "
                "*.safetensors (a Keras model is trained with --base model.keras)"
            )

    def build(self, splits: Splits, seed: int) -> tuple[str, nn.Module]:
        """The architecture's name and a module of it with freshly initialised weights (the same for the same
        ``seed``), for the data's input shape and classes."""
        from modelsec.core.seeding import seeded
        from modelsec.models.zoo import build_architecture, default_architecture

        if not self.is_keras:
            name = self.name or default_architecture(splits.input_shape)
            with seeded(seed):
                return name, build_architecture(name, splits.input_shape, splits.num_classes)
        import torch

        from modelsec.models.adapters.keras import fresh_model, keras_module

        assert self.name is not None
        with seeded(seed):
            module = keras_module(fresh_model(self.keras_model, seed), tuple(splits.input_shape))
            with torch.no_grad():
                classes = int(module(torch.zeros((1, *splits.input_shape))).shape[1])
        if classes != splits.num_classes:
            raise ConfigError(
                f"the Keras model --base has {classes} outputs but the data have {splits.num_classes} classes"
            )
        return self.name, module

    def save(self, module: nn.Module, out: Path, card: ModelCard) -> None:
        """Write the trained ``module`` to ``out`` in the model's format, and ``OUT.json``."""
        if not self.is_keras:
            save_model(module, out, card)
            return
        from modelsec.models.adapters.keras import save_keras

        save_keras(module.model, out, card.to_header())  # the KerasModule of :meth:`build`
        write_provenance(out, card)


def architecture(
    base: Path | None, arch: str | None, *, trust_model: bool = False, device: str = "cpu"
) -> Architecture:
    """The architecture ``harden`` trains: ``arch`` (a built-in name; ``None``: the default for the data), or the
    one of the model file ``base``: a Keras file (checked, then loaded without its training configuration) or a
    safetensors file written by modelsec (its recorded architecture). :class:`ConfigError` for another format or
    an ``arch`` that contradicts the base; :class:`UnsafeModelError` for a Keras file holding code without
    ``trust_model``."""
    if base is None:
        return Architecture(arch)
    from modelsec.models.loading import check_loadable, read_card, sha256_file

    if not base.is_file():
        raise ConfigError(f"the base model {str(base)!r} does not exist")
    fmt = check_loadable(base, trust_model=trust_model)
    if fmt in (ModelFormat.KERAS, ModelFormat.KERAS_H5):
        from modelsec.models.adapters.keras import load_keras_model

        if arch is not None:
            raise ConfigError(f"--arch {arch} and --base {base.name} both name the architecture; give one")
        model, digest = load_keras_model(base, fmt, trust_model=trust_model, device=device)
        return Architecture(
            f"keras:{type(model).__name__}", keras_model=model, source={"path": str(base), "sha256": digest}
        )
    if fmt is ModelFormat.SAFETENSORS:
        recorded = read_card(base).arch
        if not recorded:
            raise ConfigError(f"{str(base)!r} does not record its architecture; train a built-in one with --arch")
        if arch is not None and arch != recorded:
            raise ConfigError(f"--arch {arch} contradicts the architecture {recorded!r} recorded in {str(base)!r}")
        return Architecture(recorded, source={"path": str(base), "sha256": sha256_file(base)})
    raise ConfigError(
        f"--base {str(base)!r} is a {fmt.value} file; a training defense retrains --base from its initial weights, "
        "which modelsec can do for a Keras model (.keras, .h5) or a safetensors file it wrote"
    )


def harden(
    defense: str,
    *,
    data: str | Splits | SplitFiles,
    arch: str | None,
    out: str | Path,
    config: Mapping[str, Any] | DefenseConfig | None = None,
    split_seed: int = 0,
    members: int | None = None,
    data_dir: str | None = None,
    label_column: str = "label",
    bounds: tuple[float, float] | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    overwrite: bool = False,
    resume: bool = True,
    base: str | Path | None = None,
    trust_model: bool = False,
) -> dict[str, Any]:
    """Train the architecture ``arch`` on the data's members split with the registered ``defense`` and save it.

    Args:
        defense: a name in :data:`~modelsec.defenses.DEFENSES` (``modelsec list defenses``).
        data: a data set name or file, the user's own split (:class:`~modelsec.data.user_split.SplitFiles`), or
            :class:`Splits`; training uses the members split (its first ``members`` records if given), the
            non-members give the per-epoch test accuracy.
        arch: a built-in architecture (``None``: small-cnn for images, mlp otherwise).
        out: the weights file; the provenance goes to ``OUT.json``, the checkpoint to ``OUT.ckpt``.
        config: the defense's options (a dict, or its config dataclass), validated before anything else runs.
        resume: continue from ``OUT.ckpt`` when it is a checkpoint of this same run (defense, config,
            architecture, data); ``False`` ignores and replaces it.
        base: with a defense that wraps trained models (output-hardening), harden this trained model file
            without training (``data``, ``arch`` and the data options are then unused, the base file's own records
            are kept); with a training defense, the architecture to train from its initial weights: a Keras file
            (written as ``.keras``, ``out`` must end so) or a safetensors file written by modelsec.
        trust_model: allow a Keras ``base`` that holds code (a Lambda layer, custom objects).

    Returns the provenance written to ``OUT.json`` (:meth:`~modelsec.models.card.ModelCard.to_provenance`).
    Raises :class:`~modelsec.core.errors.ConfigError` for a bad option, an existing output without ``overwrite``,
    or a checkpoint of another run.

    """
    impl = make_defense(defense, config)
    if base is not None and impl.wraps_trained_models:
        return harden_model_file(impl, Path(base), Path(out), overwrite=overwrite).to_provenance()
    card = train_and_record(
        impl,
        data=data,
        arch=architecture(None if base is None else Path(base), arch, trust_model=trust_model, device=device),
        out=Path(out),
        split_seed=split_seed,
        members=members,
        data_dir=data_dir,
        label_column=label_column,
        bounds=bounds,
        device=device,
        progress=progress,
        overwrite=overwrite,
        resume=resume,
    )
    return card.to_provenance()


def train_and_record(
    impl: Defense,
    *,
    data: str | Splits | SplitFiles,
    arch: str | Architecture | None,
    out: Path,
    split_seed: int = 0,
    members: int | None = None,
    data_dir: str | None = None,
    label_column: str = "label",
    bounds: tuple[float, float] | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    overwrite: bool = False,
    resume: bool = True,
    plain: bool = False,
) -> ModelCard:
    """The one training path of ``modelsec harden`` and ``modelsec train``: train ``arch`` on the members split
    with the defense ``impl``, save the weights and ``OUT.json`` from the model's :class:`ModelCard`, and return
    the card.

    ``plain`` (``modelsec train``, which is ``harden --defense standard``): no checkpoint, and the card
    :meth:`~ModelCard.as_plain_training`, without the defense and run records. Otherwise the run checkpoints
    itself to ``OUT.ckpt`` after each epoch and, with ``resume``, continues from a checkpoint of the same run.
    """
    from modelsec.core.version import __version__
    from modelsec.data import load_splits

    progress = progress or NullProgress()
    cfg = impl.config
    model_arch = arch if isinstance(arch, Architecture) else Architecture(arch)
    model_arch.check_output(out)
    check_outputs(out, overwrite=overwrite)
    check_run_options(members=members, device=device, split_seed=split_seed)
    if isinstance(data, Splits):
        splits = data
    else:
        splits = load_splits(data, seed=split_seed, data_dir=data_dir, label_column=label_column, bounds=bounds)
    train = training_set(splits, members)
    impl.use_population(splits.population)
    impl.check_data(train)
    arch_name, module = model_arch.build(splits, cfg.seed)

    data_hashes = {"train": train.sha256(), "test": splits.nonmembers.sha256()}
    checkpoint = None if plain else _checkpoint(impl, arch_name, splits, data_hashes, out, model_arch.source)
    state = checkpoint.load() if checkpoint is not None and resume else None
    if checkpoint is not None and not resume:
        checkpoint.delete()
    resumed_from = int(state["epoch"]) if state is not None else 0
    if checkpoint is not None and resumed_from:
        progress.note(f"resuming from {checkpoint.path} after epoch {resumed_from}/{cfg.epochs}")

    history = impl.fit(
        module,
        train,
        test=splits.nonmembers,
        device=device,
        progress=progress,
        resume=state,
        after_epoch=None if checkpoint is None else checkpoint.save,
    )
    card = replace(
        ModelCard.for_training(arch_name, splits, members_used=len(train), recipe=cfg.to_dict(), history=history),
        output=impl.output_spec(),
        defense=DefenseRecord(name=impl.name, config=cfg.to_dict(), guarantees=impl.guarantees()),
        run=RunRecord.now(
            seed=cfg.seed,
            data_sha256=data_hashes,
            training_seconds=history.seconds,
            epochs_completed=history.epochs,
            resumed_from_epoch=resumed_from or None,
            stop_reason=history.stop_reason,
            device=device,
            reports={
                **impl.provenance(),
                **({} if model_arch.source is None else {"architecture_source": dict(model_arch.source)}),
            },
        ),
        modelsec_version=__version__,
    )
    if plain:
        card = card.as_plain_training()
    model_arch.save(module, out, card)
    if checkpoint is not None:
        checkpoint.delete()
    return card


def _checkpoint(
    impl: Defense,
    arch: str,
    splits: Splits,
    data_hashes: dict[str, str],
    out: Path,
    source: dict[str, str] | None = None,
) -> Checkpoint:
    """The per-epoch checkpoint ``OUT.ckpt`` of this run, identified by the defense, its config, the architecture
    (and the file it came from), the data's shape and bounds and the data's content hashes."""
    run: dict[str, Any] = {
        "defense": impl.name,
        "config": impl.config.to_dict(),
        "arch": arch,
        "input_shape": list(splits.input_shape),
        "num_classes": splits.num_classes,
        "bounds": list(splits.bounds),
        "data_sha256": data_hashes,
    }
    if source is not None:
        run["architecture_sha256"] = source["sha256"]
    return Checkpoint(checkpoint_path(out), run)


def harden_model_file(impl: Defense, base: Path, out: Path, *, overwrite: bool = False) -> ModelCard:
    """``harden --base``: harden the trained model file ``base`` (safetensors written by modelsec) with a defense
    that wraps trained models (:meth:`~modelsec.defenses.base.Defense.wrap_card`), without training: its weights
    go unchanged to ``out`` with the new card; ``OUT.json`` records the base's hash and its own provenance."""
    import json

    from modelsec.defenses.training import output_paths
    from modelsec.models.loading import check_loadable, sha256_file
    from modelsec.models.torch import load_state_dict_into, read_safetensors
    from modelsec.models.zoo import build_architecture

    impl.refuse_wrapping()
    check_outputs(out, overwrite=overwrite)
    if not base.is_file():
        raise ConfigError(f"the base model {str(base)!r} does not exist")
    if base.resolve() == out.resolve():
        raise ConfigError("the hardened model must go to another file than its base (--out)")
    if check_loadable(base, trust_model=False) is not ModelFormat.SAFETENSORS:
        raise ConfigError(f"the base model {str(base)!r} must be a safetensors file written by modelsec")
    state, header = read_safetensors(base)
    recorded = ModelCard.from_header(header, source=str(base))
    base_json = output_paths(base)[1]
    record = BaseRecord(path=str(base), sha256=sha256_file(base), defense=recorded.defense)
    card = impl.wrap_card(
        recorded, record, json.loads(base_json.read_text(encoding="utf-8")) if base_json.is_file() else None
    )
    assert card.arch and card.input_shape and card.num_classes
    module = build_architecture(card.arch, card.input_shape, card.num_classes)
    load_state_dict_into(module, state, str(base))
    save_model(module, out, card)
    return card
