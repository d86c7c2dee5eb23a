"""The outcome of a policy gate (``modelsec audit --policy FILE``): typed, JSON-serialisable, stored in the result.

Each rule of the policy file (:mod:`modelsec.audits.gate`) gives one :class:`RuleOutcome`: the number the audit
measured, its confidence interval when the result has one, which end of it the rule compared (``bound``), the
threshold, and whether it passed. A :class:`GateOutcome` holds them all; it passes when every rule passes.
("Policy" names an RL agent's policy elsewhere in modelsec, hence "gate" in code.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelsec.stats.intervals import Interval

POINT = "point"  # the rule compares the point estimate
LOWER = "lower"  # ... the lower end of its confidence interval
UPPER = "upper"  # ... the upper end


@dataclass(frozen=True)
class BaselineComparison:
    """What a rule comparing with a baseline run measured (``max_robust_accuracy_drop``): McNemar's exact test on
    the records both audits attacked, at ``eps``. ``baseline``: the baseline as given (a run id or a result.json);
    ``records``: how many records were paired; ``b``: robust in the baseline but not now; ``c``: the reverse;
    ``p_value``: the one-sided exact p-value of a fall (P(X >= b), X ~ Binomial(b + c, 1/2));
    ``baseline_robust_accuracy`` and ``robust_accuracy``: the two runs' worst-case robust accuracies on those
    records; ``significance``: the level the p-value was compared with."""

    baseline: str
    eps: float
    records: int
    b: int
    c: int
    p_value: float
    baseline_robust_accuracy: float
    robust_accuracy: float
    significance: float


@dataclass(frozen=True)
class RuleOutcome:
    """One rule of a policy evaluated on one result.

    ``rule``: its name as written in the policy file with its parameter, e.g.
    ``robustness.min_robust_accuracy(eps=0.1)``; ``measured``: the point estimate the audit gave (``None`` when the
    result holds no such number, e.g. ``dp.max_claimed_epsilon`` on a model that claims no DP: the rule fails);
    ``interval``: its
    confidence interval (``None`` when the number has none, e.g. a count of unresolved flags); ``bound``: what was
    compared with ``threshold`` (``point``, or the ``lower``/``upper`` end of the interval); ``comparison``:
    ``">="`` (the compared value must be at least the threshold) or ``"<="``; ``attack``: the membership attack
    the number is that of (the strongest by the rule's measure), ``None`` for a robustness rule; ``message``: one
    line for a person; ``baseline``: the comparison with the baseline run, for a rule that makes one (``measured``
    is then the fall in robust accuracy, ``threshold`` the largest fall allowed even when significant)."""

    rule: str
    measured: float | None
    interval: Interval | None
    bound: str
    comparison: str
    threshold: float
    passed: bool
    message: str
    attack: str | None = None
    baseline: BaselineComparison | None = None

    @property
    def compared(self) -> float | None:
        """The value compared with the threshold: the point estimate or one end of the interval (``None``: nothing
        was measured)."""
        if self.bound == LOWER and self.interval is not None:
            return self.interval.low
        if self.bound == UPPER and self.interval is not None:
            return self.interval.high
        return self.measured


@dataclass(frozen=True)
class GateOutcome:
    """Every rule of a policy evaluated on a result; ``policy``: the policy file as given (``None`` when the gate
    was built in code); ``passed``: every rule passed."""

    policy: str | None
    passed: bool
    rules: list[RuleOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[RuleOutcome]:
        """The rules that failed, in the policy's order."""
        return [r for r in self.rules if not r.passed]
