"""The one-line verdict at the top of a report, from the numbers and the sanity flags, with the rule stated.

Robustness, at the largest epsilon audited: "fail" when less than half of the clean accuracy survives, "warning"
when less than 90% survives; any unresolved sanity flag turns the robustness finding into "likely overestimated"
and at least a warning (a resolved one, whose remedy ran, is listed but does not); an unresolved batch-dependence
flag (the model's outputs depend on the other inputs of a batch) makes the robustness numbers "not trustworthy"
and the verdict "fail", whatever they are. Leakage: "fail" when an
attack's TPR at 0.1% FPR has a lower confidence bound above 1% (ten times chance) or its AUC's lower bound exceeds
0.6; "warning" when the AUC's lower bound exceeds 0.5. The headline names one attack, the strongest: the highest
TPR at 0.1% FPR, then the highest AUC (the definition the report's tables, the exposed records and the comparison
use); when another attack has a higher AUC, the details say so.
"""

from __future__ import annotations

from modelsec.audits.membership import strongest
from modelsec.results.audit import PrivacyResult, RobustnessResult, Verdict

_ORDER = {"ok": 0, "warning": 1, "fail": 2}
RULE = __doc__.split("\n\n", 1)[1].strip() if __doc__ else ""


def _worse(a: str, b: str) -> str:
    return a if _ORDER[a] >= _ORDER[b] else b


def make_verdict(robustness: RobustnessResult | None, privacy: PrivacyResult | None, norm: str) -> Verdict:
    level = "ok"
    parts: list[str] = []
    details: list[str] = []
    if robustness is not None and robustness.robust_accuracy:
        eps_key = max(robustness.robust_accuracy, key=float)
        robust = robustness.robust_accuracy[eps_key]
        clean = robustness.clean_accuracy
        kept = robust / clean if clean > 0 else 0.0
        rob_level = "fail" if kept < 0.5 else "warning" if kept < 0.9 else "ok"
        word = {"fail": "Not robust", "warning": "Partly robust", "ok": "Robust"}[rob_level]
        parts.append(f"{word}: {robust:.1%} accuracy under attack at {norm} eps={float(eps_key):g} (clean {clean:.1%})")
        unresolved = [f for f in robustness.flags if not f.resolved]
        untrustworthy = [f for f in unresolved if f.untrustworthy]
        if untrustworthy:
            rob_level = "fail"
            parts[-1] += f"; {untrustworthy[0].consequence}: the model's outputs depend on the other inputs of a batch"
        elif unresolved:
            rob_level = _worse(rob_level, "warning")
            parts[-1] += "; robustness likely overestimated"
        for f in robustness.flags:
            state = "resolved" if f.resolved else "UNRESOLVED"
            remedy = f" (remedy: {f.remedy})" if f.remedy else ""
            details.append(f"sanity check '{f.check}' fired, {state}: {f.message}{remedy}")
        level = _worse(level, rob_level)
    if privacy is not None and privacy.attacks:
        worst = max(privacy.attacks, key=lambda a: a.auc)
        strongest_low_fpr = max(privacy.attacks, key=lambda a: a.tpr_ci["0.001"].low)
        priv_level = "ok"
        if strongest_low_fpr.tpr_ci["0.001"].low > 0.01 or worst.auc_ci.low > 0.6:
            priv_level = "fail"
        elif worst.auc_ci.low > 0.5:
            priv_level = "warning"
        leak_word = {
            "fail": "Leaks membership",
            "warning": "Some membership leakage",
            "ok": "No membership leakage found",
        }
        top = strongest(privacy.attacks)
        parts.append(
            f"{leak_word[priv_level]}: strongest attack {top.attack} (highest TPR at 0.1% FPR, then AUC): "
            f"TPR {top.tpr_at_fpr['0.001']:.2%} at 0.1% FPR, AUC {top.auc:.3f}"
        )
        if worst.attack != top.attack and worst.auc > top.auc:
            details.append(
                f"the highest AUC is {worst.attack}'s, {worst.auc:.3f} "
                f"[{worst.auc_ci.low:.3f}, {worst.auc_ci.high:.3f}]"
            )
        if priv_level == "ok":
            details.append("weak attacks only so far: a stronger (reference-model) attack may still find leakage")
        level = _worse(level, priv_level)
    if not parts:
        parts.append("Nothing was audited")
    return Verdict(level=level, headline=". ".join(parts) + ".", details=details)
