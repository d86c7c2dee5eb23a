"""The difference between two audits (``modelsec runs diff A B``): typed, JSON-serialisable, computed by
:func:`modelsec.audits.diff.diff_runs` and only printed by the command line.

Robustness at each eps is compared by McNemar's exact two-sided test on the records both audits attacked (a diff
has no direction); clean accuracy and membership inference by whether the two confidence intervals overlap, which is
conservative (two intervals can overlap while the difference is significant) and not a test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from modelsec.stats.intervals import Interval


@dataclass(frozen=True)
class RobustnessDiff:
    """The worst-case robust accuracy at ``eps`` in run A and run B (``None`` where that run did not attack at it)
    with their intervals. ``b``, ``c``, ``p_value``: McNemar's exact two-sided test on the paired records (``b``
    robust in A but not in B, ``c`` the reverse), ``None`` when the runs do not pair at this eps (``note`` says
    why); ``significant``: ``p_value < significance``."""

    eps: float
    robust_accuracy_a: float | None
    ci_a: Interval | None
    robust_accuracy_b: float | None
    ci_b: Interval | None
    records: int | None = None
    b: int | None = None
    c: int | None = None
    p_value: float | None = None
    significant: bool = False
    note: str | None = None


@dataclass(frozen=True)
class MembershipDiff:
    """One membership attack in run A and run B (``None`` where that run did not run it): the AUC and the TPR at
    0.1% FPR with their intervals; ``changed``: the two AUC intervals or the two TPR intervals do not overlap."""

    attack: str
    auc_a: float | None
    auc_ci_a: Interval | None
    auc_b: float | None
    auc_ci_b: Interval | None
    tpr_a: float | None
    tpr_ci_a: Interval | None
    tpr_b: float | None
    tpr_ci_b: Interval | None
    changed: bool = False


@dataclass(frozen=True)
class RunDiff:
    """Two audits side by side: ``a`` and ``b`` as given (run ids or result.json paths), their run ids, the clean
    accuracies with intervals (``clean_changed``: the intervals do not overlap), the robustness per eps and the
    membership per attack; ``significance``: the level McNemar's p-values are compared with; ``notes``: what
    could not be compared and why."""

    a: str
    b: str
    run_id_a: str
    run_id_b: str
    significance: float
    clean_accuracy_a: float | None
    clean_ci_a: Interval | None
    clean_accuracy_b: float | None
    clean_ci_b: Interval | None
    clean_changed: bool
    robustness: list[RobustnessDiff] = field(default_factory=list)
    membership: list[MembershipDiff] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Anything changed: a significant robustness change, or non-overlapping clean or membership intervals."""
        return (
            self.clean_changed or any(r.significant for r in self.robustness) or any(m.changed for m in self.membership)
        )

    def to_dict(self) -> dict[str, Any]:
        """The diff as plain JSON-serialisable data (``--json``), with ``changed`` added."""
        return {**asdict(self), "changed": self.changed}
