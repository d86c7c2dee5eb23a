"""One audit, end to end: load, attack, check, score, judge, and return the typed result.

This is the only place that wires models, data, attacks and metrics together into an audit. It writes no output:
:mod:`modelsec.outputs.audit` writes the result, the report, the arrays and the run-store row for the CLI and
:func:`modelsec.audit`. (The package is ``audits``, plural, so that importing it never replaces the function
``modelsec.audit`` on the package.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import torch
from torch import nn

from modelsec.attacks.base import EvasionAttack
from modelsec.attacks.evasion import EVASION_ATTACKS
from modelsec.attacks.membership import MEMBERSHIP_ATTACKS, MembershipAttack, MembershipInputs, target_signals
from modelsec.audits.checkpoint import AuditCheckpoint, audit_run_key
from modelsec.audits.exposure import most_exposed
from modelsec.audits.membership import evaluate_membership, plan_membership_attacks, strongest
from modelsec.audits.membership_pool import build_pool, reference_signals
from modelsec.audits.presets import PRESETS, AttackSpec, build_attacks, preset_specs
from modelsec.audits.reference_choice import choose_recipe
from modelsec.audits.reference_models import ReferenceConfig
from modelsec.audits.robustness import RobustnessRun, attack_labels
from modelsec.audits.sanity import CHECKS, Remedies, apply_remedies, post_checks, pre_checks, resolve
from modelsec.audits.sharding import PROBE_RECORDS, evaluate_in_blocks, plan_shards
from modelsec.audits.verdict import RULE, make_verdict
from modelsec.core.errors import ConfigError
from modelsec.core.executors import EXECUTORS, ExecutorConfig, make_executor
from modelsec.core.options import (
    COUNT,
    SEED,
    SPLIT_SEED,
    SPLIT_SEED_LIMIT,
    OneOf,
    check_seed,
    check_writable_folder,
)
from modelsec.core.progress import NullProgress, Progress
from modelsec.core.resume import CheckpointMismatch, checkpointing, resumable, track_generator, track_queries, unsaved
from modelsec.core.seeding import generator, seeded
from modelsec.core.version import versions
from modelsec.data import load_splits
from modelsec.data.dataset import Splits
from modelsec.data.user_split import SplitFiles, recorded_split_files
from modelsec.models.adapters import LoadRequest, wrap_object
from modelsec.models.adapters.endpoint import RemoteModel, ScoreFunction
from modelsec.models.base import Classifier
from modelsec.models.card import DataRecord, ModelCard
from modelsec.models.loading import LoadedModel, load_model, read_card
from modelsec.models.normalization import check_normalization, normalized
from modelsec.models.reference_recipe import ReferenceRecipe
from modelsec.results.audit import (
    SCHEMA_VERSION,
    AuditResult,
    DataInfo,
    ModelInfo,
    PrivacyResult,
    RobustnessResult,
    SanityFlag,
    SkippedAttack,
)
from modelsec.results.dp_audit import DPClaim

if TYPE_CHECKING:
    from modelsec.store.cache import SignalCache

MAX_REFERENCE_MODELS = 1024
"""The most reference models an audit trains (LiRA's paper uses up to 256)."""
_REFERENCE_TRAINING = ("epochs", "lr", "batch_size", "weight_decay", "lr_schedule")
"""The :class:`TrainingConfig` fields that ``reference_<field>`` sets for the reference models."""
CHECKED_RECORDS = 128
"""Members, and as many non-members, on which an adapter's ``check_records`` checks a loaded model."""


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """Settings of one audit (all recorded in ``result.json``). The fields follow the options convention of
    :mod:`modelsec.core.options`: each is an option of ``modelsec audit`` and ``modelsec compare``.

    Args:
        eps: perturbation budgets, in input units (0.1 = 10% of the [0, 1] pixel range).
        norm: "linf" or "l2".
        samples: non-member (test) records attacked for robustness.
        mia_samples: members and as many non-members scored for membership inference (at most).
        preset: the evasion attacks by name: "quick" (APGD, 12 steps, and FGSM), "standard" (AutoAttack-like:
            APGD-CE, APGD-DLR, APGD-T, DeepFool, Square) or "thorough" (more of all); see
            :mod:`modelsec.audits.presets`.
        attacks: evasion attacks by registered name with default settings; overrides ``preset``.
        pgd_steps, pgd_restarts: PGD's (and BIM's) iterations and random restarts when named in ``attacks``.
        membership_attacks: membership attacks by registered name; None = every one the model and the reference
            models allow (label-only by default only for models that return labels alone).
        reference_models: reference models to train for LiRA, RMIA and the shadow-model attack (0 = none; they
            cost a training run each, in parallel processes, and are cached in the run store).
        reference_mode: "online" (reference models also train on the candidates: online and offline attacks) or
            "offline" (only on population records: offline attacks).
        reference_arch: the reference models' architecture, trained from its initial weights: a built-in
            architecture's name (see ``modelsec list``), a ``.keras`` / ``.h5`` Keras model file (its architecture,
            re-created with fresh seeded weights and trained with modelsec's training loop), or a modelsec
            safetensors file (the architecture it records). Default: the target's own (a built-in or Keras model,
            or the one its file records), else a built-in one for its input, marked as a guess in the report.
        reference_epochs, reference_lr, reference_batch_size, reference_weight_decay, reference_lr_schedule: the
            reference models' training settings (epochs, Adam's learning rate, records per mini-batch, Adam's
            weight decay, "cosine" or "constant" learning rate; see ``modelsec train --help``). Default: the
            target's recorded recipe, else modelsec's defaults (8 epochs, lr 0.001, batch size 128, no weight
            decay, cosine), marked as a guess in the report.
        workers: local worker processes that train reference models and attack shards of the records (default for
            reference models: one per CPU core, at most one per model; for shards: this process).
        executor: where reference models train and shards of the attacked records are attacked: "local" (this
            machine) or "ray" (a Ray cluster, or a Ray instance started here; the ``ray`` extra). The numbers do
            not depend on it (see :mod:`modelsec.core.executors`).
        ray_address: the Ray cluster for ``executor="ray"``: "auto", "HOST:PORT" or "ray://HOST:PORT"; default:
            $MODELSEC_RAY_ADDRESS, else a Ray instance started on this machine for the run.
        cpus_per_task: CPUs each Ray task reserves, and torch threads each task uses.
        gpus_per_task: GPUs each Ray task reserves (fractions share a GPU; 0: CPU tasks).
        seed: seed of every random choice in the audit (sample selection, random starts, bootstrap).
        split_seed: seed of the member / non-member / population split (defaults to the model's record, or 0).
        checks: the robustness sanity checks and their remedies.
        normalize_mean, normalize_std: for a model that expects normalised inputs: the audit feeds it
            (x - mean) / std, per channel (one value per channel, or one for all), as a differentiable first step
            inside the classifier, so data, bounds and eps stay in raw input units (see
            :mod:`modelsec.models.normalization`).
    """

    eps: tuple[float, ...] = (0.03, 0.1)
    norm: Annotated[str, OneOf("linf", "l2")] = "linf"
    samples: Annotated[int, COUNT] = 1000
    mia_samples: Annotated[int, COUNT] = 10000
    preset: Annotated[str, OneOf(*PRESETS)] = "standard"
    attacks: tuple[str, ...] | None = None
    pgd_steps: Annotated[int, COUNT] = 20
    pgd_restarts: Annotated[int, COUNT] = 1
    membership_attacks: tuple[str, ...] | None = None
    reference_models: int = 0
    reference_mode: Annotated[str, OneOf("online", "offline")] = "online"
    reference_arch: str | None = None
    reference_epochs: Annotated[int | None, COUNT] = None
    reference_lr: float | None = None
    reference_batch_size: Annotated[int | None, COUNT] = None
    reference_weight_decay: float | None = None
    reference_lr_schedule: Annotated[str | None, OneOf("cosine", "constant")] = None
    workers: Annotated[int | None, COUNT] = None
    executor: Annotated[str, OneOf(*EXECUTORS)] = "local"
    ray_address: str | None = None
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    seed: Annotated[int, SEED] = 0
    split_seed: Annotated[int | None, SPLIT_SEED] = None
    checks: bool = True
    normalize_mean: tuple[float, ...] | None = None
    normalize_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.eps:
            raise ConfigError("give at least one epsilon")
        if any(not (e > 0) or e == float("inf") for e in self.eps):
            raise ConfigError(f"every epsilon must be a finite number > 0, got {list(self.eps)}")
        if self.norm not in ("linf", "l2"):
            raise ConfigError(f"norm must be linf or l2, got {self.norm!r}")
        if self.samples < 1 or self.mia_samples < 1:
            raise ConfigError("--samples and --mia-samples must be >= 1")
        if self.pgd_steps < 1 or self.pgd_restarts < 1:
            raise ConfigError("PGD steps and restarts must be >= 1")
        if self.attacks is not None:
            if not self.attacks:
                raise ConfigError("--attacks is empty")
            for name in self.attacks:
                EVASION_ATTACKS.get(name)
        else:
            preset_specs(self.preset)
        for name in self.membership_attacks or ():
            MEMBERSHIP_ATTACKS.get(name)
        if not 0 <= self.reference_models <= MAX_REFERENCE_MODELS:
            raise ConfigError(
                f"--reference-models must be from 0 to {MAX_REFERENCE_MODELS} (each one is a training run), "
                f"got {self.reference_models}"
            )
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        check_seed(self.seed, "--seed")
        if self.split_seed is not None:
            check_seed(self.split_seed, "--split-seed", limit=SPLIT_SEED_LIMIT)
        if self.reference_mode not in ("online", "offline"):
            raise ConfigError(f"--reference-mode must be online or offline, got {self.reference_mode!r}")
        if self.reference_epochs is not None and self.reference_epochs < 1:
            raise ConfigError(f"--reference-epochs must be >= 1, got {self.reference_epochs}")
        if self.reference_batch_size is not None and self.reference_batch_size < 1:
            raise ConfigError(f"--reference-batch-size must be >= 1, got {self.reference_batch_size}")
        if self.reference_lr is not None and not 0 < self.reference_lr < float("inf"):
            raise ConfigError(f"--reference-lr must be a finite number > 0, got {self.reference_lr}")
        if self.reference_weight_decay is not None and not 0 <= self.reference_weight_decay < float("inf"):
            raise ConfigError(
                f"--reference-weight-decay must be a finite number >= 0, got {self.reference_weight_decay}"
            )
        if self.reference_lr_schedule not in (None, "cosine", "constant"):
            raise ConfigError(f"--reference-lr-schedule must be cosine or constant, got {self.reference_lr_schedule!r}")
        if self.reference_arch is not None and not self.reference_arch.strip():
            raise ConfigError("--reference-arch is empty; give a built-in architecture (modelsec list) or a file")
        self.reference_config()  # validates the combination (online needs >= 2 models)
        self.executor_config()
        check_normalization(self.normalize_mean, self.normalize_std)

    def reference_config(self) -> ReferenceConfig | None:
        if self.reference_models == 0:
            return None
        return ReferenceConfig(
            models=self.reference_models,
            online=self.reference_mode == "online",
            workers=self.workers,
            seed=self.seed,
        )

    def executor_config(self) -> ExecutorConfig:
        """Where the audit's tasks run (:mod:`modelsec.core.executors`)."""
        return ExecutorConfig(
            executor=self.executor,
            workers=self.workers,
            ray_address=self.ray_address,
            cpus_per_task=self.cpus_per_task,
            gpus_per_task=self.gpus_per_task,
        )

    def reference_overrides(self) -> dict[str, Any]:
        """The reference models' training settings given (``--reference-epochs`` ...), by TrainingConfig field."""
        given = {name: getattr(self, f"reference_{name}") for name in _REFERENCE_TRAINING}
        return {name: value for name, value in given.items() if value is not None}

    def attack_specs(self) -> list[AttackSpec]:
        """The attack plan before remedies: the explicit list, else the preset."""
        if self.attacks is None:
            return list(preset_specs(self.preset))
        pgd_like = {"steps": self.pgd_steps, "restarts": self.pgd_restarts}
        return [AttackSpec(name, pgd_like if name in ("pgd", "bim") else {}) for name in self.attacks]


@dataclass
class AuditOutcome:
    """What :func:`run_audit` returns: the result, and what an audit's files are made of beyond it
    (:func:`modelsec.outputs.audit.write_audit` writes them).

    Attributes:
        result: the typed result (``result.json``).
        robustness_run: the per-sample arrays behind the robustness numbers (``adversarial.npz``).
        exposed_images: the inputs of the most exposed members, in the order of ``result.privacy.exposed_records``,
            for the report's thumbnails (image data only; else ``None``).
        checkpoint: the audit's checkpoint (with ``checkpoint_dir``), still on disk when :func:`run_audit` returns;
            whoever writes the outputs settles it once they are written: deletes it, or keeps the finished audit in
            it (:meth:`~modelsec.audits.checkpoint.AuditCheckpoint.keep`) so that a rerun reuses it.
        reused: the checkpoint held a finished audit: nothing was recomputed, ``files`` are those written for it
            then, and there are no arrays.
        files: the files written for the audit, by key (``"result"``, ``"report"``, ...); filled by the outputs
            layer.
    """

    result: AuditResult
    robustness_run: RobustnessRun | None = None
    exposed_images: np.ndarray | None = None
    checkpoint: AuditCheckpoint | None = None
    reused: bool = False
    files: dict[str, Path] = field(default_factory=dict)


def _model_card(model: Any, trust_model: bool) -> ModelCard:
    """The card a model file records (empty for other formats and for Python objects), after the safe-loading
    check, so a missing or unsafe file is reported before anything else happens."""
    if model is None or isinstance(model, (str, Path)):
        return read_card(model, trust_model=trust_model)
    return ModelCard()


def _resolve_data(data: str | Splits | SplitFiles | None, card: ModelCard, split_seed: int | None) -> tuple[Any, int]:
    recorded = card.data or DataRecord()
    seed = split_seed if split_seed is not None else (recorded.split_seed or 0)
    if isinstance(data, SplitFiles) and split_seed is not None:
        raise ConfigError("--split-seed draws a split, but --members and --nonmembers give it; drop --split-seed")
    if data is None:
        if recorded.files and "members" in recorded.files and "nonmembers" in recorded.files:
            return recorded_split_files(recorded.files), seed  # the user's own split, recorded by harden
        if not recorded.source:
            raise ConfigError("the model does not record its training data; pass --data")
        return recorded.source, seed
    return data, seed


def run_audit(
    model: str | Path | nn.Module | Classifier | ScoreFunction | Callable[[Any], Any] | None = None,
    data: str | Splits | SplitFiles | None = None,
    *,
    config: AuditConfig | None = None,
    arch: str | None = None,
    trust_model: bool = False,
    device: str = "cpu",
    data_dir: str | None = None,
    label_column: str = "label",
    bounds: tuple[float, float] | None = None,
    checkpoint_dir: str | Path | None = None,
    cache: SignalCache | None = None,
    progress: Progress | None = None,
    resume: bool = True,
) -> AuditOutcome:
    """Audit ``model`` on ``data``: evasion attacks with sanity checks, then membership inference, then a verdict.
    Writes no output: :mod:`modelsec.outputs.audit` turns the outcome into ``result.json``, ``report.html``,
    ``adversarial.npz``, ``exposed_records.csv`` and the run-store row.

    The steps: load the model and the data (:func:`_load_target`), draw the records to attack and plan the
    membership attacks, run the phases robustness, sanity checks and membership inference (:func:`_phases`,
    resumable), and assemble the result (:func:`_assemble_result`).

    A model that draws its noise from torch's global generator draws it seeded by ``config.seed``, so the same
    seed gives the same result; the caller's generator is restored afterwards.

    ``checkpoint_dir`` (checked to be writable before any work): the audit checkpoints itself to
    ``checkpoint_dir/audit.ckpt`` as it goes and, with ``resume``, continues from a checkpoint of the same run left
    by an interrupted one (refusing one of another run); ``resume=False`` ignores and replaces it. See
    :mod:`modelsec.audits.checkpoint`. The checkpoint is still there when this returns (``outcome.checkpoint``):
    the caller deletes it once the outputs are written. One that holds a finished audit (kept by
    :func:`~modelsec.audits.compare.run_compare`) is returned as it is (``outcome.reused``).

    ``cache``: where the reference models' signals are cached (a :class:`~modelsec.store.SignalCache`, such as
    the run store's ``signal_cache``), so that another audit of the same records, architecture and recipe trains
    none; ``None``: no cache."""
    config = config or AuditConfig()
    progress = progress or NullProgress()
    if checkpoint_dir is not None:
        check_writable_folder(checkpoint_dir)
    with seeded(config.seed, device):
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        created = dt.datetime.now(dt.timezone.utc)
        target = _load_target(
            model, data, config, arch=arch, trust_model=trust_model, device=device, data_dir=data_dir,
            label_column=label_column, bounds=bounds, timings=timings,
        )  # fmt: skip
        _check_reference_data(config, target.splits)
        if config.reference_config() is not None:  # a bad --reference-arch fails before any attack runs
            target.recipe = _reference_models_recipe(target, config, trust_model=trust_model, device=device)
        mia_plan = plan_membership_attacks(
            config.membership_attacks, target.classifier.capability, config.reference_config()
        )
        rng = np.random.default_rng(config.seed)
        gen = generator(config.seed)
        sample = _attack_sample(target.splits, config.samples, rng)
        checkpoint = None
        if checkpoint_dir is not None:
            run_key = audit_run_key(config, target.info, target.data, target.classifier, device)
            checkpoint = AuditCheckpoint(checkpoint_dir, run_key)
        phases = _resumable_phases(
            target, sample, config, mia_plan, rng, gen, checkpoint, resume=resume, cache=cache, progress=progress
        )
        if phases is None:
            assert checkpoint is not None
            return _finished(checkpoint, progress)
        timings.update(phases.timings)
        timings["total"] = time.perf_counter() - t0
        result = _assemble_result(config, device, target, sample, phases, created=created, timings=timings)
    return AuditOutcome(
        result=result,
        robustness_run=phases.robustness,
        exposed_images=phases.exposed_images,
        checkpoint=checkpoint,
    )


@dataclass
class _Target:
    """The model under audit and the data it is audited on."""

    classifier: Classifier
    info: ModelInfo
    card: ModelCard  # what the model file records (its header)
    reference_recipe: ReferenceRecipe | None  # how to train a model of its kind, when its adapter knows
    splits: Splits
    data: DataInfo
    overlaps: dict[str, int]  # records the splits share, by pair of splits
    recipe: tuple[ReferenceRecipe, list[str]] | None = None  # the reference models' recipe and notes on it


def _load_target(
    model: str | Path | nn.Module | Classifier | ScoreFunction | Callable[[Any], Any] | None,
    data: str | Splits | SplitFiles | None,
    config: AuditConfig,
    *,
    arch: str | None,
    trust_model: bool,
    device: str,
    data_dir: str | None,
    label_column: str,
    bounds: tuple[float, float] | None,
    timings: dict[str, float],
) -> _Target:
    """Step 1: what the model file records (after the safe-loading check), the data (the model's own unless
    given; only the members it trained on count as members), the classifier."""
    t = time.perf_counter()
    card = _model_card(model, trust_model)
    data_source, split_seed = _resolve_data(data, card, config.split_seed)
    splits = (
        data_source
        if isinstance(data_source, Splits)
        else load_splits(
            data_source if isinstance(data_source, SplitFiles) else str(data_source),
            seed=split_seed, data_dir=data_dir, label_column=label_column, bounds=bounds,
        )
    )  # fmt: skip
    recorded = card.data or DataRecord()
    same_split = recorded.source == splits.source and recorded.split_seed in (None, splits.seed)
    drawn = not isinstance(data_source, (Splits, SplitFiles))
    if recorded.members_used and drawn and same_split:
        # a model trained on the first N members: only those are members (the rest join the population)
        splits = splits.with_members_used(recorded.members_used)
    timings["load_data"] = time.perf_counter() - t

    t = time.perf_counter()
    loaded = _classifier(model, splits, arch=arch, trust_model=trust_model, device=device)
    classifier, info = loaded.classifier, loaded.info
    if config.normalize_mean is not None and config.normalize_std is not None:
        classifier = normalized(classifier, config.normalize_mean, config.normalize_std)
    claim = DPClaim.from_guarantees(card.guarantees)  # the DP claim the file records, for dp.max_claimed_epsilon
    info = replace(
        info,
        capability=classifier.capability.name.lower(),
        dp_epsilon=None if claim is None else claim.epsilon,
        dp_delta=None if claim is None else claim.delta,
    )
    timings["load_model"] = time.perf_counter() - t
    overlaps = splits.overlaps()
    return _Target(
        classifier=classifier,
        info=info,
        card=card,
        reference_recipe=loaded.reference_recipe,
        splits=splits,
        data=_data_info(splits, overlaps),
        overlaps=overlaps,
    )


def _data_info(splits: Splits, overlaps: dict[str, int]) -> DataInfo:
    """What ``result.json`` records of the data: sizes and content hashes of every split, and for the user's own
    split the file each came from (path and SHA-256)."""
    sets = {"members": splits.members, "nonmembers": splits.nonmembers, "population": splits.population}
    if splits.test is not None:
        sets["test"] = splits.test
    return DataInfo(
        name=splits.source,
        split_seed=splits.seed,
        n_members=len(splits.members),
        n_nonmembers=len(splits.nonmembers),
        n_population=len(splits.population),
        bounds=[float(b) for b in splits.bounds],
        sha256={name: dataset.sha256() for name, dataset in sets.items()},
        overlaps=overlaps,
        class_names=list(splits.members.class_names) if splits.members.class_names else None,
        n_test=None if splits.test is None else len(splits.test),
        files={name: {"path": f.path, "sha256": f.sha256} for name, f in splits.files.items()} or None,
    )


def _check_reference_data(config: AuditConfig, splits: Splits) -> None:
    """Before any attack runs: offline reference models train on population records only, so the data must have
    some (a user split without ``--population`` has none)."""
    reference = config.reference_config()
    if reference is not None and not reference.online and len(splits.population) < 2:
        raise ConfigError(
            f"offline reference models need population records to train on, and {splits.source} has "
            f"{len(splits.population)}; use online reference models (--reference-mode online), or give population "
            "records (--population FILE with --members and --nonmembers)"
        )


@dataclass
class _Sample:
    """The test records attacked for robustness: their indices in the split attacked (the non-members, or the
    ``test`` set: :attr:`Splits.attacked <modelsec.data.dataset.Splits.attacked>`), inputs and labels."""

    index: np.ndarray
    x: torch.Tensor
    y: torch.Tensor


def _attack_sample(splits: Splits, samples: int, rng: np.random.Generator) -> _Sample:
    """Step 2: a seeded sample of ``samples`` held-out records: the non-members, or the ``test`` set when the splits
    have one (all of them, with a warning, when there are fewer)."""
    attacked = splits.attacked
    n = min(samples, len(attacked))
    if n < samples:
        warnings.warn(
            f"--samples {samples} is more than the {n} test records of {splits.source}; all {n} are attacked",
            stacklevel=2,
        )
    idx = np.sort(rng.permutation(len(attacked))[:n])
    return _Sample(index=idx, x=torch.from_numpy(attacked.x[idx]), y=torch.from_numpy(attacked.y[idx]))


def _resumable_phases(
    target: _Target,
    sample: _Sample,
    config: AuditConfig,
    mia_plan: tuple[list[MembershipAttack], list[str]],
    rng: np.random.Generator,
    gen: torch.Generator,
    checkpoint: AuditCheckpoint | None,
    *,
    resume: bool,
    cache: SignalCache | None,
    progress: Progress,
) -> _Phases | None:
    """Step 3: the phases (:func:`_phases`), checkpointed when there is a ``checkpoint`` (the generators, the
    global generator a randomised model draws from, and the query count tracked with it) and resumed from it;
    ``None`` when it holds a finished audit instead."""
    with contextlib.ExitStack() as stack:
        if checkpoint is not None:
            tracked = {
                "generator": track_generator(gen),
                # a randomised model's own noise comes from torch's global generator, seeded by run_audit
                "global_generator": track_generator(torch.random.default_generator),
                "queries": track_queries(target.classifier),
            }
            resumer = stack.enter_context(checkpointing(checkpoint.resumer(resume=resume, tracked=tracked)))
            if checkpoint.finished is not None:
                return None
            if resumer.resuming:
                progress.note(f"resuming from {checkpoint.path}: {checkpoint.where or 'before the first attack'}")
        try:
            return _phases(target, sample, config, mia_plan, rng, gen, cache, progress)
        except CheckpointMismatch as e:
            assert checkpoint is not None
            raise ConfigError(
                f"{checkpoint.path} does not match this audit ({e}); delete it or pass --no-resume (resume=False) "
                "to start over"
            ) from None
        except KeyboardInterrupt:
            # a Ctrl-C between a checkpoint's write and the bookkeeping of where it stands still leaves the file
            if checkpoint is not None and (checkpoint.where is not None or checkpoint.path.exists()):
                where = checkpoint.where or "before the first attack"
                if checkpoint.where is None:
                    where = "its last checkpoint"
                raise KeyboardInterrupt(
                    f"the audit can be resumed from {checkpoint.path} ({where}) by rerunning the same command"
                ) from None
            raise


def _assemble_result(
    config: AuditConfig,
    device: str,
    target: _Target,
    sample: _Sample,
    phases: _Phases,
    *,
    created: dt.datetime,
    timings: dict[str, float],
) -> AuditResult:
    """Step 4: the verdict, and the result with the settings that produced it: the plan after remedies, and
    content hashes of the records attacked and of the membership candidates (equal hashes, same records)."""
    from modelsec.store.runs import new_run_id

    rob_run, remedies, privacy = phases.robustness, phases.remedies, phases.privacy
    n = len(sample.index)
    settings: dict[str, Any] = {
        "eps": list(config.eps),
        "norm": config.norm,
        "samples": n,
        **({"samples_requested": config.samples} if n < config.samples else {}),
        "mia_samples": config.mia_samples,
        "reference_models": config.reference_models,
        "reference_mode": config.reference_mode if config.reference_models else None,
        "preset": None if config.attacks is not None else config.preset,
        "attacks": attack_labels(phases.attacks),
        "remedies": remedies.notes
        + ([f"EoT with {remedies.eot_samples} samples"] if remedies.eot_samples > 1 else [])
        + ([f"predictions by majority vote over {remedies.votes} passes"] if remedies.votes > 1 else []),
        "pgd_steps": config.pgd_steps,
        "pgd_restarts": config.pgd_restarts,
        "membership_attacks": [a.attack for a in privacy.attacks],
        "device": device,
        "verdict_rule": RULE,
        "normalize": None
        if config.normalize_mean is None
        else {"mean": list(config.normalize_mean), "std": list(config.normalize_std or ())},
        "samples_sha256": target.splits.attacked.subset(sample.index).sha256(),
        "mia_candidates_sha256": phases.candidates_sha256,
    }
    return AuditResult(
        schema_version=SCHEMA_VERSION,
        run_id=new_run_id(),
        created_at=created.isoformat(timespec="seconds"),
        model=_model_info(target),
        data=target.data,
        robustness=rob_run.result,
        privacy=privacy,
        verdict=make_verdict(rob_run.result, privacy, config.norm),
        settings=settings,
        seed=config.seed,
        versions=versions(),
        timings={k: round(v, 3) for k, v in timings.items()},
    )


def _model_info(target: _Target) -> ModelInfo:
    """What the result says about the model: for a model behind an endpoint, with the queries it answered."""
    module = target.classifier.module
    if isinstance(module, RemoteModel):
        return replace(target.info, endpoint=module.record())
    return target.info


def _finished(checkpoint: AuditCheckpoint, progress: Progress) -> AuditOutcome:
    """The outcome of an audit that had finished (its files written, its run recorded) when its checkpoint was
    kept: nothing is recomputed or rewritten."""
    assert checkpoint.finished is not None
    result = AuditResult.from_dict(checkpoint.finished["result"])
    files = {k: Path(v) for k, v in checkpoint.finished["files"].items()}
    progress.note(f"already audited ({checkpoint.path}): reusing {files.get('result', 'the result')}")
    return AuditOutcome(result=result, checkpoint=checkpoint, reused=True, files=files)


PHASES = ("robustness", "sanity_checks", "privacy")
_PHASE_WHERE = {
    "robustness": "",  # the robustness frame says where
    "sanity_checks": "robustness done; sanity checks next",
    "privacy": "robustness and sanity checks done; membership inference next",
}


@dataclass
class _Phases:
    """What the resumable part of an audit computes."""

    robustness: RobustnessRun
    remedies: Remedies
    attacks: list[EvasionAttack]
    privacy: PrivacyResult
    exposed_images: np.ndarray | None
    candidates_sha256: str
    timings: dict[str, float]


def _phases(
    target: _Target,
    sample: _Sample,
    config: AuditConfig,
    mia_plan: tuple[list[MembershipAttack], list[str]],
    rng: np.random.Generator,
    gen: torch.Generator,
    cache: SignalCache | None,
    progress: Progress,
) -> _Phases:
    """Pre-checks, then the phases robustness, sanity checks and membership inference, each resumable: a
    checkpoint is written before each (the ``"audit"`` frame of :mod:`modelsec.core.resume`), and the robustness phase
    checkpoints itself inside (:func:`~modelsec.audits.robustness.evaluate_robustness`). The robustness phase runs
    in blocks of records on the audit's executor (:mod:`modelsec.audits.sharding`)."""
    classifier, x, y = target.classifier, sample.x, sample.y
    with resumable("audit") as frame, contextlib.ExitStack() as stack:
        timings: dict[str, float] = {}
        rob_run: RobustnessRun | None = None
        if frame.restored is None:
            t = time.perf_counter()
            pre_flags, remedies = pre_checks(classifier, x, y) if config.checks else ([], Remedies())
            timings["robustness"] = time.perf_counter() - t  # (the pre-checks count as robustness)
        else:
            saved = frame.restored
            pre_flags = [SanityFlag(**f) for f in saved["pre_flags"]]
            remedies = Remedies(**saved["remedies"])
            rng.bit_generator.state = saved["rng"]
            if saved["robustness"] is not None:
                rob_run = RobustnessRun.from_state(saved["robustness"])
            timings.update(saved["timings"])
        if remedies.votes > classifier.votes:  # a randomised model: every prediction a majority vote
            stack.enter_context(classifier.voting(remedies.votes))
        preset = None if config.attacks is not None else config.preset
        attacks, skipped = build_attacks(
            apply_remedies(config.attack_specs(), remedies, preset), classifier, config.norm, preset=preset
        )
        if not attacks:
            raise ConfigError(
                "no evasion attack can run on this model: " + "; ".join(f"{s.attack} {s.reason}" for s in skipped)
            )
        shards = plan_shards(
            classifier, target.card, target.info, config.executor_config(), records=len(x), probe=x[:PROBE_RECORDS]
        )
        if shards.note:  # blocks that could not go to Ray run here: the result says so
            target.info = replace(target.info, notes=[*target.info.notes, shards.note])
        frame.capture(
            lambda: {
                "pre_flags": [dataclasses.asdict(f) for f in pre_flags],
                "remedies": dataclasses.asdict(remedies),
                "rng": rng.bit_generator.state,
                "robustness": None if rob_run is None else rob_run.state_dict(),
                "timings": dict(timings),
            },
            where=lambda p: _PHASE_WHERE[PHASES[p]],
        )
        for p in frame.steps(0, len(PHASES), force=True):
            phase = PHASES[p]
            t = time.perf_counter()
            if phase == "robustness":
                rob_run = evaluate_in_blocks(
                    classifier, x, y, attacks=attacks, eps=list(config.eps), norm=config.norm, generator=gen,
                    seed=config.seed, plan=shards, progress=progress,
                )  # fmt: skip
            elif phase == "sanity_checks":
                assert rob_run is not None
                rob_run.result = _sanity_checks(
                    classifier, rob_run, attacks, skipped, pre_flags, remedies, config, gen, progress
                )
            else:
                privacy, exposed_images, candidates_sha256 = _membership(
                    classifier, target, config, mia_plan, rng, cache, progress
                )
            timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - t
    assert rob_run is not None
    return _Phases(
        robustness=rob_run,
        remedies=remedies,
        attacks=attacks,
        privacy=privacy,
        exposed_images=exposed_images,
        candidates_sha256=candidates_sha256,
        timings=timings,
    )


def _sanity_checks(
    classifier: Classifier,
    rob_run: RobustnessRun,
    attacks: list[EvasionAttack],
    skipped: list[SkippedAttack],
    pre_flags: list[SanityFlag],
    remedies: Remedies,
    config: AuditConfig,
    gen: torch.Generator,
    progress: Progress,
) -> RobustnessResult:
    """The robustness result with the sanity checks' flags (the checks' short attack runs are redone from their
    start when interrupted: :func:`~modelsec.core.resume.unsaved`)."""
    flags: list[SanityFlag] = []
    if config.checks:
        with progress.task("sanity checks", total=1) as advance, unsaved():
            post = post_checks(
                classifier, rob_run, attacks, attack_labels(attacks), config.norm, gen,
                eot_samples=remedies.eot_samples,
            )  # fmt: skip
            flags = resolve(pre_flags, post, attacks)
            advance(1)
    return replace(
        rob_run.result,
        checks=list(CHECKS) if config.checks else [],
        flags=flags,
        preset=None if config.attacks is not None else config.preset,
        skipped=skipped,
    )


def _reference_models_recipe(
    target: _Target, config: AuditConfig, *, trust_model: bool = False, device: str = "cpu"
) -> tuple[ReferenceRecipe, list[str]]:
    """How the reference models train, and notes on it (:func:`~modelsec.audits.reference_choice.choose_recipe`:
    the options given, the adapter's own recipe, the recorded one, the target's architecture, or a guess)."""
    splits = target.splits
    request = LoadRequest(
        input_shape=tuple(target.info.input_shape), num_classes=target.info.num_classes,
        bounds=None if splits is None else splits.bounds, trust_model=trust_model, device=device,
    )  # fmt: skip
    return choose_recipe(
        arch_option=config.reference_arch,
        overrides=config.reference_overrides(),
        info=target.info,
        card=target.card,
        own=target.reference_recipe,
        module=target.classifier.module,
        request=request,
    )


def _membership(
    classifier: Classifier,
    target: _Target,
    config: AuditConfig,
    plan: tuple[list[MembershipAttack], list[str]],
    rng: np.random.Generator,
    cache: SignalCache | None,
    progress: Progress,
) -> tuple[PrivacyResult, np.ndarray | None, str]:
    """The membership-inference part of an audit: its result, the most exposed members' inputs (for the
    report's thumbnails, images only) and a content hash of the candidates (members, then non-members)."""
    splits, card, overlaps = target.splits, target.card, target.overlaps
    reference = config.reference_config()
    attacks, notes = plan[0], list(plan[1])
    recorded_size = None if card.data is None else card.data.members_used
    pool = build_pool(
        splits,
        members=config.mia_samples,
        nonmembers=config.mia_samples,
        rng=rng,
        reference=reference,
        target_train_size=int(recorded_size) if recorded_size else len(splits.members),
        exclude_shared=any(_membership_overlaps(overlaps).values()),
    )
    if min(pool.members.size, pool.nonmembers.size) < config.mia_samples:
        capped = (
            f"--mia-samples {config.mia_samples} is more than the data holds: {pool.members.size} members and "
            f"{pool.nonmembers.size} non-members were scored"
        )
        notes.append(capped)
        warnings.warn(capped, stacklevel=3)
    if any(_membership_overlaps(overlaps).values()):
        notes.append(
            f"the splits share records ({_membership_overlaps(overlaps)}); those records were left out of membership "
            "inference"
        )
    if pool.members.size != pool.nonmembers.size:
        notes.append(
            f"unbalanced candidates: {pool.members.size} members, {pool.nonmembers.size} non-members "
            "(TPR, FPR and AUC do not depend on the balance; balanced accuracy weighs both classes equally)"
        )
    queries_before = classifier.queries
    signals = target_signals(attacks, classifier, pool.records, generator=generator(config.seed), progress=progress)
    compute: dict[str, Any] = {}
    training = None
    recipe = None
    if reference is not None:
        assert target.recipe is not None
        recipe, recipe_notes = target.recipe
        notes.extend(recipe_notes)
        executor = make_executor(config.executor_config())
        training = reference_signals(pool, reference, recipe=recipe, cache=cache, executor=executor, progress=progress)
        compute.update(training.compute())
        compute["reference_mode"] = "online" if reference.online else "offline"
    inputs = MembershipInputs(
        signals, None if training is None else training.signals, online=bool(reference and reference.online)
    )
    results, scores = evaluate_membership(attacks, inputs, pool.members, pool.nonmembers, rng=rng)
    compute["target_queries"] = classifier.queries - queries_before
    compute["pool_records"] = len(pool.records)
    top = strongest(results)
    member_scores = scores[top.attack][pool.members]
    exposed = most_exposed(
        member_scores,
        pool.records.y[pool.members],
        attack=top.attack,
        class_names=splits.members.class_names,
    )
    images = None
    if len(splits.input_shape) == 3 and exposed:
        images = pool.records.x[pool.members][[e.member_index for e in exposed]]
    # report each record by its index in the members split, which the user can look up
    exposed = [replace(e, member_index=int(pool.member_source[e.member_index])) for e in exposed]
    privacy = PrivacyResult(
        attacks=results,
        notes=notes,
        exposed_records=exposed,
        compute=compute,
        reference_recipe=None if recipe is None else recipe.record(),
    )
    candidates = pool.records.subset(np.concatenate([pool.members, pool.nonmembers])).sha256()
    return privacy, images, candidates


def _membership_overlaps(overlaps: dict[str, int]) -> dict[str, int]:
    """The overlaps between the splits membership inference uses (members, non-members, population)."""
    return {pair: n for pair, n in overlaps.items() if "test" not in pair.split("/")}


def _classifier(model: Any, splits: Splits, *, arch: str | None, trust_model: bool, device: str) -> LoadedModel:
    if isinstance(model, Classifier):
        return LoadedModel(
            classifier=model,
            info=ModelInfo(
                path=None,
                sha256=None,
                arch=arch,
                format="python",
                num_classes=model.num_classes,
                input_shape=list(model.input_shape),
                parameters=model.num_parameters(),
            ),
        )
    request = LoadRequest(
        input_shape=splits.input_shape, num_classes=splits.num_classes, bounds=splits.bounds, device=device
    )
    wrapped = wrap_object(model, request)
    if wrapped is not None:
        return wrapped
    if isinstance(model, nn.Module):
        clf = Classifier(
            model,
            input_shape=splits.input_shape,
            num_classes=splits.num_classes,
            bounds=splits.bounds,
            device=device,
            name=type(model).__name__,
        )
        info = ModelInfo(
            path=None,
            sha256=None,
            arch=arch,
            format="nn.Module",
            num_classes=clf.num_classes,
            input_shape=list(clf.input_shape),
            parameters=clf.num_parameters(),
        )
        return LoadedModel(classifier=clf, info=info)
    loaded = load_model(
        model,
        arch=arch,
        input_shape=splits.input_shape,
        num_classes=splits.num_classes,
        bounds=splits.bounds,
        trust_model=trust_model,
        device=device,
    )
    if loaded.check_records is not None:  # e.g. a converted ONNX graph against onnxruntime, on the audited records
        loaded.check_records(
            np.concatenate([splits.members.x[:CHECKED_RECORDS], splits.nonmembers.x[:CHECKED_RECORDS]])
        )
    return loaded
