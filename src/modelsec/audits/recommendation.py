"""The recommendation rule of a comparison: which model is most robust and which leaks least, among those that
lose at most N percentage points of clean accuracy against the baseline. A pure function over the models'
summaries (:class:`~modelsec.results.comparison.ModelSummary`); :func:`rule_text` states it in words, as the
report prints it.

Accuracies and rates are fractions in ``[0, 1]``; ``max_accuracy_drop`` is in percentage points (5 = 0.05).

>>> def model(name, clean, robust, tpr, auc, overestimated=False):
...     return ModelSummary(name=name, clean_accuracy=clean, robust_accuracy={"0.1": robust},
...                         mia_tpr=tpr, mia_auc=auc, robustness_overestimated=overestimated)
>>> models = [model("base", 0.98, 0.10, 0.02, 0.60), model("at", 0.90, 0.60, 0.01, 0.55),
...           model("at-light", 0.95, 0.40, 0.03, 0.58)]
>>> r = recommend(models, baseline="base", max_accuracy_drop=5)
>>> r.most_robust, r.least_leaking
('at-light', 'base')
>>> recommend(models, baseline="base", max_accuracy_drop=10).most_robust
'at'
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from modelsec.results.comparison import DEFAULT_MAX_ACCURACY_DROP, ModelSummary, Recommendation

_TOLERANCE = 1e-9  # accuracies are ratios of counts; this only absorbs float rounding at the boundary


def rule_text(max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP) -> str:
    """The recommendation rule in words, with its parameter filled in."""
    n = f"{max_accuracy_drop:g}"
    return (
        f"A model is eligible when its clean accuracy is at most {n} percentage points below the baseline's (the "
        "baseline always is). Most robust: the eligible model with the highest worst-case robust accuracy at the "
        "largest ε audited (ties: the higher clean accuracy); a model whose robustness sanity checks stay "
        "unresolved (its verdict says robustness likely overestimated) is never recommended as most robust. "
        "Least leaking: the eligible model whose strongest membership attack has the lowest TPR at 0.1% FPR, then "
        "the lowest AUC (ties: the higher clean accuracy). Point estimates decide; a note says when the runner-up "
        "lies inside the winner's 95% confidence interval, where the sample cannot tell the two apart."
    )


def recommend(
    models: Sequence[ModelSummary], *, baseline: str, max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
) -> Recommendation:
    """Apply the recommendation rule (:func:`rule_text`) to ``models``, among which is ``baseline`` (a name).

    Pure: reads only the summaries' numbers and flags. ``max_accuracy_drop`` is in percentage points.
    """
    if not (math.isfinite(max_accuracy_drop) and max_accuracy_drop >= 0):
        raise ValueError(f"max_accuracy_drop must be a number of percentage points >= 0, got {max_accuracy_drop}")
    by_name = {m.name: m for m in models}
    if baseline not in by_name:
        raise ValueError(f"baseline {baseline!r} is not among the models {list(by_name)}")
    base = by_name[baseline]
    order = {m.name: i for i, m in enumerate(models)}
    notes: list[str] = []
    eligible: list[ModelSummary] = []
    excluded: dict[str, str] = {}
    base_clean = base.clean_accuracy if _ok(base.clean_accuracy) else None
    for m in models:
        clean = m.clean_accuracy if _ok(m.clean_accuracy) else None
        if m.name == baseline:
            eligible.append(m)
        elif base_clean is None:
            excluded[m.name] = "the baseline has no clean accuracy to compare with"
        elif clean is None:
            excluded[m.name] = "no clean accuracy was measured"
        elif base_clean - clean > max_accuracy_drop / 100.0 + _TOLERANCE:
            excluded[m.name] = (
                f"clean accuracy {_pct(clean)} is {100.0 * (base_clean - clean):.1f} points below the baseline's "
                f"{_pct(base_clean)} (more than {max_accuracy_drop:g})"
            )
        else:
            eligible.append(m)

    eps = _largest_eps(models)
    unresolved = [m.name for m in eligible if m.robustness_overestimated]
    robust_pool = [m for m in eligible if not m.robustness_overestimated and _ok(m.robust_at(eps))]
    robust_rank = sorted(
        robust_pool,
        key=lambda m: (-_value(m.robust_at(eps)), -_value(m.clean_accuracy), order[m.name]),
    )
    most_robust = robust_rank[0].name if robust_rank else None
    if most_robust is None:
        why = "every eligible model's robustness checks stay unresolved" if unresolved else "no robustness result"
        notes.append(f"No model is recommended as most robust: {why}.")
    elif len(robust_rank) > 1:
        first, second = robust_rank[0], robust_rank[1]
        ci = first.robust_ci_at(eps)
        value = second.robust_at(eps)
        if ci is not None and value is not None and ci.low <= value <= ci.high:
            notes.append(
                f"The runner-up for robustness, {second.name} ({_pct(value)}), lies inside {first.name}'s "
                f"{100 * ci.level:g}% confidence interval ({_pct(ci.low)}–{_pct(ci.high)}): more samples would be "
                "needed to tell them apart."
            )
    for name in unresolved:
        notes.append(f"{name} is not recommended as most robust: its robustness is likely overestimated.")

    leak_pool = [m for m in eligible if _ok(m.mia_tpr) and _ok(m.mia_auc)]
    leak_rank = sorted(
        leak_pool,
        key=lambda m: (_value(m.mia_tpr), _value(m.mia_auc), -_value(m.clean_accuracy), order[m.name]),
    )
    least_leaking = leak_rank[0].name if leak_rank else None
    if least_leaking is None:
        notes.append("No model is recommended as least leaking: no membership result.")
    elif len(leak_rank) > 1:
        first, second = leak_rank[0], leak_rank[1]
        tci = first.mia_tpr_ci
        if tci is not None and second.mia_tpr is not None and tci.low <= second.mia_tpr <= tci.high:
            notes.append(
                f"The runner-up for leakage, {second.name} (TPR {_pct(second.mia_tpr, 2)} at 0.1% FPR), lies inside "
                f"{first.name}'s {100 * tci.level:g}% confidence interval ({_pct(tci.low, 2)}–{_pct(tci.high, 2)})."
            )
    return Recommendation(
        max_accuracy_drop=float(max_accuracy_drop),
        baseline=baseline,
        eps=eps,
        eligible=[m.name for m in eligible],
        excluded=excluded,
        most_robust=most_robust,
        least_leaking=least_leaking,
        unresolved=unresolved,
        notes=notes,
        rule=rule_text(max_accuracy_drop),
    )


def _largest_eps(models: Sequence[ModelSummary]) -> str | None:
    keys: dict[float, str] = {}
    for m in models:
        for k in m.robust_accuracy:
            keys.setdefault(float(k), k)
    return keys[max(keys)] if keys else None


def _value(x: float | None) -> float:
    """``x`` as a sort key; only used on values :func:`_ok` accepted, or on a clean accuracy (missing: 0)."""
    return float(x) if x is not None and math.isfinite(x) else 0.0


def _ok(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{100.0 * x:.{digits}f}%"
