"""A comparison of policies (``modelsec compare-policies``): several policy files audited the same way, and a
recommendation.

Every policy runs the same seeded episodes under the same attacks at the same eps, and eps is in units of ONE
observation scale, the baseline's (the first policy's clean rollouts): each policy's own scale would give each a
different threat model (a policy that keeps the pole steadier would be attacked with smaller perturbations). Per
policy: the clean mean return, the per-episode worst case over attacks at each eps, the single strongest attack, its
training time and defense from its card.

The recommendation rule (:func:`recommend_policy`, in the style of :mod:`modelsec.audits.recommendation`): a policy
is eligible when its clean mean return is at most ``max_return_drop`` percent (of the baseline's magnitude) below
the baseline's; the most robust is the eligible policy with the highest worst-case mean return at the largest eps
(ties: the higher clean return). A pure function over the summaries.

>>> from modelsec.stats.intervals import Interval
>>> def summary(name, clean, worst):
...     ci = Interval(worst - 5, worst + 5)
...     return PolicySummary(name, None, None, clean, Interval(clean - 1, clean + 1), {"0.2": worst},
...                          {"0.2": ci}, {"0.2": "pgd"})
>>> r = recommend_policy([summary("ppo", 500.0, 20.0), summary("sa-ppo", 480.0, 300.0),
...                       summary("pgd-ppo", 300.0, 290.0)], baseline="ppo", max_return_drop=10)
>>> r.most_robust, sorted(r.excluded)
('sa-ppo', ['pgd-ppo'])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from modelsec.core.errors import ConfigError
from modelsec.core.progress import NullProgress, Progress
from modelsec.results.audit import eps_key
from modelsec.results.policy_audit import (
    PolicyAuditResult,
    PolicyComparison,
    PolicyRecommendation,
    PolicySummary,
)

DEFAULT_MAX_RETURN_DROP = 10.0
"""Percent of the baseline's clean return a recommended policy may lose (clean)."""
_TOLERANCE = 1e-9

OnAudit = Callable[[str, Any], PolicyAuditResult]
"""Called with each policy's name and :class:`~modelsec.audits.policy_audit.PolicyAuditOutcome` as soon as its
audit finishes (writes its files); returns the result as written."""


def policy_rule_text(max_return_drop: float = DEFAULT_MAX_RETURN_DROP) -> str:
    """The recommendation rule in words, with its parameter filled in."""
    n = f"{max_return_drop:g}"
    return (
        f"A policy is eligible when its clean mean return is at most {n}% (of the baseline's magnitude) below the "
        "baseline's (the baseline always is). Most robust: the eligible policy with the highest worst-case mean "
        "return (per episode, over every attack) at the largest eps audited (ties: the higher clean return). Point "
        "estimates decide; a note says when the runner-up lies inside the winner's 95% confidence interval, where "
        "the episodes cannot tell the two apart."
    )


def recommend_policy(
    policies: Sequence[PolicySummary], *, baseline: str, max_return_drop: float = DEFAULT_MAX_RETURN_DROP
) -> PolicyRecommendation:
    """Apply the rule (:func:`policy_rule_text`) to ``policies``, among which is ``baseline`` (a name)."""
    if not (math.isfinite(max_return_drop) and max_return_drop >= 0):
        raise ConfigError(f"max_return_drop must be a percentage >= 0, got {max_return_drop}")
    by_name = {p.name: p for p in policies}
    if baseline not in by_name:
        raise ValueError(f"baseline {baseline!r} is not among the policies {list(by_name)}")
    base = by_name[baseline]
    order = {p.name: i for i, p in enumerate(policies)}
    allowed = abs(base.clean_return) * max_return_drop / 100.0
    eligible: list[PolicySummary] = []
    excluded: dict[str, str] = {}
    for p in policies:
        if p.name == baseline or base.clean_return - p.clean_return <= allowed + _TOLERANCE:
            eligible.append(p)
        else:
            lost = (base.clean_return - p.clean_return) / abs(base.clean_return) if base.clean_return else math.inf
            excluded[p.name] = (
                f"clean return {p.clean_return:.1f} is {lost:.0%} below the baseline's {base.clean_return:.1f} "
                f"(more than {max_return_drop:g}%)"
            )
    keys: dict[float, str] = {}
    for p in policies:
        for k in p.worst_return:
            keys.setdefault(float(k), k)
    eps = keys[max(keys)] if keys else None
    ranked = sorted(
        (p for p in eligible if p.worst_at(eps) is not None),
        key=lambda p: (-float(p.worst_at(eps) or 0.0), -p.clean_return, order[p.name]),
    )
    notes: list[str] = []
    most_robust = ranked[0].name if ranked else None
    if most_robust is None:
        notes.append("No policy is recommended as most robust: no attack was run.")
    elif len(ranked) > 1 and eps is not None:
        first, second = ranked[0], ranked[1]
        ci, value = first.worst_ci.get(eps), second.worst_at(eps)
        if ci is not None and value is not None and ci.low <= value <= ci.high:
            notes.append(
                f"The runner-up, {second.name} ({value:.1f}), lies inside {first.name}'s {100 * ci.level:g}% "
                f"confidence interval ({ci.low:.1f}–{ci.high:.1f}): more episodes would be needed to tell them apart."
            )
    return PolicyRecommendation(
        max_return_drop=float(max_return_drop),
        baseline=baseline,
        eps=eps,
        eligible=[p.name for p in eligible],
        excluded=excluded,
        most_robust=most_robust,
        notes=notes,
        rule=policy_rule_text(max_return_drop),
    )


def summarise(name: str, result: PolicyAuditResult, out_dir: str | None = None) -> PolicySummary:
    """A policy's line of the comparison, from its audit."""
    worst = {eps_key(w.eps): w.mean_return for w in result.worst_case}
    worst_ci = {eps_key(w.eps): w.ci for w in result.worst_case}
    strongest = {}
    for e in result.eps:
        s = result.strongest_attack(e)
        if s is not None:
            strongest[eps_key(e)] = s.attack
    return PolicySummary(
        name=name,
        path=result.policy.path,
        sha256=result.policy.sha256,
        clean_return=result.clean.mean_return,
        clean_ci=result.clean.ci,
        worst_return=worst,
        worst_ci=worst_ci,
        strongest_attack=strongest,
        training_seconds=training_seconds(result.policy.card),
        defense=defense_name(result.policy.card),
        verdict_level=result.verdict.level,
        out_dir=out_dir,
    )


def training_seconds(card: dict[str, Any]) -> float | None:
    """The training time a policy's card records (``training_seconds``, or ``seconds`` of its ``training``)."""
    for value in (card.get("training_seconds"), (card.get("training") or {}).get("seconds")):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def defense_name(card: dict[str, Any]) -> str | None:
    """The defense a policy was trained with: its card's hardening method, else ``standard`` for a plain
    algorithm (``ppo``), else None."""
    hardening = card.get("hardening")
    if isinstance(hardening, dict) and hardening.get("method"):
        return str(hardening["method"])
    if card.get("algorithm"):
        return f"standard ({card['algorithm']})"
    return None


def policy_names(paths: Sequence[str | Path]) -> list[str]:
    """A folder name per policy file: its stem, made unique (``-2``, ``-3``)."""
    names: list[str] = []
    for p in paths:
        stem = Path(p).name.split(".")[0] or "policy"
        name, n = stem, 2
        while name in names:
            name, n = f"{stem}-{n}", n + 1
        names.append(name)
    return names


def run_policy_compare(
    policies: Sequence[str | Path],
    config: Any,
    *,
    progress: Progress | None = None,
    max_return_drop: float = DEFAULT_MAX_RETURN_DROP,
    on_audit: OnAudit | None = None,
    frames: bool = False,
) -> PolicyComparison:
    """Audit each policy file with ``config`` (a :class:`~modelsec.audits.policy_audit.PolicyAuditConfig`; its
    ``policy`` is replaced by each file), the first being the baseline whose observation scale every audit uses;
    ``on_audit`` receives each audit as it finishes. Returns the comparison (no files written here)."""
    from dataclasses import replace

    from modelsec.audits.policy_audit import audit_policy

    if len(policies) < 2:
        raise ConfigError("compare-policies needs at least two policy files (--policies A,B)")
    if not (math.isfinite(max_return_drop) and max_return_drop >= 0):
        raise ConfigError(f"--max-return-drop must be a percentage >= 0, got {max_return_drop}")
    progress = progress or NullProgress()
    names = policy_names(policies)
    summaries: list[PolicySummary] = []
    scale: np.ndarray | None = None
    first: PolicyAuditResult | None = None
    for name, path in zip(names, policies, strict=True):
        progress.note(f"auditing {name} ({path})")
        outcome = audit_policy(replace(config, policy=str(path)), scale=scale, progress=progress, frames=frames)
        result = outcome.result if on_audit is None else on_audit(name, outcome)
        if scale is None:
            scale = np.asarray(result.scale.std, dtype=np.float64)
            first = result
        summaries.append(summarise(name, result, out_dir=name if on_audit is not None else None))
    assert first is not None and scale is not None
    return PolicyComparison(
        created_at=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        env_id=first.env_id,
        episodes=first.episodes,
        seeds=first.seeds,
        norm=first.norm,
        eps=first.eps,
        scale=[float(s) for s in scale],
        baseline=names[0],
        policies=summaries,
        recommendation=recommend_policy(summaries, baseline=names[0], max_return_drop=max_return_drop),
        settings={
            **config.to_dict(),
            "policy": None,
            "policies": [str(p) for p in policies],
            "max_return_drop": max_return_drop,
        },
        versions=first.versions,
    )
