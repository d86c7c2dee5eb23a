"""The statistical value types every result carries: a confidence interval, and the evidence behind an empirical
epsilon lower bound. Plain frozen dataclasses, serialised field by field into ``result.json``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """A confidence interval ``[low, high]`` at ``level`` (0.95 by default) and the method that gave it."""

    low: float
    high: float
    level: float = 0.95
    method: str = "clopper-pearson"


@dataclass(frozen=True)
class EpsilonEvidence:
    """Where a membership attack's empirical epsilon lower bound was attained (see
    :func:`modelsec.stats.metrics.epsilon_lower_bound`).

    The threshold is the one chosen for ``target``: an FPR target when ``rule`` is ``"fpr"``, an FNR target when
    ``"fnr"``. ``tpr`` and ``fpr`` are its point estimates; ``tpr_low`` and ``fpr_high`` the one-sided bounds the
    epsilon was computed from, simultaneous over the ``thresholds`` evaluated (Clopper-Pearson, Bonferroni) at
    ``level``. ``inequality`` names the consequence of (epsilon, 0)-DP the attack violated: ``"tpr"`` for
    ``TPR <= e^eps FPR``, ``"tnr"`` for ``1 - FPR <= e^eps (1 - TPR)``.
    """

    rule: str
    target: float
    inequality: str
    tpr: float
    fpr: float
    tpr_low: float
    fpr_high: float
    thresholds: int
    level: float = 0.95
    method: str = "clopper-pearson-bonferroni"
