"""Typed, JSON-serialisable audit results (no pickle anywhere).

``AuditResult.to_dict()`` is exactly what ``result.json`` holds; its schema is versioned
(:data:`SCHEMA_VERSION`), documented in ``docs/result-schema.md`` and machine-checkable with
``modelsec/results/schema/result.schema.json``. Later versions only add fields; a reader of version 1 keeps working.
Members are the positive class in every membership result.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelsec.core.errors import DataError, printable
from modelsec.core.records import from_dict
from modelsec.results.gate import GateOutcome
from modelsec.results.schema import validate_result_dict
from modelsec.stats.intervals import EpsilonEvidence, Interval

SCHEMA_VERSION = 1


def eps_key(eps: float) -> str:
    """The canonical string form of an epsilon, used as a JSON key (``0.1`` -> ``"0.1"``)."""
    return repr(float(eps))


@dataclass(frozen=True)
class AttackCost:
    """What one attack run spent: the ``attacked`` samples (correctly classified ones it was handed; in a chain,
    those every earlier attack left standing), the ``forward`` passes (inputs sent through the model, the attack
    contract's own checks included) and ``backward`` passes (input gradients, each EoT sample counted), and the
    floor of each: what a perfect per-sample early stop would have spent (defined per attack family in
    :mod:`modelsec.attacks.cost`)."""

    attacked: int
    forward: int
    backward: int
    floor_forward: int
    floor_backward: int

    @property
    def overhead(self) -> float | None:
        """Passes spent per pass of the floor (1: none wasted) on the attack's dominant pass: backward passes for
        an attack that took gradients, forward passes for one that did not; ``None`` when the floor is 0."""
        spent, floor = (self.backward, self.floor_backward) if self.backward else (self.forward, self.floor_forward)
        return spent / floor if floor else None

    def __add__(self, other: AttackCost) -> AttackCost:
        return AttackCost(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)))


PROBE_CONFIDENCE = 0.95  # the confidence of an attack probe's bound (AttackProbe.bound)


@dataclass(frozen=True)
class AttackProbe:
    """An attack of a chain that ran as a probe (:mod:`modelsec.audits.robustness`): first on a seeded draw of
    ``probed`` of the ``standing`` samples every earlier attack left, then on the rest only where the draw gave a
    break. ``broken``: the probed samples it broke; ``skipped``: the standing samples it never attacked (their
    draw gave no break); ``vouching``: the probed samples behind those skipped (the draws that gave no break).
    Summed over blocks of records (:func:`~modelsec.audits.robustness.concatenate_runs`)."""

    standing: int
    probed: int
    broken: int
    skipped: int
    vouching: int

    def __add__(self, other: AttackProbe) -> AttackProbe:
        return AttackProbe(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)))

    def bound(self, confidence: float = PROBE_CONFIDENCE) -> float:
        """An upper bound, at ``confidence``, on how many of the ``skipped`` samples the attack would have broken:
        ``skipped * (1 - (1 - confidence) ** (1 / vouching))``, the exact binomial (Clopper-Pearson) bound on a
        break rate after ``vouching`` draws without a break (about ``3 / vouching`` at 95%, the "rule of three";
        Hanley & Lippman-Hand 1983). The draws are made without replacement, for which this bound is
        conservative."""
        if self.skipped == 0:
            return 0.0
        if self.vouching == 0:
            return float(self.skipped)
        return self.skipped * (1.0 - (1.0 - confidence) ** (1.0 / self.vouching))


@dataclass(frozen=True)
class AttackRobustness:
    """Robust accuracy of one attack at one epsilon: the fraction of samples still classified correctly, the
    seconds it took and the passes it spent (``cost``; ``None`` in results written before it was recorded).
    ``probe``: how it ran when it ran as a probe (``None``: on every sample standing)."""

    attack: str
    norm: str
    eps: float
    robust_accuracy: float
    ci_low: float
    ci_high: float
    n: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    cost: AttackCost | None = None
    probe: AttackProbe | None = None


# What an unresolved sanity flag means for the robustness numbers (Carlini et al. 2019): most checks see symptoms
# of attacks that were misled, so the numbers are too high; a model whose outputs depend on its batch-mates makes
# them depend on how the audit batched its queries, in either direction.
OVERESTIMATED = "robustness likely overestimated"
UNTRUSTWORTHY = "robustness numbers not trustworthy"
UNTRUSTWORTHY_CHECKS = frozenset({"batch-dependence"})
# How a deterministic model's prediction is made (modelsec.models.base.Classifier.prediction_rule).
ONE_PASS_PREDICTION = "argmax of one forward pass"


@dataclass(frozen=True)
class SanityFlag:
    """A sanity check that fired (Carlini et al. 2019; AutoAttack's checks). ``severity``: "warning" or "error".

    ``remedy`` says what the audit did about it (EoT, black-box attacks, BPDA, a margin loss), ``resolved`` whether
    the numbers reported already account for it. An unresolved flag means :attr:`consequence`.
    """

    check: str
    message: str
    severity: str = "warning"
    remedy: str | None = None
    resolved: bool = False

    @property
    def untrustworthy(self) -> bool:
        """True for a check whose unresolved flag leaves the numbers meaningless, not merely too high."""
        return self.check in UNTRUSTWORTHY_CHECKS

    @property
    def consequence(self) -> str:
        """What this flag, while unresolved, means for the robustness numbers."""
        return UNTRUSTWORTHY if self.untrustworthy else OVERESTIMATED


@dataclass(frozen=True)
class SkippedAttack:
    """An attack that was not run, and why (typically: it needs gradients or scores the model does not offer)."""

    attack: str
    reason: str


@dataclass(frozen=True)
class MinNormStats:
    """Distribution of the smallest adversarial perturbation a minimum-norm attack found, over the samples it
    broke (``found`` of ``n`` correctly classified samples attacked). ``quantiles``: "0.1" ... "0.9".
    ``seconds`` and ``cost``: those of the audit's own minimum-norm pass, when it ran one (``None`` when the
    distances came from the attack's run at the first epsilon, whose entry in ``results`` holds them)."""

    attack: str
    norm: str
    n: int
    found: int
    median: float | None  # None when no adversarial example was found
    mean: float | None
    quantiles: dict[str, float]
    seconds: float | None = None
    cost: AttackCost | None = None


@dataclass(frozen=True)
class RobustnessResult:
    """Evasion audit: clean accuracy, every (attack, eps) result, and the per-sample worst case per epsilon."""

    n: int
    clean_accuracy: float
    clean_ci: Interval
    results: list[AttackRobustness]
    robust_accuracy: dict[str, float]  # eps_key(eps) -> worst case over attacks, per sample
    robust_ci: dict[str, Interval]
    flags: list[SanityFlag]
    checks: list[str]  # names of the sanity checks that were run
    adversarial_file: str | None = None  # npz with the worst-case adversarial examples, relative to result.json
    preset: str | None = None  # "quick", "standard", "thorough", or None for an explicit attack list
    skipped: list[SkippedAttack] = field(default_factory=list)
    min_norm: list[MinNormStats] = field(default_factory=list)
    chain: bool = False  # True: each entry of ``results`` is cumulative (after that attack and all before it)
    # how a prediction (clean and adversarial alike) was made: Classifier.prediction_rule
    prediction: str = ONE_PASS_PREDICTION

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RobustnessResult:
        return from_dict(cls, d)


@dataclass(frozen=True)
class MembershipAttackResult:
    """One membership-inference attack's ROC summary. Members are the positive class.

    ``balanced_accuracy`` and ``epsilon_lower_bound`` were added within schema version 1: ``None`` only in
    results read from files written before them (a missing ``balanced_accuracy`` is derived from ``advantage``
    on loading). ``epsilon_lower_bound`` is a LOWER bound from this attack's evidence, never a guarantee.
    """

    attack: str
    auc: float
    auc_ci: Interval
    tpr_at_fpr: dict[str, float]  # "0.001" -> TPR at FPR <= 0.1%; also "0.01" and "0.1"
    tpr_ci: dict[str, Interval]
    advantage: float  # max over thresholds of TPR - FPR (Yeom et al. 2018)
    n_members: int
    n_nonmembers: int
    roc_fpr: list[float]  # a down-sampled ROC for plotting
    roc_tpr: list[float]
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    balanced_accuracy: float | None = None  # max over thresholds of (TPR + 1 - FPR) / 2
    epsilon_lower_bound: float | None = None  # empirical, at 95% confidence; 0 when no evidence
    epsilon_evidence: EpsilonEvidence | None = None  # None when the bound is 0 (or was not computed)


@dataclass(frozen=True)
class ExposedRecord:
    """A member that a membership attack singles out: ``rank`` 1 has the highest membership score.

    ``member_index`` is the record's index in the data's members split (the target's training records), so it can
    be looked up (:func:`modelsec.audits.exposure.most_exposed` gives positions in the scores it ranks, which the
    audit maps to the split); ``label`` is the record's class and ``class_name`` its name when the data set has
    names. Images are never stored in the result: the HTML report draws thumbnails only when it is given the
    inputs (``write_html(..., exposed_images=...)``, one per record).
    """

    rank: int
    member_index: int
    label: int
    class_name: str | None
    score: float
    attack: str


@dataclass(frozen=True)
class PrivacyResult:
    """Membership-inference audit: one entry per attack, the members most exposed, and the compute spent.

    ``compute`` is free-form with conventional keys: ``reference_models`` (shadow/reference models trained),
    ``reference_training_seconds``, ``forward_passes``; a key ending in ``seconds`` is a duration.
    ``reference_recipe``: how the reference models were trained, when there were any
    (:meth:`~modelsec.models.reference_recipe.ReferenceRecipe.record`): ``arch`` and the training settings
    (``epochs``, ``lr``, ``batch_size``, ...), ``guessed`` (modelsec guessed the architecture or the settings:
    the reference attacks may be weaker than they could be), ``guesses`` (what, in words) and ``how_to_set``.
    """

    attacks: list[MembershipAttackResult]
    notes: list[str] = field(default_factory=list)
    exposed_records: list[ExposedRecord] = field(default_factory=list)
    compute: dict[str, Any] = field(default_factory=dict)
    reference_recipe: dict[str, Any] | None = None

    @property
    def recipe_guessed(self) -> bool:
        """The reference models' recipe was (partly) guessed (see ``reference_recipe``)."""
        return bool(self.reference_recipe and self.reference_recipe.get("guessed"))


@dataclass(frozen=True)
class ModelInfo:
    path: str | None
    sha256: str | None
    arch: str | None
    format: str
    num_classes: int
    input_shape: list[int]
    parameters: int | None = None
    endpoint: dict[str, Any] | None = None  # a model behind a prediction API or a callable: what it cost (see
    # modelsec.models.adapters.endpoint.RemoteModel.record)
    capability: str | None = None  # "gradients", "scores" or "labels": what the audit could use
    notes: list[str] = field(default_factory=list)  # what an adapter did or guessed (layout, fallbacks, checks)
    dp_epsilon: float | None = None  # the DP claim the model file records (epsilon at dp_delta); added within version 1
    dp_delta: float | None = None


@dataclass(frozen=True)
class DataInfo:
    name: str
    split_seed: int
    n_members: int
    n_nonmembers: int
    n_population: int
    bounds: list[float]
    sha256: dict[str, str]  # split name -> content hash
    overlaps: dict[str, int] = field(default_factory=dict)  # "members/nonmembers" -> shared records
    class_names: list[str] | None = None
    n_test: int | None = None  # records of the user's test set (robustness measured on them), if one was given
    files: dict[str, dict[str, str]] | None = None  # the user's split: split name -> {"path", "sha256"} of its file


@dataclass(frozen=True)
class Verdict:
    """A one-line summary for the top of the report. ``level``: "ok", "warning" or "fail"."""

    level: str
    headline: str
    details: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AuditResult:
    schema_version: int
    run_id: str
    created_at: str
    model: ModelInfo
    data: DataInfo
    robustness: RobustnessResult | None
    privacy: PrivacyResult | None
    verdict: Verdict
    settings: dict[str, Any]
    seed: int
    versions: dict[str, str]
    timings: dict[str, float]
    gate: GateOutcome | None = None  # the policy gate's outcome (--policy); added within version 1

    def to_dict(self) -> dict[str, Any]:
        """What ``result.json`` holds; ``gate`` only when the audit ran with a policy, and the model's
        ``dp_epsilon``/``dp_delta`` only when it claims DP (absent means none, so a result without them is the same
        file as before the fields were added)."""
        d = dataclasses.asdict(self)
        if d["gate"] is None:
            del d["gate"]
        for key in ("dp_epsilon", "dp_delta"):  # the model's DP claim: only for a model that makes one
            if d["model"][key] is None:
                del d["model"][key]
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, allow_nan=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditResult:
        """The result a parsed ``result.json`` holds, after checking it against the result schema
        (:func:`modelsec.results.schema.validate_result_dict`): :class:`~modelsec.core.errors.DataError` naming the
        field when it is not a result of a schema version this modelsec reads."""
        try:
            validate_result_dict(d)
        except ValueError as e:
            raise DataError(printable(e, max_chars=1000)) from None
        return from_dict(cls, _with_balanced_accuracy(d))

    @classmethod
    def load(cls, path: str | Path) -> AuditResult:
        """Read ``result.json``; :class:`~modelsec.core.errors.DataError` naming the file and the problem when it cannot
        be read, is not JSON, or is not a result this modelsec reads."""
        where = printable(str(path))
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise DataError(f"{where}: cannot read the file ({printable(e.strerror or e)})") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{where} is not a modelsec result.json: not JSON ({printable(e)})") from None
        try:
            return cls.from_dict(d)
        except DataError as e:
            raise DataError(f"{where} is not a modelsec result this version reads: {e}") from None

    def _repr_html_(self) -> str:
        """The audit as a self-contained HTML fragment, which Jupyter shows as a cell's output: the verdict, robust
        accuracy per epsilon and each membership attack's AUC and TPR at low FPR with their intervals, and the plots.
        Rendered by :mod:`modelsec.report.notebook` through the hook of :mod:`modelsec.results.display`."""
        from modelsec.results.display import repr_html

        return repr_html(self)

    def show(self) -> Path:
        """Write the full HTML report (as ``report.html``) to a temporary file, open it in the web browser
        (:func:`webbrowser.open`) and return the file's path."""
        from modelsec.results.display import show

        return show(self)


def _with_balanced_accuracy(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with each membership attack's ``balanced_accuracy``, which files written before it lack: exactly
    ``(1 + advantage) / 2``."""
    privacy = d.get("privacy")
    if not isinstance(privacy, dict) or not any(a.get("balanced_accuracy") is None for a in privacy["attacks"]):
        return d
    attacks = [
        a if a.get("balanced_accuracy") is not None else {**a, "balanced_accuracy": (1.0 + float(a["advantage"])) / 2.0}
        for a in privacy["attacks"]
    ]
    return {**d, "privacy": {**privacy, "attacks": attacks}}
