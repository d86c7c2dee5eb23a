"""The report's numbers as rows of formatted strings, shared by the HTML and Markdown renderers.

Everything here is pure formatting over :mod:`modelsec.results.audit`: rates are shown as percentages
with one decimal, AUCs with three, sample counts with thousands separators. A missing value is an
em dash.

>>> pct(0.8734)
'87.3%'
>>> Rate.of(0.5, 0.45, 0.55).text
'50.0% (45.0–55.0%)'
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelsec.results.audit import (
    PROBE_CONFIDENCE,
    AttackCost,
    AuditResult,
    EpsilonEvidence,
    ExposedRecord,
    Interval,
    MembershipAttackResult,
    MinNormStats,
    PrivacyResult,
    RobustnessResult,
    SanityFlag,
    eps_key,
)

DASH = "—"
# The FPRs at which membership TPRs are reported: modelsec.stats.metrics.FPR_TARGETS (not imported, to keep the report
# free of scikit-learn).
LOW_FPRS = (0.001, 0.01, 0.1)
LEVELS = ("ok", "warning", "fail")
LEVEL_LABELS = {"ok": "PASS", "warning": "WARNING", "fail": "FAIL"}
NORM_NAMES = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}
# The quantiles of a minimum-norm attack's perturbation sizes shown beside the median.
MIN_NORM_QUANTILES = (0.1, 0.25, 0.75, 0.9)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def pct(x: float | None) -> str:
    """A fraction as a percentage, one decimal: ``0.8734 -> "87.3%"``; missing -> em dash."""
    return f"{100.0 * x:.1f}%" if x is not None and _finite(x) else DASH


def pct_range(low: float | None, high: float | None) -> str:
    """An interval of fractions as ``"45.0–55.0%"``."""
    if low is None or high is None or not (_finite(low) and _finite(high)):
        return ""
    return f"{100.0 * low:.1f}–{100.0 * high:.1f}%"


def num(x: float | None, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if x is not None and _finite(x) else DASH


def count(n: int | None) -> str:
    return DASH if n is None else f"{n:,}"


def size(x: float | None) -> str:
    """A perturbation size, three significant digits: ``0.031372 -> "0.0314"``; missing -> em dash."""
    return f"{x:.3g}" if x is not None and _finite(x) else DASH


def norm_label(norm: str) -> str:
    """A norm's display name: ``"linf" -> "L∞"``; unknown names unchanged."""
    return NORM_NAMES.get(norm.lower(), norm)


def eps_label(eps: float) -> str:
    """An epsilon as the user wrote it (``0.03``), or as an exact fraction of 255 (``8/255``)."""
    k = eps * 255.0
    if eps > 0 and abs(k - round(k)) < 1e-9 and round(k) not in (0, 255) and len(f"{eps:g}") > 6:
        return f"{round(k)}/255"
    return f"{eps:g}"


def duration(seconds: float | None) -> str:
    """``4.2 -> "4.2 s"``, ``125 -> "2 min 5 s"``, ``7300 -> "2 h 1 min"``."""
    if seconds is None or not _finite(seconds):
        return DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def value_text(value: Any) -> str:
    """A setting's value as short text: scalars as-is, containers as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    try:
        return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)
    except (TypeError, ValueError):
        return str(value)


def model_name(result: AuditResult) -> str:
    """A human name for the audited model: the file name, else the architecture, else its format."""
    m = result.model
    if m.path:
        base = os.path.basename(m.path.rstrip("/\\"))
        if base:
            return base
    if m.arch:
        return m.arch
    return f"{m.format} model"


def verdict_level(level: str) -> str:
    """The verdict level as a CSS-safe token: ``ok``, ``warning``, ``fail`` or ``unknown``."""
    return level if level in LEVELS else "unknown"


def ci_note(intervals: Iterable[Interval]) -> str:
    """A sentence naming the confidence levels and methods of ``intervals`` (``""`` if none)."""
    by_level: dict[float, set[str]] = {}
    for iv in intervals:
        by_level.setdefault(iv.level, set()).add(iv.method)
    if not by_level:
        return ""
    parts = [
        f"{100.0 * level:g}% confidence intervals ({', '.join(sorted(m))})" for level, m in sorted(by_level.items())
    ]
    return "Ranges are " + " and ".join(parts) + "."


@dataclass(frozen=True)
class Rate:
    """A formatted rate and its formatted confidence interval (``ci`` is ``""`` if none)."""

    value: str
    ci: str = ""

    @classmethod
    def of(cls, x: float | None, low: float | None = None, high: float | None = None) -> Rate:
        return cls(pct(x), pct_range(low, high) if _finite(x) else "")

    @classmethod
    def of_interval(cls, x: float | None, ci: Interval | None) -> Rate:
        return cls.of(x, None if ci is None else ci.low, None if ci is None else ci.high)

    @property
    def text(self) -> str:
        return f"{self.value} ({self.ci})" if self.ci else self.value


# -- robustness ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RobustnessRow:
    """One attack and norm across every epsilon; ``cells[i]`` is ``None`` if not run at ``eps[i]``."""

    attack: str
    norm: str
    cells: list[Rate | None]
    worst_case: bool = False


@dataclass(frozen=True)
class RobustnessTable:
    eps: list[float]
    eps_labels: list[str]
    rows: list[RobustnessRow]  # one per (attack, norm), then the worst case last


def robustness_eps(rob: RobustnessResult) -> list[float]:
    """Every epsilon in the result, sorted: from the per-attack results and the worst-case keys."""
    values = {float(r.eps) for r in rob.results}
    for k in rob.robust_accuracy:
        try:
            values.add(float(k))
        except ValueError:
            continue
    return sorted(values)


def worst_case(rob: RobustnessResult, eps: float) -> tuple[float | None, Interval | None]:
    """The per-sample worst-case robust accuracy at ``eps`` and its interval (``None`` if absent)."""
    key = _find_key(rob.robust_accuracy, eps)
    if key is None:
        return None, None
    ci_key = _find_key(rob.robust_ci, eps)
    return rob.robust_accuracy[key], None if ci_key is None else rob.robust_ci[ci_key]


def robustness_table(rob: RobustnessResult) -> RobustnessTable:
    eps = robustness_eps(rob)
    order: list[tuple[str, str]] = []
    cells: dict[tuple[str, str], dict[str, Rate]] = {}
    for r in rob.results:
        key = (r.attack, r.norm)
        if key not in cells:
            order.append(key)
            cells[key] = {}
        cells[key][eps_key(r.eps)] = Rate.of(r.robust_accuracy, r.ci_low, r.ci_high)
    rows = [
        RobustnessRow(attack, norm_label(norm), [cells[(attack, norm)].get(eps_key(e)) for e in eps])
        for attack, norm in order
    ]
    worst: list[Rate | None] = []
    for e in eps:
        acc, ci = worst_case(rob, e)
        worst.append(None if acc is None else Rate.of_interval(acc, ci))
    norms = sorted({norm_label(n) for _, n in order})
    rows.append(RobustnessRow("Worst case (per sample)", ", ".join(norms), worst, worst_case=True))
    return RobustnessTable(eps, [eps_label(e) for e in eps], rows)


@dataclass(frozen=True)
class CheckRow:
    """A sanity check, its ``status`` (``"passed"``, ``"warning"``, ``"error"``), its messages and the flags that
    fired (each with its ``remedy`` and whether it is ``resolved``)."""

    check: str
    status: str
    messages: list[str]
    flags: list[SanityFlag] = field(default_factory=list)

    @property
    def unresolved(self) -> int:
        return sum(not f.resolved for f in self.flags)


def check_rows(rob: RobustnessResult) -> list[CheckRow]:
    """Every check that was run, in order, then any flag whose check is not in ``rob.checks``."""
    names = list(dict.fromkeys([*rob.checks, *(f.check for f in rob.flags)]))
    rows = []
    for name in names:
        fired = [f for f in rob.flags if f.check == name]
        if not fired:
            rows.append(CheckRow(name, "passed", []))
            continue
        status = "error" if any(f.severity == "error" for f in fired) else "warning"
        rows.append(CheckRow(name, status, [f.message for f in fired], fired))
    return rows


def unresolved_flags(rob: RobustnessResult) -> int:
    """How many fired sanity flags the reported numbers do not account for."""
    return sum(not f.resolved for f in rob.flags)


@dataclass(frozen=True)
class MinNormRow:
    """A minimum-norm attack's perturbation sizes; ``quantiles`` follow :data:`MIN_NORM_QUANTILES`."""

    attack: str
    norm: str
    found: str  # "412 / 912"
    found_rate: str  # "45.2%"
    median: str
    mean: str
    quantiles: list[str]


def quantile_label(q: float) -> str:
    """``0.1 -> "10%"``, ``0.25 -> "25%"``."""
    return f"{100.0 * q:g}%"


def _min_norm_row(m: MinNormStats) -> MinNormRow:
    any_found = m.found > 0
    quantiles = []
    for q in MIN_NORM_QUANTILES:
        key = _find_key(m.quantiles, q)
        quantiles.append(size(m.quantiles[key]) if any_found and key is not None else DASH)
    return MinNormRow(
        attack=m.attack,
        norm=norm_label(m.norm),
        found=f"{m.found:,} / {m.n:,}",
        found_rate=pct(m.found / m.n) if m.n > 0 else DASH,
        median=size(m.median) if any_found else DASH,
        mean=size(m.mean) if any_found else DASH,
        quantiles=quantiles,
    )


def min_norm_rows(rob: RobustnessResult) -> list[MinNormRow]:
    """One row per minimum-norm attack; sizes are a dash when the attack broke no sample."""
    return [_min_norm_row(m) for m in rob.min_norm]


@dataclass(frozen=True)
class CostRow:
    """Where an audit's attack time went: one attack run (at one eps, or the minimum-norm pass), its samples,
    passes and their floor (what a perfect per-sample early stop would spend), seconds and share of the attacks'
    time. Passes are dashes for results written before they were recorded."""

    attack: str
    eps: str  # "0.03", or "min-norm" for the minimum-norm pass
    samples: str
    forward: str
    backward: str
    floor: str  # "6,281 / 3,608" (forward / backward)
    overhead: str  # "1.23x" spent per pass of the floor, on the dominant pass
    seconds: str
    share: str
    raw_seconds: float


def _passes(n: int | None) -> str:
    return DASH if n is None else f"{n:,}"


def cost_rows(rob: RobustnessResult) -> list[CostRow]:
    """One row per attack run, in the order they ran (the minimum-norm passes last), with its share of the time of
    all of them."""
    runs: list[tuple[str, str, float, AttackCost | None]] = [
        (a.attack, eps_label(a.eps), a.seconds, a.cost) for a in rob.results
    ]
    runs += [(m.attack, "min-norm", m.seconds, m.cost) for m in rob.min_norm if m.seconds is not None]
    total = sum(sec for _, _, sec, _ in runs)
    rows = []
    for attack, eps, seconds, c in runs:
        overhead = None if c is None else c.overhead
        rows.append(
            CostRow(
                attack=attack,
                eps=eps,
                samples=DASH if c is None else f"{c.attacked:,}",
                forward=DASH if c is None else _passes(c.forward),
                backward=DASH if c is None else _passes(c.backward),
                floor=DASH if c is None else f"{c.floor_forward:,} / {c.floor_backward:,}",
                overhead=DASH if overhead is None else f"{overhead:.2f}x",
                seconds=duration(seconds),
                share=pct(seconds / total) if total > 0 else DASH,
                raw_seconds=seconds,
            )
        )
    return rows


def probe_notes(rob: RobustnessResult) -> list[str]:
    """One sentence per attack run as a probe (:class:`~modelsec.results.audit.AttackProbe`): what it attacked, what
    it broke, and when it left samples unattacked, the 95% bound on what it would have broken among them, by which
    the robust accuracy after it may be too high."""
    notes = []
    for a in rob.results:
        p = a.probe
        if p is None:
            continue
        text = (
            f"{a.attack} at ε = {eps_label(a.eps)} ran as a probe: first on a seeded draw of {p.probed:,} of the "
            f"{p.standing:,} samples standing"
        )
        if p.broken:
            text += f", where it broke {p.broken:,}"
            if p.skipped:
                text += " (in some blocks of records; there it ran on the rest too)"
            else:
                text += ", so it then ran on the rest too"
        if p.skipped:
            bound = p.bound()
            text += (
                f"; it broke none of {p.vouching:,} drawn samples, so {p.skipped:,} were not attacked. With "
                f"{PROBE_CONFIDENCE:.0%} confidence it would have broken at most {bound:.1f} of them "
                f"({pct(bound / a.n) if a.n else DASH} of the {a.n:,} samples): the robust accuracy after it may be "
                "that much too high"
            )
        notes.append(text + ".")
    return notes


def robustness_intervals(rob: RobustnessResult) -> list[Interval]:
    """The intervals whose level and method the result records (per-attack CIs carry neither)."""
    return [rob.clean_ci, *rob.robust_ci.values()]


# -- privacy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrivacyRow:
    attack: str
    auc: str
    auc_ci: str
    tpr: list[Rate]  # one per LOW_FPRS
    balanced_accuracy: str
    advantage: str
    epsilon: str  # the empirical epsilon lower bound, "0" without evidence, a dash when not computed
    epsilon_at: str  # the threshold that gave it, by its target: "at 1% FNR", or ""
    seconds: str
    n_members: str
    n_nonmembers: str


def tpr_at(a: MembershipAttackResult, fpr: float) -> tuple[float | None, Interval | None]:
    """TPR at ``fpr`` (keys such as ``"0.001"`` are matched numerically) and its interval."""
    key = _find_key(a.tpr_at_fpr, fpr)
    if key is None:
        return None, None
    ci_key = _find_key(a.tpr_ci, fpr)
    return a.tpr_at_fpr[key], None if ci_key is None else a.tpr_ci[ci_key]


def epsilon_text(value: float | None) -> str:
    """An empirical epsilon bound, two decimals: ``0.6356 -> "0.64"``, ``0.0 -> "0"``; missing -> em dash."""
    if value is None or not _finite(value):
        return DASH
    return "0" if value == 0 else f"{value:.2f}"


def epsilon_where(evidence: EpsilonEvidence | None) -> str:
    """The threshold that gave the bound, by its target: ``"at 0.1% FPR"`` or ``"at 1% FNR"``; ``""`` without
    evidence."""
    if evidence is None:
        return ""
    return f"at {fpr_label(evidence.target)} {evidence.rule.upper()}"


def privacy_rows(priv: PrivacyResult) -> list[PrivacyRow]:
    rows = []
    for a in priv.attacks:
        tprs = [Rate.of_interval(*tpr_at(a, f)) for f in LOW_FPRS]
        auc_ci = f"{num(a.auc_ci.low)}–{num(a.auc_ci.high)}" if _finite(a.auc) else ""
        balanced = a.balanced_accuracy if a.balanced_accuracy is not None else (1.0 + a.advantage) / 2.0
        rows.append(
            PrivacyRow(
                attack=a.attack,
                auc=num(a.auc),
                auc_ci=auc_ci,
                tpr=tprs,
                balanced_accuracy=pct(balanced),
                advantage=pct(a.advantage),
                epsilon=epsilon_text(a.epsilon_lower_bound),
                epsilon_at=epsilon_where(a.epsilon_evidence),
                seconds=duration(a.seconds),
                n_members=count(a.n_members),
                n_nonmembers=count(a.n_nonmembers),
            )
        )
    return rows


def privacy_counts(priv: PrivacyResult) -> str:
    """How many records the attacks scored: ``"5,000 members and 5,000 non-members"`` when every attack scored the
    same sets, else one ``"attack: m members / n non-members"`` per attack."""
    pairs = [(a.n_members, a.n_nonmembers) for a in priv.attacks]
    if not pairs:
        return ""
    if len(set(pairs)) == 1:
        m, n = pairs[0]
        return f"{count(m)} members and {count(n)} non-members"
    return "; ".join(
        f"{a.attack}: {count(m)} members / {count(n)} non-members"
        for a, (m, n) in zip(priv.attacks, pairs, strict=True)
    )


def epsilon_confidence(priv: PrivacyResult) -> str:
    """The confidence of the epsilon bounds as the results record it: ``"95% confidence, simultaneous over 6
    thresholds"``; ``"95% confidence"`` when no attack has evidence."""
    setups = sorted({(e.level, e.thresholds) for a in priv.attacks if (e := a.epsilon_evidence) is not None})
    if not setups:
        return "95% confidence"
    return "; ".join(f"{100.0 * level:g}% confidence, simultaneous over {k} thresholds" for level, k in setups)


@dataclass(frozen=True)
class ExposedRow:
    """One exposed member, formatted; ``thumbnail`` is a PNG ``data:`` URI when the report has the image."""

    rank: str
    member: str
    label: str
    score: str
    thumbnail: str | None = None


@dataclass(frozen=True)
class ExposedGroup:
    """The most exposed members of one attack, in rank order."""

    attack: str
    rows: list[ExposedRow]


def exposed_groups(records: Sequence[ExposedRecord], thumbnails: Sequence[str] | None = None) -> list[ExposedGroup]:
    """``records`` grouped by attack (in order of first appearance), each in rank order; ``thumbnails[i]`` is the
    image of ``records[i]``."""
    groups: dict[str, list[tuple[ExposedRecord, str | None]]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r.attack, []).append((r, None if thumbnails is None else thumbnails[i]))
    return [
        ExposedGroup(
            attack,
            [
                ExposedRow(
                    rank=str(r.rank),
                    member=f"#{r.member_index}",
                    label=f"{r.label} · {r.class_name}" if r.class_name else str(r.label),
                    score=score_text(r.score),
                    thumbnail=thumb,
                )
                for r, thumb in sorted(rs, key=lambda pair: pair[0].rank)
            ],
        )
        for attack, rs in groups.items()
    ]


def score_text(x: float) -> str:
    """An attack's membership score, four significant digits: ``9.8213 -> "9.821"``."""
    return f"{x:.4g}" if _finite(x) else DASH


def compute_items(compute: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``PrivacyResult.compute`` as ``(label, value)`` pairs: ``reference_training_seconds: 312.5`` becomes
    ``("reference training", "5 min 12 s")``, ``forward_passes: 90000`` becomes ``("forward passes", "90,000")``.

    >>> compute_items({"reference_models": 8, "reference_training_seconds": 312.5})
    [('reference models', '8'), ('reference training', '5 min 12 s')]
    """
    items = []
    for key, value in compute.items():
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key.endswith("seconds") and is_number:
            label = key.removesuffix("seconds").rstrip("_") or "time"
            items.append((label.replace("_", " "), duration(float(value))))
        elif isinstance(value, int) and not isinstance(value, bool):
            items.append((key.replace("_", " "), count(value)))
        else:
            items.append((key.replace("_", " "), value_text(value)))
    return items


@dataclass(frozen=True)
class RecipeNotice:
    """The reference models' recipe as the report shows it, at the top of its privacy section: ``text`` (the
    architecture and training settings), and for a guessed one what was guessed and how to set it."""

    text: str
    guessed: bool
    guesses: list[str]
    how_to_set: str


def recipe_notice(priv: PrivacyResult) -> RecipeNotice | None:
    """``priv.reference_recipe`` in words (``None`` without reference models).

    >>> recipe_notice(PrivacyResult(attacks=[], reference_recipe={"arch": "mlp", "epochs": 8, "lr": 0.001,
    ...     "batch_size": 128, "weight_decay": 0.0, "lr_schedule": "cosine", "guessed": True,
    ...     "guesses": ["the architecture mlp"], "how_to_set": "--reference-arch"})).text
    'mlp · 8 epochs · learning rate 0.001 · batch size 128 · weight decay 0 · cosine schedule'
    """
    recipe = priv.reference_recipe
    if not recipe:
        return None
    parts = [str(recipe.get("arch") or recipe.get("recipe") or recipe.get("estimator") or "their own recipe")]
    labelled = (("epochs", "{} epochs"), ("lr", "learning rate {:g}"), ("batch_size", "batch size {}"),
                ("weight_decay", "weight decay {:g}"), ("lr_schedule", "{} schedule"))  # fmt: skip
    parts += [form.format(recipe[key]) for key, form in labelled if recipe.get(key) is not None]
    return RecipeNotice(
        text=" · ".join(parts),
        guessed=bool(recipe.get("guessed")),
        guesses=[str(g) for g in recipe.get("guesses") or []],
        how_to_set=str(recipe.get("how_to_set") or ""),
    )


def privacy_intervals(priv: PrivacyResult) -> list[Interval]:
    out: list[Interval] = []
    for a in priv.attacks:
        out.append(a.auc_ci)
        out.extend(a.tpr_ci.values())
    return out


def fpr_label(fpr: float) -> str:
    """``0.001 -> "0.1%"``, ``0.01 -> "1%"``."""
    return f"{100.0 * fpr:g}%"


# -- helpers ---------------------------------------------------------------------------------


def _find_key(d: Mapping[str, Any], target: float) -> str | None:
    """The key of ``d`` whose numeric value equals ``target`` (keys are strings such as "0.1")."""
    exact = eps_key(target)
    if exact in d:
        return exact
    for k in d:
        try:
            if math.isclose(float(k), target, rel_tol=1e-9, abs_tol=1e-12):
                return k
        except ValueError:
            continue
    return None
