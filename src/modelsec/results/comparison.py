"""A comparison of several models under the same audit: typed, JSON-serialisable.

:func:`modelsec.compare` audits a baseline and its hardened variants with the same settings and seeds, on the same
attacked test records and the same membership candidates, and summarises each audit as a :class:`ModelSummary`.
The recommendation rule (:mod:`modelsec.audits.recommendation`) turns those summaries into a
:class:`Recommendation`. :class:`Comparison` is what ``comparison.json`` holds.

Accuracies and rates are fractions in ``[0, 1]``; ``max_accuracy_drop`` is in percentage points (5 = 0.05).

"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelsec.core.records import from_dict
from modelsec.results.audit import Interval
from modelsec.results.gate import GateOutcome

COMPARISON_SCHEMA_VERSION = 1
LOW_FPR = "0.001"  # the FPR at which leakage is compared: TPR at 0.1% FPR
DEFAULT_MAX_ACCURACY_DROP = 5.0  # percentage points of clean accuracy below the baseline's


@dataclass(frozen=True, kw_only=True)
class ModelSummary:
    """One compared model: what it is, and its audit's headline numbers.

    ``robust_accuracy``/``robust_ci`` are the per-sample worst case over every attack, keyed by epsilon as in
    ``result.json`` (``"0.1"``). The membership numbers are those of the strongest attack (``mia_attack``: the
    highest TPR at 0.1% FPR, then the highest AUC); ``epsilon_lower_bound`` is its empirical lower bound, never a
    guarantee. ``dp_epsilon``/``dp_delta``: the differential-privacy claim the model's defense records, if any.
    ``robustness_overestimated``: a robustness sanity check fired and stayed unresolved, so the robust accuracy is
    likely an overestimate. ``out_dir``: the model's own audit folder, relative to ``comparison.json``.
    """

    name: str
    path: str | None = None
    baseline: bool = False
    defense: str | None = None
    defense_config: dict[str, Any] | None = None
    guarantee: str | None = None
    clean_accuracy: float | None = None
    clean_ci: Interval | None = None
    robust_accuracy: dict[str, float] = field(default_factory=dict)
    robust_ci: dict[str, Interval] = field(default_factory=dict)
    mia_attack: str | None = None
    mia_auc: float | None = None
    mia_auc_ci: Interval | None = None
    mia_tpr: float | None = None
    mia_tpr_ci: Interval | None = None
    epsilon_lower_bound: float | None = None
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    training_seconds: float | None = None
    verdict_level: str = "unknown"
    verdict_headline: str = ""
    flags: list[str] = field(default_factory=list)
    robustness_overestimated: bool = False
    n_samples: int | None = None
    n_members: int | None = None
    n_nonmembers: int | None = None
    run_id: str | None = None
    out_dir: str | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    audit_seconds: float | None = None
    gate: GateOutcome | None = None  # the policy's outcome on this model (compare --policy); absent when none

    def robust_at(self, eps: str | None) -> float | None:
        """Worst-case robust accuracy at the epsilon key ``eps`` (matched numerically), or ``None``."""
        key = _find_eps(self.robust_accuracy, eps)
        return None if key is None else self.robust_accuracy[key]

    def robust_ci_at(self, eps: str | None) -> Interval | None:
        key = _find_eps(self.robust_ci, eps)
        return None if key is None else self.robust_ci[key]


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    """The outcome of :func:`recommend`.

    ``eligible``: models within ``max_accuracy_drop`` points of the baseline's clean accuracy (in input order);
    ``excluded``: the others, each with the reason. ``most_robust``/``least_leaking``: the models the rule picks
    (``None`` when none qualifies, with the reason in ``notes``). ``unresolved``: eligible models never picked as
    most robust because a robustness check stayed unresolved. ``eps``: the epsilon key robustness was compared at.
    """

    max_accuracy_drop: float
    baseline: str
    eps: str | None
    eligible: list[str]
    excluded: dict[str, str]
    most_robust: str | None
    least_leaking: str | None
    unresolved: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rule: str = ""

    def outcome(self) -> list[str]:
        """The outcome in sentences, as the report states it."""
        eps = f" at ε = {float(self.eps):g}" if self.eps is not None else ""
        out = [
            f"Most robust{eps}: {self.most_robust}." if self.most_robust else "Most robust: no model qualifies.",
            f"Least leaking: {self.least_leaking}." if self.least_leaking else "Least leaking: no model qualifies.",
        ]
        return out


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """What ``comparison.json`` holds: every model's summary (the baseline first), the recommendation, the shared
    audit settings and data, notes (consistency of the shared records, work reused) and timings."""

    schema_version: int
    created_at: str
    baseline: str
    models: list[ModelSummary]
    recommendation: Recommendation
    settings: dict[str, Any]
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def model(self, name: str) -> ModelSummary:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def eps_keys(self) -> list[str]:
        """Every epsilon key any model was audited at, sorted numerically."""
        keys: dict[float, str] = {}
        for m in self.models:
            for k in m.robust_accuracy:
                keys.setdefault(float(k), k)
        return [keys[v] for v in sorted(keys)]

    @property
    def gate_passed(self) -> bool | None:
        """Every model passed the policy (``compare --policy``); ``None`` when the comparison ran without one."""
        gates = [m.gate for m in self.models if m.gate is not None]
        return None if not gates else all(g.passed for g in gates)

    def to_dict(self) -> dict[str, Any]:
        """What ``comparison.json`` holds; a model's ``gate`` only when the comparison ran with a policy."""
        d = dataclasses.asdict(self)
        for model in d["models"]:
            if model["gate"] is None:
                del model["gate"]
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.write_text(self.to_json() + "\n", encoding="utf-8")
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Comparison:
        version = int(d["schema_version"])
        if version > COMPARISON_SCHEMA_VERSION:
            raise ValueError(
                f"comparison schema version {version} is newer than this modelsec understands "
                f"({COMPARISON_SCHEMA_VERSION}); upgrade modelsec"
            )
        return from_dict(cls, {"settings": {}, "data": {}, **d})

    @classmethod
    def load(cls, path: str | Path) -> Comparison:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def _repr_html_(self) -> str:
        """The comparison as a self-contained HTML fragment, which Jupyter shows as a cell's output: the
        recommendation, the summary table and the trade-off plot. Rendered by :mod:`modelsec.report.notebook`
        through the hook of :mod:`modelsec.results.display`."""
        from modelsec.results.display import repr_html

        return repr_html(self)

    def show(self) -> Path:
        """Write the full comparison report (as ``comparison.html``) to a temporary file, open it in the web browser
        (:func:`webbrowser.open`) and return the file's path."""
        from modelsec.results.display import show

        return show(self)


def _find_eps(d: Mapping[str, Any], eps: str | None) -> str | None:
    if eps is None:
        return None
    if eps in d:
        return eps
    for k in d:
        if math.isclose(float(k), float(eps), rel_tol=1e-9, abs_tol=1e-12):
            return k
    return None
