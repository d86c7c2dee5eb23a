"""One audit, end to end: load, attack, score, check, judge, write, record.

This is the only place that wires models, data, attacks, metrics, the report and the run store together; the CLI
and :func:`modelsec.audit` call it. (The package is ``audits``, plural, so that importing it never
replaces the function ``modelsec.audit`` on the package.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelsec.attacks.base import EvasionAttack
from modelsec.attacks.evasion import EVASION_ATTACKS
from modelsec.attacks.membership import MEMBERSHIP_ATTACKS, MembershipAttack, MembershipInputs, target_signals
from modelsec.audits.checkpoint import AuditCheckpoint, audit_run_key
from modelsec.audits.exposure import most_exposed, write_exposed_csv
from modelsec.audits.membership import evaluate_membership, plan_membership_attacks, strongest
from modelsec.audits.membership_pool import build_pool, reference_signals
from modelsec.audits.presets import AttackSpec, build_attacks, preset_specs
from modelsec.audits.reference_models import ReferenceConfig
from modelsec.audits.robustness import RobustnessRun, attack_labels, evaluate_robustness
from modelsec.audits.sanity import CHECKS, Remedies, apply_remedies, post_checks, pre_checks, resolve
from modelsec.audits.verdict import RULE, make_verdict
from modelsec.core.errors import ConfigError
from modelsec.core.options import SPLIT_SEED_LIMIT, check_seed, check_writable_folder
from modelsec.core.progress import NullProgress, Progress
from modelsec.core.resume import CheckpointMismatch, checkpointing, resumable, track_generator, track_queries, unsaved
from modelsec.core.seeding import generator, seeded
from modelsec.core.version import versions
from modelsec.data import load_splits
from modelsec.data.dataset import Splits
from modelsec.defenses.training import TrainingConfig
from modelsec.models.base import Classifier
from modelsec.models.formats import ModelFormat
from modelsec.models.loading import bundled_model_path, check_loadable, load_model
from modelsec.models.torch import read_safetensors_metadata
from modelsec.models.zoo import ARCHITECTURES, default_architecture
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

MAX_REFERENCE_MODELS = 1024
"""The most reference models an audit trains (LiRA's paper uses up to 256)."""


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """Settings of one audit (all recorded in ``result.json``).

    Args:
        eps: perturbation budgets, in input units (0.1 = 10% of the [0, 1] pixel range).
        norm: "linf" or "l2".
        samples: non-member (test) records attacked for robustness.
        mia_samples: members and as many non-members scored for membership inference (at most).
        preset: "quick", "standard" or "thorough" (see :mod:`modelsec.audits.presets`).
        attacks: evasion attacks by registered name with default settings; overrides ``preset``.
        pgd_steps, pgd_restarts: PGD's (and BIM's) iterations and random restarts when named in ``attacks``.
        membership_attacks: membership attacks by registered name; None = every one the model and the reference
            models allow (label-only by default only for models that return labels alone).
        reference_models: reference models to train for LiRA, RMIA and the shadow-model attack (0 = none; they
            cost a training run each, in parallel processes, and are cached in the run store).
        reference_mode: "online" (reference models also train on the candidates: online and offline attacks) or
            "offline" (only on population records: offline attacks).
        reference_epochs: the reference models' epochs (default: the target's recorded recipe).
        workers: processes that train reference models (default: one per CPU core, at most one per model).
        seed: seed of every random choice in the audit (sample selection, random starts, bootstrap).
        split_seed: seed of the member / non-member / population split (defaults to the model's record, or 0).
        checks: run the robustness sanity checks (and their remedies).
    """

    eps: tuple[float, ...] = (0.03, 0.1)
    norm: str = "linf"
    samples: int = 1000
    mia_samples: int = 10000
    preset: str = "standard"
    attacks: tuple[str, ...] | None = None
    pgd_steps: int = 20
    pgd_restarts: int = 1
    membership_attacks: tuple[str, ...] | None = None
    reference_models: int = 0
    reference_mode: str = "online"
    reference_epochs: int | None = None
    workers: int | None = None
    seed: int = 0
    split_seed: int | None = None
    checks: bool = True

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
        self.reference_config()  # validates the combination (online needs >= 2 models)

    def reference_config(self) -> ReferenceConfig | None:
        if self.reference_models == 0:
            return None
        return ReferenceConfig(
            models=self.reference_models,
            online=self.reference_mode == "online",
            workers=self.workers,
            seed=self.seed,
        )

    def attack_specs(self) -> list[AttackSpec]:
        """The attack plan before remedies: the explicit list, else the preset."""
        if self.attacks is None:
            return list(preset_specs(self.preset))
        pgd_like = {"steps": self.pgd_steps, "restarts": self.pgd_restarts}
        return [AttackSpec(name, pgd_like if name in ("pgd", "bim") else {}) for name in self.attacks]


@dataclass
class AuditOutcome:
    """What :func:`run_audit` returns: the result and where its files went."""

    result: AuditResult
    robustness_run: RobustnessRun | None
    files: dict[str, Path] = field(default_factory=dict)


def _model_metadata(model: Any, trust_model: bool) -> dict[str, Any]:
    """The metadata a model file records (empty for other formats), after the safe-loading check, so a missing
    or unsafe file is reported before anything else happens."""
    if model is None:
        return read_safetensors_metadata(bundled_model_path())
    if isinstance(model, (str, Path)) and check_loadable(model, trust_model=trust_model) is ModelFormat.SAFETENSORS:
        return read_safetensors_metadata(model)
    return {}


def _resolve_data(data: str | Splits | None, meta: dict[str, Any], split_seed: int | None) -> tuple[Any, int]:
    recorded = meta.get("data") or {}
    seed = split_seed if split_seed is not None else int(recorded.get("split_seed", 0))
    if data is None:
        if not recorded.get("source"):
            raise ConfigError("the model does not record its training data; pass --data")
        return recorded["source"], seed
    return data, seed


def run_audit(
    model: str | Path | nn.Module | Classifier | None = None,
    data: str | Splits | None = None,
    *,
    config: AuditConfig | None = None,
    arch: str | None = None,
    trust_model: bool = False,
    device: str = "cpu",
    data_dir: str | None = None,
    label_column: str = "label",
    bounds: tuple[float, float] | None = None,
    out_dir: str | Path | None = None,
    store: Any = None,
    progress: Progress | None = None,
    resume: bool = True,
    keep_checkpoint: bool = False,
) -> AuditOutcome:
    """Audit ``model`` on ``data``; write ``result.json``, ``report.html`` and ``adversarial.npz`` to ``out_dir``
    and record the run in ``store`` (a :class:`~modelsec.store.RunStore`) when given.

    A model that draws its noise from torch's global generator draws it seeded by ``config.seed``, so the same
    seed gives the same result; the caller's generator is restored afterwards.

    With ``out_dir``, the audit checkpoints itself to ``out_dir/audit.ckpt`` as it goes and, with ``resume``,
    continues from a checkpoint of the same run left by an interrupted one (refusing one of another run);
    ``resume=False`` ignores and replaces it. See :mod:`modelsec.audits.checkpoint`. ``keep_checkpoint``: once
    done, leave a checkpoint holding the finished audit instead of deleting it, so that resuming returns the
    finished result at once (for :func:`~modelsec.audits.compare.run_compare`, which deletes it later)."""
    config = config or AuditConfig()
    with seeded(config.seed, device):
        return _run_audit(
            model, data, config=config, arch=arch, trust_model=trust_model, device=device, data_dir=data_dir,
            label_column=label_column, bounds=bounds, out_dir=out_dir, store=store, progress=progress,
            resume=resume, keep_checkpoint=keep_checkpoint,
        )  # fmt: skip


def _run_audit(
    model: str | Path | nn.Module | Classifier | None,
    data: str | Splits | None,
    *,
    config: AuditConfig,
    arch: str | None,
    trust_model: bool,
    device: str,
    data_dir: str | None,
    label_column: str,
    bounds: tuple[float, float] | None,
    out_dir: str | Path | None,
    store: Any,
    progress: Progress | None,
    resume: bool,
    keep_checkpoint: bool,
) -> AuditOutcome:
    progress = progress or NullProgress()
    if out_dir is not None:
        check_writable_folder(out_dir)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    created = dt.datetime.now(dt.timezone.utc)

    meta = _model_metadata(model, trust_model)
    data_source, split_seed = _resolve_data(data, meta, config.split_seed)
    splits = (
        data_source
        if isinstance(data_source, Splits)
        else load_splits(str(data_source), seed=split_seed, data_dir=data_dir, label_column=label_column, bounds=bounds)
    )
    recorded = meta.get("data") or {}
    same_split = recorded.get("source") == splits.source and recorded.get("split_seed", splits.seed) == splits.seed
    if recorded.get("members_used") and not isinstance(data_source, Splits) and same_split:
        # a model trained on the first N members: only those are members (the rest join the population)
        splits = splits.with_members_used(int(recorded["members_used"]))
    timings["load_data"] = time.perf_counter() - t0

    t = time.perf_counter()
    classifier, info = _classifier(model, splits, arch=arch, trust_model=trust_model, device=device)
    timings["load_model"] = time.perf_counter() - t
    mia_plan = plan_membership_attacks(config.membership_attacks, classifier.capability, config.reference_config())
    overlaps = splits.overlaps()
    data_info = DataInfo(
        name=splits.source,
        split_seed=splits.seed,
        n_members=len(splits.members),
        n_nonmembers=len(splits.nonmembers),
        n_population=len(splits.population),
        bounds=[float(b) for b in splits.bounds],
        sha256={
            "members": splits.members.sha256(),
            "nonmembers": splits.nonmembers.sha256(),
            "population": splits.population.sha256(),
        },
        overlaps=overlaps,
        class_names=list(splits.members.class_names) if splits.members.class_names else None,
    )

    rng = np.random.default_rng(config.seed)
    gen = generator(config.seed)

    # Evasion: attack a seeded sample of non-members.
    n = min(config.samples, len(splits.nonmembers))
    if n < config.samples:
        warnings.warn(
            f"--samples {config.samples} is more than the {n} test records of {splits.source}; all {n} are attacked",
            stacklevel=2,
        )
    idx = np.sort(rng.permutation(len(splits.nonmembers))[:n])
    x = torch.from_numpy(splits.nonmembers.x[idx])
    y = torch.from_numpy(splits.nonmembers.y[idx])

    checkpoint = (
        None
        if out_dir is None
        else AuditCheckpoint(out_dir, audit_run_key(config, info, data_info, classifier, device))
    )
    with contextlib.ExitStack() as stack:
        if checkpoint is not None:
            tracked = {
                "generator": track_generator(gen),
                # a randomised model's own noise comes from torch's global generator, seeded above
                "global_generator": track_generator(torch.random.default_generator),
                "queries": track_queries(classifier),
            }
            resumer = stack.enter_context(checkpointing(checkpoint.resumer(resume=resume, tracked=tracked)))
            if checkpoint.finished is not None:
                return _finished(checkpoint, keep_checkpoint, progress)
            if resumer.resuming:
                progress.note(f"resuming from {checkpoint.path}: {checkpoint.where or 'before the first attack'}")
        try:
            phases = _phases(
                classifier, splits, x, y, config, mia_plan, info, meta, overlaps, rng, gen, store, progress
            )
        except CheckpointMismatch as e:
            assert checkpoint is not None
            raise ConfigError(
                f"{checkpoint.path} does not match this audit ({e}); delete it or pass --no-resume (resume=False) "
                "to start over"
            ) from None
        except KeyboardInterrupt:
            if checkpoint is not None and checkpoint.where is not None:
                where = checkpoint.where or "before the first attack"
                raise KeyboardInterrupt(
                    f"the audit can be resumed from {checkpoint.path} ({where}) by rerunning the same command"
                ) from None
            raise
    timings.update(phases.timings)
    rob_run, remedies, attacks = phases.robustness, phases.remedies, phases.attacks
    privacy, exposed_images, candidates_sha256 = phases.privacy, phases.exposed_images, phases.candidates_sha256

    verdict = make_verdict(rob_run.result, privacy, config.norm)
    settings: dict[str, Any] = {
        "eps": list(config.eps),
        "norm": config.norm,
        "samples": n,
        **({"samples_requested": config.samples} if n < config.samples else {}),
        "mia_samples": config.mia_samples,
        "reference_models": config.reference_models,
        "reference_mode": config.reference_mode if config.reference_models else None,
        "preset": None if config.attacks is not None else config.preset,
        "attacks": attack_labels(attacks),
        "remedies": remedies.notes
        + ([f"EoT with {remedies.eot_samples} samples"] if remedies.eot_samples > 1 else [])
        + ([f"predictions by majority vote over {remedies.votes} passes"] if remedies.votes > 1 else []),
        "pgd_steps": config.pgd_steps,
        "pgd_restarts": config.pgd_restarts,
        "membership_attacks": [a.attack for a in privacy.attacks],
        "device": device,
        "verdict_rule": RULE,
        # content hashes of the records attacked and of the membership candidates: equal hashes, same records
        "samples_sha256": splits.nonmembers.subset(idx).sha256(),
        "mia_candidates_sha256": candidates_sha256,
    }
    from modelsec.store.runs import new_run_id

    files: dict[str, Path] = {}
    robustness = rob_run.result
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files["adversarial"] = out / "adversarial.npz"
        rob_run.save_npz(str(files["adversarial"]))
        robustness = replace(robustness, adversarial_file="adversarial.npz")
    timings["total"] = time.perf_counter() - t0
    result = AuditResult(
        schema_version=SCHEMA_VERSION,
        run_id=new_run_id(),
        created_at=created.isoformat(timespec="seconds"),
        model=info,
        data=data_info,
        robustness=robustness,
        privacy=privacy,
        verdict=verdict,
        settings=settings,
        seed=config.seed,
        versions=versions(),
        timings={k: round(v, 3) for k, v in timings.items()},
    )
    if out_dir is not None:
        from modelsec.report import write_html

        out = Path(out_dir)
        files["result"] = out / "result.json"
        result.save(files["result"])
        files["report"] = out / "report.html"
        write_html(result, files["report"], exposed_images=exposed_images)
        if privacy.exposed_records:
            files["exposed"] = write_exposed_csv(out / "exposed_records.csv", privacy.exposed_records)
    if store is not None:
        store.record_audit(result, out_dir=None if out_dir is None else str(out_dir), artifacts=files)
    if checkpoint is not None and keep_checkpoint:
        checkpoint.keep(json.loads(result.to_json()), {k: str(v) for k, v in files.items()})  # plain values only
    elif checkpoint is not None:
        checkpoint.delete()
    return AuditOutcome(result=result, robustness_run=rob_run, files=files)


def _finished(checkpoint: AuditCheckpoint, keep: bool, progress: Progress) -> AuditOutcome:
    """The outcome of an audit that had finished (its files written, its run recorded) when its checkpoint was
    kept: nothing is recomputed or rewritten."""
    assert checkpoint.finished is not None
    result = AuditResult.from_dict(checkpoint.finished["result"])
    files = {k: Path(v) for k, v in checkpoint.finished["files"].items()}
    progress.note(f"already audited ({checkpoint.path}): reusing {files.get('result', 'the result')}")
    if not keep:
        checkpoint.delete()
    return AuditOutcome(result=result, robustness_run=None, files=files)


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
    classifier: Classifier,
    splits: Splits,
    x: torch.Tensor,
    y: torch.Tensor,
    config: AuditConfig,
    mia_plan: tuple[list[MembershipAttack], list[str]],
    info: ModelInfo,
    meta: dict[str, Any],
    overlaps: dict[str, int],
    rng: np.random.Generator,
    gen: torch.Generator,
    store: Any,
    progress: Progress,
) -> _Phases:
    """Pre-checks, then the phases robustness, sanity checks and membership inference, each resumable: a
    checkpoint is written before each (the ``"audit"`` frame of :mod:`modelsec.core.resume`), and the robustness phase
    checkpoints itself inside (:func:`~modelsec.audits.robustness.evaluate_robustness`)."""
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
        attacks, skipped = build_attacks(apply_remedies(config.attack_specs(), remedies), classifier, config.norm)
        if not attacks:
            raise ConfigError(
                "no evasion attack can run on this model: " + "; ".join(f"{s.attack} {s.reason}" for s in skipped)
            )
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
                rob_run = evaluate_robustness(
                    classifier, x, y, attacks=attacks, eps=list(config.eps), norm=config.norm, generator=gen,
                    progress=progress,
                )  # fmt: skip
            elif phase == "sanity_checks":
                assert rob_run is not None
                rob_run.result = _sanity_checks(
                    classifier, rob_run, attacks, skipped, pre_flags, remedies, config, gen, progress
                )
            else:
                privacy, exposed_images, candidates_sha256 = _membership(
                    classifier, splits, config, mia_plan, info, meta, overlaps, rng, store, progress
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


def _reference_recipe(info: ModelInfo, meta: dict[str, Any], config: AuditConfig) -> tuple[str, TrainingConfig]:
    """The reference models' architecture (the target's when built-in, else the default for its input) and
    training recipe (the target's recorded one, else the defaults; ``reference_epochs`` overrides the epochs)."""
    arch = info.arch if info.arch is not None and info.arch in ARCHITECTURES else None
    arch = arch or default_architecture(tuple(info.input_shape))
    recorded = (meta.get("training") or {}).get("config") or {}
    known = {f.name for f in dataclasses.fields(TrainingConfig)} - {"seed"}
    training = TrainingConfig(**{k: v for k, v in recorded.items() if k in known})
    if config.reference_epochs is not None:
        training = replace(training, epochs=config.reference_epochs)
    return arch, training


def _membership(
    classifier: Classifier,
    splits: Splits,
    config: AuditConfig,
    plan: tuple[list[MembershipAttack], list[str]],
    info: ModelInfo,
    meta: dict[str, Any],
    overlaps: dict[str, int],
    rng: np.random.Generator,
    store: Any,
    progress: Progress,
) -> tuple[PrivacyResult, np.ndarray | None, str]:
    """The membership-inference part of an audit: its result, the most exposed members' inputs (for the
    report's thumbnails, images only) and a content hash of the candidates (members, then non-members)."""
    reference = config.reference_config()
    attacks, notes = plan[0], list(plan[1])
    recorded_size = (meta.get("data") or {}).get("members_used")
    pool = build_pool(
        splits,
        members=config.mia_samples,
        nonmembers=config.mia_samples,
        rng=rng,
        reference=reference,
        target_train_size=int(recorded_size) if recorded_size else len(splits.members),
        exclude_shared=any(overlaps.values()),
    )
    if min(pool.members.size, pool.nonmembers.size) < config.mia_samples:
        capped = (
            f"--mia-samples {config.mia_samples} is more than the data holds: {pool.members.size} members and "
            f"{pool.nonmembers.size} non-members were scored"
        )
        notes.append(capped)
        warnings.warn(capped, stacklevel=3)
    if any(overlaps.values()):
        notes.append(f"the splits share records ({overlaps}); those records were left out of membership inference")
    if pool.members.size != pool.nonmembers.size:
        notes.append(
            f"unbalanced candidates: {pool.members.size} members, {pool.nonmembers.size} non-members "
            "(TPR, FPR and AUC do not depend on the balance; balanced accuracy weighs both classes equally)"
        )
    queries_before = classifier.queries
    target = target_signals(attacks, classifier, pool.records, generator=generator(config.seed), progress=progress)
    compute: dict[str, Any] = {}
    training = None
    if reference is not None:
        arch, recipe = _reference_recipe(info, meta, config)
        cache = store.signal_cache if store is not None else None
        training = reference_signals(pool, reference, arch=arch, training=recipe, cache=cache, progress=progress)
        compute.update(training.compute())
        compute["reference_mode"] = "online" if reference.online else "offline"
    inputs = MembershipInputs(
        target, None if training is None else training.signals, online=bool(reference and reference.online)
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
    privacy = PrivacyResult(attacks=results, notes=notes, exposed_records=exposed, compute=compute)
    candidates = pool.records.subset(np.concatenate([pool.members, pool.nonmembers])).sha256()
    return privacy, images, candidates


def _classifier(
    model: Any, splits: Splits, *, arch: str | None, trust_model: bool, device: str
) -> tuple[Classifier, ModelInfo]:
    if isinstance(model, Classifier):
        return model, ModelInfo(
            path=None,
            sha256=None,
            arch=arch,
            format="python",
            num_classes=model.num_classes,
            input_shape=list(model.input_shape),
            parameters=model.num_parameters(),
        )
    if isinstance(model, nn.Module):
        clf = Classifier(
            model,
            input_shape=splits.input_shape,
            num_classes=splits.num_classes,
            bounds=splits.bounds,
            device=device,
            name=type(model).__name__,
        )
        return clf, ModelInfo(
            path=None,
            sha256=None,
            arch=arch,
            format="nn.Module",
            num_classes=clf.num_classes,
            input_shape=list(clf.input_shape),
            parameters=clf.num_parameters(),
        )
    loaded = load_model(
        model,
        arch=arch,
        input_shape=splits.input_shape,
        num_classes=splits.num_classes,
        bounds=splits.bounds,
        trust_model=trust_model,
        device=device,
    )
    return loaded.classifier, loaded.info
