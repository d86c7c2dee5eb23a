"""Compare a baseline and its hardened variants under one audit, and recommend one.

Every model gets the same :class:`~modelsec.audits.AuditConfig` (same seed) on the same :class:`Splits` (loaded
once, same split seed), so the audits attack the same test records and score the same membership candidates; each
audit records content hashes of both (``samples_sha256``, ``mia_candidates_sha256``), which the comparison checks.
What can be shared is: the data are loaded once, and reference models for membership attacks are cached by content
in the run store's signal cache (a temporary one when no store is given), so they train once for all models. The
work on each target model (attacks, its membership signals) cannot be shared.

:mod:`modelsec.outputs.compare` writes each model's own audit to ``OUT/<name>/`` (``result.json``, ``report.html``,
``adversarial.npz``) as soon as it finishes, and the comparison to ``OUT/comparison.json``, ``OUT/comparison.html``
and ``OUT/comparison.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelsec.audits.membership import strongest
from modelsec.audits.recommendation import recommend
from modelsec.audits.runner import AuditConfig, AuditOutcome, run_audit
from modelsec.core.errors import ConfigError, ModelLoadError
from modelsec.core.options import check_writable_folder
from modelsec.core.progress import NullProgress, Progress
from modelsec.core.version import versions
from modelsec.data import load_splits
from modelsec.data.dataset import Splits
from modelsec.data.user_split import SplitFiles
from modelsec.models.card import DataRecord, Guarantees, ModelCard
from modelsec.models.loading import read_card
from modelsec.results.audit import AuditResult, MembershipAttackResult
from modelsec.results.comparison import (
    COMPARISON_SCHEMA_VERSION,
    DEFAULT_MAX_ACCURACY_DROP,
    LOW_FPR,
    Comparison,
    ModelSummary,
)
from modelsec.store.cache import SignalCache

_FINGERPRINTS = ("samples_sha256", "mia_candidates_sha256")


AuditHook = Callable[[str, AuditOutcome], AuditOutcome]
"""Called with a model's name and its audit's outcome as soon as the audit finishes, before the next one starts;
returns the outcome with the files it wrote (:mod:`modelsec.outputs.compare` writes the model's folder there)."""


@dataclass
class CompareOutcome:
    """What :func:`run_compare` returns: the comparison and every model's audit outcome, by model name (the
    baseline first); ``files``: what the outputs layer wrote for the comparison itself."""

    comparison: Comparison
    audits: dict[str, AuditOutcome]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def results(self) -> dict[str, AuditResult]:
        """Every model's audit result, by model name."""
        return {name: audit.result for name, audit in self.audits.items()}


@dataclass(frozen=True)
class _Candidate:
    name: str
    path: Path
    card: ModelCard  # from the file's header
    provenance: ModelCard | None  # from OUT.json beside it, if there is a readable one


def model_names(paths: Sequence[str | Path]) -> list[str]:
    """A folder-safe, distinct name per model file: its name without the extension (``models/at.safetensors`` ->
    ``at``), with ``-2``, ``-3`` ... appended to repeats."""
    names: list[str] = []
    for p in paths:
        stem = Path(p).name
        for suffix in (".safetensors", ".pt2", ".pth", ".pt", ".onnx"):
            if stem.endswith(suffix) and len(stem) > len(suffix):
                stem = stem[: -len(suffix)]
                break
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "model"
        name, k = base, 2
        while name in names or name == "comparison":
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def run_compare(
    baseline: str | Path,
    hardened: Sequence[str | Path],
    *,
    data: str | Splits | SplitFiles | None = None,
    config: AuditConfig | None = None,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    trust_model: bool = False,
    device: str = "cpu",
    data_dir: str | None = None,
    label_column: str = "label",
    bounds: tuple[float, float] | None = None,
    checkpoint_dir: str | Path | None = None,
    cache: SignalCache | None = None,
    on_audit: AuditHook | None = None,
    progress: Progress | None = None,
    resume: bool = True,
) -> CompareOutcome:
    """Audit ``baseline`` and every ``hardened`` model file with the same ``config`` on the same data and recommend
    one (:func:`modelsec.audits.recommendation.recommend`). Writes no output: :mod:`modelsec.outputs.compare`
    writes every audit and the comparison.

    ``data``: a data set name or file, :class:`Splits`, or the user's own split as
    :class:`~modelsec.data.SplitFiles`; ``None`` uses the data the baseline records (with
    ``config.split_seed``, else the baseline's recorded split seed). Every file is checked (exists, safe to load)
    before the first audit runs. ``cache``: where reference models' signals are cached (the run store's
    ``signal_cache``); ``None`` caches them in a temporary folder for this comparison only.

    Resumable per model (with ``checkpoint_dir``, checked to be writable first): each audit checkpoints itself to
    ``checkpoint_dir/<name>/audit.ckpt``; once finished, and once ``on_audit`` has written its files, its checkpoint
    is replaced by the finished audit and kept until the caller deletes it (when the comparison is written), so that
    rerunning an interrupted comparison reuses the finished audits and resumes the one under way; ``resume=False``
    starts every audit over.
    """
    config = config or AuditConfig()
    progress = progress or NullProgress()
    if not hardened:
        raise ConfigError("give at least one hardened model to compare with the baseline")
    if not (isinstance(max_accuracy_drop, (int, float)) and math.isfinite(max_accuracy_drop)) or max_accuracy_drop < 0:
        raise ConfigError(f"--max-accuracy-drop must be a number of percentage points >= 0, got {max_accuracy_drop}")
    if checkpoint_dir is not None:
        check_writable_folder(checkpoint_dir)
    paths = [Path(baseline), *(Path(p) for p in hardened)]
    candidates = [
        _Candidate(name, path, *_read_model(path, trust_model))
        for name, path in zip(model_names(paths), paths, strict=True)
    ]
    t0 = time.perf_counter()
    created = dt.datetime.now(dt.timezone.utc)
    splits = _splits(data, candidates[0], config, data_dir=data_dir, label_column=label_column, bounds=bounds)
    timings: dict[str, float] = {"load_data": round(time.perf_counter() - t0, 3)}

    with tempfile.TemporaryDirectory(prefix="modelsec-compare-") as tmp:
        audit_cache = cache if cache is not None else SignalCache(Path(tmp))
        audits: dict[str, AuditOutcome] = {}
        summaries: list[ModelSummary] = []
        for i, c in enumerate(candidates):
            progress.note(f"[{i + 1}/{len(candidates)}] auditing {c.name} ({c.path})")
            t = time.perf_counter()
            model_splits = own_members(splits, c.card)
            outcome = run_audit(
                c.path,
                model_splits,
                config=config,
                trust_model=trust_model,
                device=device,
                checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir) / c.name,
                cache=audit_cache,
                progress=progress,
                resume=resume,
            )
            if on_audit is not None:
                outcome = on_audit(c.name, outcome)
            if outcome.checkpoint is not None and not outcome.reused:
                outcome.checkpoint.keep(outcome.result, outcome.files)  # a rerun reuses this audit
            seconds = time.perf_counter() - t
            timings[c.name] = round(seconds, 3)
            audits[c.name] = outcome
            summaries.append(
                summarise(
                    outcome.result,
                    name=c.name,
                    path=c.path,
                    baseline=i == 0,
                    card=c.card,
                    provenance=c.provenance,
                    splits=model_splits,
                    audit_seconds=seconds,
                )
            )
    timings["total"] = round(time.perf_counter() - t0, 3)
    results = {name: audit.result for name, audit in audits.items()}
    recommendation = recommend(summaries, baseline=candidates[0].name, max_accuracy_drop=max_accuracy_drop)
    comparison = Comparison(
        schema_version=COMPARISON_SCHEMA_VERSION,
        created_at=created.isoformat(timespec="seconds"),
        baseline=candidates[0].name,
        models=summaries,
        recommendation=recommendation,
        settings={**_settings(results[candidates[0].name]), "max_accuracy_drop": float(max_accuracy_drop)},
        data={
            "name": splits.source,
            "split_seed": splits.seed,
            "sha256": dict(results[candidates[0].name].data.sha256),
        },
        notes=_consistency_notes(results) + _reuse_notes(results, cache is not None),
        timings=timings,
        versions=versions(),
    )
    return CompareOutcome(comparison=comparison, audits=audits)


def _read_model(path: Path, trust_model: bool) -> tuple[ModelCard, ModelCard | None]:
    """The card the file's header records (safetensors only) and the one its provenance records (``PATH.json``
    beside it; ``None`` when there is none or it cannot be read), after the safe-loading check: a missing or
    unsafe file fails here, before any audit runs."""
    card = read_card(path, trust_model=trust_model)
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        return card, None
    try:
        return card, ModelCard.from_provenance(json.loads(sidecar.read_text(encoding="utf-8")), source=str(sidecar))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ModelLoadError):
        return card, None


def _splits(
    data: str | Splits | SplitFiles | None,
    baseline: _Candidate,
    config: AuditConfig,
    *,
    data_dir: str | None,
    label_column: str,
    bounds: tuple[float, float] | None,
) -> Splits:
    if isinstance(data, Splits):
        return data
    if isinstance(data, SplitFiles):
        if config.split_seed is not None:
            raise ConfigError("--split-seed draws a split, but --members and --nonmembers give it; drop --split-seed")
        return load_splits(data, label_column=label_column, bounds=bounds)
    recorded = baseline.card.data or DataRecord()
    if data is None:
        if not recorded.source:
            raise ConfigError(f"the baseline {baseline.path} does not record its training data; pass --data")
        data = recorded.source
    seed = config.split_seed if config.split_seed is not None else (recorded.split_seed or 0)
    return load_splits(data, seed=seed, data_dir=data_dir, label_column=label_column, bounds=bounds)


def strongest_attack(result: AuditResult) -> MembershipAttackResult | None:
    """The membership attack with the highest TPR at 0.1% FPR, then the highest AUC (see
    :func:`modelsec.audits.membership.strongest`)."""
    if result.privacy is None or not result.privacy.attacks:
        return None
    return strongest(result.privacy.attacks, float(LOW_FPR))


def dp_claim(guarantees: Guarantees | None) -> tuple[float | None, float | None]:
    """The (epsilon, delta) a defense's recorded guarantees claim, or ``(None, None)``: read from
    ``details["epsilon"]``/``details["delta"]`` of a guarantee of kind ``"differential-privacy"`` or one that names
    an epsilon."""
    if guarantees is None:
        return None, None
    eps = _number(guarantees.details.get("epsilon"))
    delta = _number(guarantees.details.get("delta"))
    if eps is None and guarantees.kind != "differential-privacy":
        return None, None
    return eps, delta


def summarise(
    result: AuditResult,
    *,
    name: str,
    path: str | Path | None,
    baseline: bool,
    card: ModelCard,
    provenance: ModelCard | None = None,
    splits: Splits | None = None,
    out_dir: str | None = None,
    audit_seconds: float | None = None,
) -> ModelSummary:
    """One model's row of the comparison, from its audit result, the card its file's header records and the card
    its provenance records (``PATH.json``; the defense is the header's, else the provenance's)."""
    rob = result.robustness
    defense = card.defense or (None if provenance is None else provenance.defense)
    guarantees = (None if defense is None else defense.guarantees) or (
        None if provenance is None else provenance.guarantees
    )
    dp_epsilon, dp_delta = dp_claim(guarantees)
    flags = [f"{f.check} ({'resolved' if f.resolved else 'UNRESOLVED'})" for f in (rob.flags if rob else [])]
    run = None if provenance is None else provenance.run
    if run is not None and run.stop_reason:
        flags.append(f"training stopped early: {run.stop_reason}")
    if splits is not None:
        flags += _data_flags(card, splits)
    strongest = strongest_attack(result)
    training_seconds = _training_seconds(provenance)
    return ModelSummary(
        name=name,
        path=None if path is None else str(path),
        baseline=baseline,
        defense=None if defense is None else defense.name,
        defense_config=None if defense is None else defense.config,
        guarantee=None if guarantees is None else guarantees.summary,
        clean_accuracy=None if rob is None else rob.clean_accuracy,
        clean_ci=None if rob is None else rob.clean_ci,
        robust_accuracy={} if rob is None else dict(rob.robust_accuracy),
        robust_ci={} if rob is None else dict(rob.robust_ci),
        mia_attack=None if strongest is None else strongest.attack,
        mia_auc=None if strongest is None else _finite(strongest.auc),
        mia_auc_ci=None if strongest is None else strongest.auc_ci,
        mia_tpr=None if strongest is None else _finite(strongest.tpr_at_fpr.get(LOW_FPR)),
        mia_tpr_ci=None if strongest is None else strongest.tpr_ci.get(LOW_FPR),
        epsilon_lower_bound=None if strongest is None else strongest.epsilon_lower_bound,
        dp_epsilon=dp_epsilon,
        dp_delta=dp_delta,
        training_seconds=training_seconds,
        verdict_level=result.verdict.level,
        verdict_headline=result.verdict.headline,
        flags=flags,
        robustness_overestimated=rob is not None and any(not f.resolved for f in rob.flags),
        n_samples=None if rob is None else rob.n,
        n_members=None if strongest is None else strongest.n_members,
        n_nonmembers=None if strongest is None else strongest.n_nonmembers,
        run_id=result.run_id,
        out_dir=out_dir,
        fingerprints={k: str(result.settings[k]) for k in _FINGERPRINTS if k in result.settings},
        audit_seconds=None if audit_seconds is None else round(audit_seconds, 3),
        gate=result.gate,
    )


def _training_seconds(provenance: ModelCard | None) -> float | None:
    """The training time a provenance records: the run's, else (``modelsec train``) the history's."""
    if provenance is None:
        return None
    if provenance.run is not None and provenance.run.training_seconds is not None:
        return _number(provenance.run.training_seconds)
    history = None if provenance.training is None else provenance.training.history
    return None if history is None else _number(history.seconds)


def own_members(splits: Splits, card: ModelCard) -> Splits:
    """The splits as this model saw them: a model that records training on the first N members of the same
    data and split is audited against those N (see :meth:`Splits.with_members_used`), as ``run_audit`` does when it
    loads the data itself."""
    recorded = card.data or DataRecord()
    seed = splits.seed if recorded.split_seed is None else recorded.split_seed
    if splits.files:  # the user's own split: its members are the training records
        return splits
    if recorded.members_used and recorded.source == splits.source and seed == splits.seed:
        return splits.with_members_used(recorded.members_used)
    return splits


def _data_flags(card: ModelCard, splits: Splits) -> list[str]:
    """Where the model's recorded training data differ from the data compared on: its membership numbers then do
    not describe its own training set."""
    recorded = card.data or DataRecord()
    flags = []
    source, seed = recorded.source, recorded.split_seed
    if (source is not None and source != splits.source) or (seed is not None and seed != splits.seed):
        flags.append(
            f"trained on {source} (split seed {seed}), compared on {splits.source} (split seed {splits.seed}): "
            "its membership results do not describe its own training data"
        )
    used = recorded.members_used
    if used is not None and used != len(splits.members):
        flags.append(
            f"trained on {used} of the {len(splits.members)} members: candidates it never saw count as members"
        )
    return flags


def _settings(result: AuditResult) -> dict[str, Any]:
    """The audit settings every model shared (the fingerprints are per model)."""
    return {"seed": result.seed, **{k: v for k, v in result.settings.items() if k not in _FINGERPRINTS}}


def _consistency_notes(results: dict[str, AuditResult]) -> list[str]:
    notes = []
    first_name, first = next(iter(results.items()))
    for what, label in (
        ("samples_sha256", "attacked test records"),
        ("mia_candidates_sha256", "membership candidates"),
    ):
        values = {n: r.settings.get(what) for n, r in results.items()}
        if len(set(values.values())) == 1 and None not in values.values():
            notes.append(f"Every model was audited on the same {label} (SHA-256 {str(values[first_name])[:12]}…).")
        else:
            differ = [n for n, v in values.items() if v != values[first_name]]
            notes.append(f"The {label} differ from the baseline's for {', '.join(differ)}: compare with care.")
    differ = [n for n, r in results.items() if r.data.sha256 != first.data.sha256]
    if differ:
        notes.append(f"The data splits differ from the baseline's for {', '.join(differ)}.")
    return notes


def _reuse_notes(results: dict[str, AuditResult], persistent: bool) -> list[str]:
    cached = [n for n, r in results.items() if r.privacy is not None and r.privacy.compute.get("from_cache")]
    trained = [
        n
        for n, r in results.items()
        if r.privacy is not None and "reference_models" in r.privacy.compute and not r.privacy.compute.get("from_cache")
    ]
    if not cached and not trained:
        return []
    where = "the run store's signal cache" if persistent else "a cache kept for this comparison"
    return [
        f"Reference models: trained for {', '.join(trained) or 'no model'}; reused from {where} for "
        f"{', '.join(cached) or 'no model'} (same records, architecture and recipe)."
    ]


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
