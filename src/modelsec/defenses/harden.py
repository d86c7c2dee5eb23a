"""``harden``: train an architecture with a defense and save it with its provenance.

Writes, for ``out = models/at.safetensors``:

- ``models/at.safetensors``: the weights; the header records the architecture, input shape, classes, bounds, class
  names and data split (so ``modelsec audit --model`` needs no other flag) and ``defense`` (name, config,
  guarantees);
- ``models/at.safetensors.json``: the provenance: the same metadata plus the seed, the data hashes, the training
  seconds and history (with any catastrophic-overfitting event), the guarantees and the versions;
- ``models/at.safetensors.ckpt`` while training: the per-epoch checkpoint (:mod:`modelsec.defenses.checkpoint`),
  resumed by a rerun of the same command and deleted once the model is saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from modelsec.core.progress import NullProgress, Progress
from modelsec.data.dataset import Splits
from modelsec.defenses.base import Defense, DefenseConfig, make_defense
from modelsec.defenses.checkpoint import Checkpoint, checkpoint_path
from modelsec.defenses.training import check_outputs, check_run_options, save_model, training_set
from modelsec.models.card import BaseRecord, DefenseRecord, ModelCard, RunRecord


def harden(
    defense: str,
    *,
    data: str | Splits,
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
) -> dict[str, Any]:
    """Train the architecture ``arch`` on the data's members split with the registered ``defense`` and save it.

    Args:
        defense: a name in :data:`~modelsec.defenses.DEFENSES` (``modelsec list defenses``).
        data: a data set name or file, or :class:`Splits`; training uses the members split (its first
            ``members`` records if given), the non-members give the per-epoch test accuracy.
        arch: a built-in architecture (``None``: small-cnn for images, mlp otherwise).
        out: the weights file; the provenance goes to ``OUT.json``, the checkpoint to ``OUT.ckpt``.
        config: the defense's options (a dict, or its config dataclass), validated before anything else runs.
        resume: continue from ``OUT.ckpt`` when it is a checkpoint of this same run (defense, config,
            architecture, data); ``False`` ignores and replaces it.
        base: harden this trained model file instead of training (defenses that wrap a model: output-hardening);
            ``data``, ``arch`` and the data options are then unused, the base file's own records are kept.

    Returns the provenance written to ``OUT.json`` (:meth:`~modelsec.models.card.ModelCard.to_provenance`).
    Raises :class:`~modelsec.core.errors.ConfigError` for a bad option, an existing output without ``overwrite``,
    or a checkpoint of another run.

    """
    impl = make_defense(defense, config)
    if base is not None:
        return harden_model_file(impl, Path(base), Path(out), overwrite=overwrite).to_provenance()
    card = train_and_record(
        impl,
        data=data,
        arch=arch,
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
    data: str | Splits,
    arch: str | None,
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
    from modelsec.core.seeding import seeded
    from modelsec.core.version import __version__
    from modelsec.data import load_splits
    from modelsec.models.zoo import build_architecture, default_architecture

    progress = progress or NullProgress()
    cfg = impl.config
    check_outputs(out, overwrite=overwrite)
    check_run_options(members=members, device=device, split_seed=split_seed)
    if isinstance(data, Splits):
        splits = data
    else:
        splits = load_splits(data, seed=split_seed, data_dir=data_dir, label_column=label_column, bounds=bounds)
    train = training_set(splits, members)
    impl.use_population(splits.population)
    impl.check_data(train)
    arch_name = arch or default_architecture(splits.input_shape)
    with seeded(cfg.seed):
        module = build_architecture(arch_name, splits.input_shape, splits.num_classes)

    data_hashes = {"train": train.sha256(), "test": splits.nonmembers.sha256()}
    checkpoint = None if plain else _checkpoint(impl, arch_name, splits, data_hashes, out)
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
            reports=impl.provenance(),
        ),
        modelsec_version=__version__,
    )
    if plain:
        card = card.as_plain_training()
    save_model(module, out, card)
    if checkpoint is not None:
        checkpoint.delete()
    return card


def _checkpoint(impl: Defense, arch: str, splits: Splits, data_hashes: dict[str, str], out: Path) -> Checkpoint:
    """The per-epoch checkpoint ``OUT.ckpt`` of this run, identified by the defense, its config, the architecture,
    the data's shape and bounds and the data's content hashes."""
    run = {
        "defense": impl.name,
        "config": impl.config.to_dict(),
        "arch": arch,
        "input_shape": list(splits.input_shape),
        "num_classes": splits.num_classes,
        "bounds": list(splits.bounds),
        "data_sha256": data_hashes,
    }
    return Checkpoint(checkpoint_path(out), run)


def harden_model_file(impl: Defense, base: Path, out: Path, *, overwrite: bool = False) -> ModelCard:
    """``harden --base``: harden the trained model file ``base`` (safetensors written by modelsec) with a defense
    that wraps trained models (:meth:`~modelsec.defenses.base.Defense.wrap_card`), without training: its weights
    go unchanged to ``out`` with the new card; ``OUT.json`` records the base's hash and its own provenance."""
    import json

    from modelsec.core.errors import ConfigError
    from modelsec.defenses.training import output_paths
    from modelsec.models.formats import ModelFormat
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
