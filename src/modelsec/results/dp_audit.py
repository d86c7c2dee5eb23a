"""Typed, JSON-serialisable results of the one-run privacy audit (``dp_audit.json``): the claim under test, the
empirical lower bound and the evidence behind it; for an audit of several independent runs (``--runs N``), each
run's summary and the combined bound. Written by :mod:`modelsec.audits.dp_audit`, rendered by
:mod:`modelsec.report.dp_audit`; no pickle, no model. ``dp_audit.schema.json`` (:func:`load_dp_audit_schema`)
is its JSON Schema, ``docs/result-schema.md`` explains every field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from modelsec.core.records import from_dict
from modelsec.results.gate import GateOutcome

DP_AUDIT_SCHEMA = "modelsec.dp-audit/1"
MULTI_RUN_FIELDS = ("runs", "run_count", "combined_lower_bound", "evidence_run")
"""The fields of an audit of several runs; absent from ``dp_audit.json`` for one run (the file of a one-run audit
is exactly as before they existed)."""


def load_dp_audit_schema() -> dict[str, Any]:
    """The JSON Schema of ``dp_audit.json`` (a fresh copy on every call)."""
    text = resources.files("modelsec.results.schema").joinpath("dp_audit.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@dataclass(frozen=True)
class DPClaim:
    """An ``(epsilon, delta)``-DP claim as an accountant made it: ``epsilon`` from ``accountant`` (the claim), every
    accountant's value in ``epsilons``, and the assumptions it rests on (sample rate, steps, noise) in ``details``."""

    epsilon: float
    delta: float
    accountant: str
    epsilons: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_guarantees(cls, guarantees: Any) -> DPClaim | None:
        """The claim of a defense's :class:`~modelsec.defenses.base.Guarantees` (``kind`` "differential-privacy"
        with an epsilon), else ``None``."""
        d = dict(getattr(guarantees, "details", None) or {})
        if getattr(guarantees, "kind", None) != "differential-privacy" or d.get("epsilon") is None:
            return None
        keep = ("noise_multiplier", "sample_rate", "steps", "l2_norm_clip", "dataset_size", "sampling", "adjacency")
        return cls(
            epsilon=float(d["epsilon"]),
            delta=float(d["delta"]),
            accountant=str(d.get("accountant", "")),
            epsilons={k: (None if v is None else float(v)) for k, v in dict(d.get("epsilons") or {}).items()},
            details={k: d[k] for k in keep if k in d},
        )


@dataclass(frozen=True)
class DPAuditRun:
    """One run of an audit of several (``runs`` of :class:`DPAuditResult`): its seed (canaries, their inclusion,
    its training), its lower bound at its own level (``level``: the audit's ``1 - beta / run_count``, or further
    corrected for ``tests`` choices of guesses), the guesses at that bound, the claim its training made, whether the
    bound stays within that claim, its accuracy, its seconds, and its canaries' scores (the evidence its bound
    is computed from, as the top level's)."""

    index: int
    seed: int
    lower_bound: float
    claimed_epsilon: float | None
    passed: bool
    k_plus: int
    k_minus: int
    r: int
    v: int
    included: int
    level: float
    tests: int
    test_accuracy: float | None
    train_accuracy: float | None
    train_seconds: float
    score_seconds: float
    bound_seconds: float
    included_scores: list[float] = field(default_factory=list)
    excluded_scores: list[float] = field(default_factory=list)


@dataclass
class DPAuditResult:
    """One one-run privacy audit (Steinke, Nasr & Jagielski 2023): the claim, the empirical epsilon lower bound at
    confidence ``level``, and the evidence.

    ``lower_bound`` is the largest epsilon that the canaries' guesses reject at ``delta`` (the claim's delta, or the
    audit's default without a claim), maximised over ``tests`` choices of guesses (``correction`` says whether that
    maximum was corrected for the choice); ``k_plus``/``k_minus``/``r``/``v`` are the guesses at the maximum.
    ``passed`` is ``lower_bound <= claimed_epsilon`` (True without a claim: nothing to contradict). A failure means
    the implementation does not deliver its claim: a bug, not a result.

    ``included_scores`` and ``excluded_scores`` are every canary's membership score (``score``; higher: more likely
    included), split by the truth. Seconds: ``train_seconds`` the one training run (with the canaries),
    ``score_seconds`` scoring the canaries, ``bound_seconds`` the statistics.

    An audit of ``run_count`` > 1 independent runs (:func:`modelsec.audits.dp_audit.combine_runs`) also has
    ``runs`` (each run's :class:`DPAuditRun`), ``combined_lower_bound`` (the largest of the runs' bounds, each at
    level ``1 - beta / run_count``: valid at ``1 - beta`` together) and ``evidence_run`` (the run that gave it).
    Then ``lower_bound`` is the combined bound and ``passed`` compares it with ``claimed_epsilon`` (the largest of
    the runs' claims), ``beta`` is the whole audit's, ``seed`` the audit's (run 0's), the seconds are the runs'
    sums, and the evidence (``k_plus`` ... ``v``, ``level``, ``tests``, ``included``, the scores, ``grid``,
    ``training``) is ``evidence_run``'s. For one run these four fields are ``None`` and absent from the JSON.
    """

    claimed_epsilon: float | None
    delta: float
    accountant: str | None
    epsilons: dict[str, float | None]
    lower_bound: float
    k_plus: int
    k_minus: int
    r: int
    v: int
    canaries: int
    included: int
    canary_kind: str
    score: str
    beta: float
    level: float
    correction: str
    tests: int
    included_scores: list[float]
    excluded_scores: list[float]
    train_seconds: float
    score_seconds: float
    bound_seconds: float
    seed: int
    passed: bool
    claim: DPClaim | None = None
    training: dict[str, Any] = field(default_factory=dict)
    grid: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runs: list[DPAuditRun] | None = None
    run_count: int | None = None
    combined_lower_bound: float | None = None
    evidence_run: int | None = None
    schema: str = DP_AUDIT_SCHEMA
    gate: GateOutcome | None = None  # the policy gate's outcome (audit-dp --policy); absent from the JSON when None

    @property
    def audit_seconds(self) -> float:
        """Training, scoring and the bound together: the audit's whole cost."""
        return self.train_seconds + self.score_seconds + self.bound_seconds

    def verdict(self) -> str:
        """One line: the bound beside the claim, and what it means."""
        bound = f"empirical epsilon lower bound {self.lower_bound:.3f} (at delta={self.delta:g}, {self.level:.0%})"
        if self.run_count is not None:
            bound = (
                f"combined empirical epsilon lower bound {self.lower_bound:.3f} (at delta={self.delta:g}; the "
                f"largest of {self.run_count} runs' bounds, each at {self.level:.2%}: {1 - self.beta:.0%} together)"
            )
        if self.claimed_epsilon is None:
            return f"{bound}; no DP claim to check (a non-private run)"
        if self.passed:
            return f"{bound} <= claimed epsilon {self.claimed_epsilon:.3f}: consistent with the claim"
        return (
            f"{bound} EXCEEDS the claimed epsilon {self.claimed_epsilon:.3f}: the training does not deliver its "
            "claim; that is a bug, not a result"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.runs is None:  # one run: the file as before audits of several runs existed
            for key in MULTI_RUN_FIELDS:
                del d[key]
        if d["gate"] is None:  # no policy: the file as before the gate existed
            del d["gate"]
        d["audit_seconds"] = self.audit_seconds
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DPAuditResult:
        if d.get("schema", DP_AUDIT_SCHEMA) != DP_AUDIT_SCHEMA:
            raise ValueError(f"not a {DP_AUDIT_SCHEMA} result: schema {d.get('schema')!r}")
        return from_dict(cls, d)

    @classmethod
    def load(cls, path: str | Path) -> DPAuditResult:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def _repr_html_(self) -> str:
        """The DP audit as a self-contained HTML fragment, which Jupyter shows as a cell's output: the verdict, the
        claimed and every accountant's epsilon beside the empirical lower bound, and the canaries' score histograms.
        Rendered by :mod:`modelsec.report.notebook` through the hook of :mod:`modelsec.results.display`."""
        from modelsec.results.display import repr_html

        return repr_html(self)

    def show(self) -> Path:
        """Write the full page (as ``dp_audit.html``) to a temporary file, open it in the web browser
        (:func:`webbrowser.open`) and return the file's path."""
        from modelsec.results.display import show

        return show(self)
