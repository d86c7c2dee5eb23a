"""McNemar's exact test on paired binary outcomes: did the same records fare differently in two runs?

Two audits that attack the same records give each record a pair of outcomes (robust or not in the first run, in
the second). Only the discordant pairs carry evidence of a change: ``b`` records robust in the first run but not
in the second, ``c`` the reverse. Without a change each discordant record is equally likely to fall either way,
so ``b`` is Binomial(``b + c``, 1/2); the exact test is the binomial test of ``b`` against that, computed here with
integer arithmetic (no scipy at run time; ``scipy.stats.binomtest`` is the tests' reference).
"""

from __future__ import annotations

from math import comb

TWO_SIDED = "two-sided"
GREATER = "greater"  # b is larger than chance allows: the outcome got worse (robust before, not now)
LESS = "less"


def mcnemar_exact(b: int, c: int, alternative: str = TWO_SIDED) -> float:
    """The exact p-value of McNemar's test for ``b`` discordant pairs one way and ``c`` the other.

    ``alternative``: ``"two-sided"`` (any change), ``"greater"`` (``b`` larger than chance: P(X >= b)) or
    ``"less"`` (P(X <= b)), X ~ Binomial(b + c, 1/2). The two-sided p-value doubles the smaller tail (capped at 1),
    which is the same as summing every outcome no more likely than ``b`` since the null is symmetric. No
    discordant pair (``b = c = 0``): no evidence, p = 1.

    >>> round(mcnemar_exact(10, 2, "greater"), 6)  # (C(12,10) + C(12,11) + C(12,12)) / 2**12 = 79 / 4096
    0.019287
    >>> round(mcnemar_exact(10, 2), 6)
    0.038574
    >>> mcnemar_exact(3, 3), mcnemar_exact(0, 0, "greater")
    (1.0, 1.0)
    """
    if isinstance(b, bool) or isinstance(c, bool) or not isinstance(b, int) or not isinstance(c, int):
        raise TypeError(f"b and c must be integers, got {b!r} and {c!r}")
    if b < 0 or c < 0:
        raise ValueError(f"b and c must be counts (>= 0), got {b} and {c}")
    n = b + c
    if n == 0:
        return 1.0
    total = 2**n
    upper = sum(comb(n, k) for k in range(b, n + 1))  # P(X >= b) * 2**n
    lower = sum(comb(n, k) for k in range(0, b + 1))  # P(X <= b) * 2**n
    if alternative == GREATER:
        return upper / total
    if alternative == LESS:
        return lower / total
    if alternative == TWO_SIDED:
        return min(1.0, 2 * min(upper, lower) / total)
    raise ValueError(f"alternative must be {TWO_SIDED!r}, {GREATER!r} or {LESS!r}, got {alternative!r}")
