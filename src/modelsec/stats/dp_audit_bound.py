"""The statistics of the one-run privacy audit (Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One (1)
Training Run", NeurIPS 2023, arXiv:2305.08846): pure functions of canary scores, no training.

The game. ``m`` canaries are each included in the training set independently with probability 1/2, one model is
trained, and every canary gets a membership score from it. The auditor guesses "in" for the ``k+`` highest scores,
"out" for the ``k-`` lowest and abstains on the rest: ``r = k+ + k-`` guesses, ``v`` of them correct. If training is
``(eps, 0)``-DP, the number of correct guesses is stochastically dominated by ``Binomial(r, q)`` with
``q = e^eps / (1 + e^eps)``: the accuracy of eps-DP randomised response, the best any guesser can do on each canary.

With ``delta > 0`` the paper's main theorem adds a term for the delta of every canary. The p-value of ``v`` correct
guesses out of ``r`` under ``(eps, delta)``-DP is (the paper's Appendix D, ``p_value_DP_audit``, which computes its
Corollary 5.4 for ``delta > 0``)::

    p = min(1, P[Binomial(r, q) >= v] + 2 m delta * max_{i = 1..v} P[v > Binomial(r, q) >= v - i] / i)

Reading: ``2 m delta`` is the total delta slack over the ``m`` canaries (each may leak with probability up to delta
in either direction), and it is charged against the probability mass just below ``v``: shifting the count up by
``i`` correct guesses costs ``i`` units of that slack, so the worst case over ``i`` of that mass per unit is what
the slack can move past ``v``. It is NOT a plain ``+ delta`` (nor ``+ m delta``) on the tail. The bound on epsilon
at confidence ``1 - beta`` is the largest eps whose p-value is still below ``beta``: the paper's ``get_eps_audit``
(raise an upper bracket in steps of 1 while the p-value stays below ``beta``, then 30 bisection steps, return the
low end, so the answer errs low). For ``delta = 0`` that is exactly ``logit`` of the Clopper-Pearson lower bound of
``v / r`` (a Beta quantile), which the tests check.

Checkpoints (m = 1,000 canaries, delta = 1e-5, beta = 0.05): 100 correct guesses out of 100 bound eps at 3.47;
1,000 out of 1,000 at 5.78; half right bounds nothing:

>>> round(one_run_epsilon(1000, 100, 100, delta=1e-5), 2), round(one_run_epsilon(1000, 1000, 1000, delta=1e-5), 2)
(3.47, 5.78)
>>> one_run_epsilon(1000, 200, 100, delta=1e-5)
0.0

Choosing the number of guesses. The bound holds at ``1 - beta`` for ONE ``(k+, k-)`` chosen before seeing which
canaries were included. The paper's experiments instead report the best over several choices of ``k+`` and ``k-``
(:func:`one_run_bound` does the same over :func:`guess_grid`); that maximum is optimistic: over ``T`` choices it
holds, by a union bound, only at ``1 - T beta`` in the worst case (much better in practice: the guess sets are
nested and their counts strongly correlated). ``correction="bonferroni"`` tests each choice at ``beta / T`` and
gives a bound valid at ``1 - beta`` without assumptions; the default ``"none"`` is the paper's practice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

CORRECTIONS = ("none", "bonferroni")
DEFAULT_BETA = 0.05
BISECTION_STEPS = 30
"""Halvings of the bracket after it is found, as the paper's ``get_eps_audit``."""


def _check_counts(m: int, r: int, v: int) -> None:
    if not (0 <= v <= r <= m) or any(int(a) != a for a in (m, r, v)):
        raise ValueError(f"need integers 0 <= v <= r <= m, got m={m}, r={r}, v={v}")


def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """The probability of at least ``v`` correct guesses out of ``r`` among ``m`` canaries if training were
    ``(eps, delta)``-DP (an upper bound on it: the paper's main theorem; see the module docstring).

    >>> round(p_value(1000, 100, 100, 0.0, 0.0), 35) == round(0.5 ** 100, 35)
    True
    >>> p_value(1000, 100, 100, 3.0, 1e-5) > p_value(1000, 100, 100, 3.0, 0.0)
    True
    """
    _check_counts(m, r, v)
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if not 0 <= delta <= 1:
        raise ValueError(f"delta must be in [0, 1], got {delta}")
    q = 1.0 / (1.0 + math.exp(-eps))  # accuracy of eps-DP randomised response
    tail = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    # below[i - 1] = P[v > Binomial(r, q) >= v - i] for i = 1..v: the pmf summed downwards from v - 1
    below = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
    alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(tail + alpha * delta * 2 * m, 1.0)


def one_run_epsilon(m: int, r: int, v: int, *, delta: float, beta: float = DEFAULT_BETA) -> float:
    """The largest eps that ``v`` correct guesses out of ``r`` (among ``m`` canaries) reject at level ``beta``: an
    empirical lower bound on the epsilon of an ``(eps, delta)``-DP training run, at confidence ``1 - beta``.

    The paper's ``get_eps_audit``: bracket, then :data:`BISECTION_STEPS` bisection steps, returning the low end
    (a p-value below ``beta`` there). 0 when even eps = 0 is not rejected.

    >>> round(one_run_epsilon(1000, 10, 10, delta=0.0), 3)  # logit of 0.05 ** (1 / 10)
    1.052
    """
    _check_counts(m, r, v)
    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    if r == 0 or p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    low, high = 0.0, 1.0  # p(low) < beta <= p(high)
    while p_value(m, r, v, high, delta) < beta:
        low, high = high, high + 1.0
    for _ in range(BISECTION_STEPS):
        mid = (low + high) / 2
        if p_value(m, r, v, mid, delta) < beta:
            low = mid
        else:
            high = mid
    return low


def clopper_pearson_epsilon(r: int, v: int, *, beta: float = DEFAULT_BETA) -> float:
    """The ``delta = 0`` bound in closed form: ``logit`` of the one-sided Clopper-Pearson lower bound of ``v / r``
    (``P[Binomial(r, q) >= v] = I_q(v, r - v + 1)``, so the p-value falls below ``beta`` exactly for ``q`` under
    that Beta quantile), clipped at 0. A reference for :func:`one_run_epsilon`, which agrees to its bisection's
    precision.

    >>> round(clopper_pearson_epsilon(100, 100), 4), round(one_run_epsilon(1000, 100, 100, delta=0.0), 4)
    (3.493, 3.493)
    """
    if r == 0 or v == 0:
        return 0.0
    q = float(stats.beta.ppf(beta, v, r - v + 1))
    return max(0.0, math.log(q / (1.0 - q))) if q < 1 else math.inf


def guess_grid(m: int) -> tuple[int, ...]:
    """The numbers of guesses tried for ``k+`` and for ``k-`` (each independently, their sum at most ``m``):
    0 and 0.5%, 1%, 2%, 5%, 10%, 20%, 30%, 40%, 45% and 50% of ``m`` (finer near 50%, about the number of
    canaries included, where a perfect attack makes its most guesses).

    >>> guess_grid(1000)
    (0, 5, 10, 20, 50, 100, 200, 300, 400, 450, 500)
    """
    if m < 1:
        raise ValueError(f"need at least one canary, got m={m}")
    fractions = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5)
    return tuple(sorted({0, *(max(1, round(m * f)) for f in fractions)}))


@dataclass(frozen=True)
class Guesses:
    """One choice of guesses: ``k_plus`` "in" on the highest scores, ``k_minus`` "out" on the lowest; ``r``
    guesses, ``v`` correct, and the bound ``epsilon`` they give at the test's level."""

    k_plus: int
    k_minus: int
    r: int
    v: int
    epsilon: float


@dataclass(frozen=True)
class OneRunBound:
    """The empirical epsilon lower bound of one audit: the best ``Guesses`` over the grid tried.

    ``epsilon`` is ``best.epsilon``; ``tests`` is how many ``(k+, k-)`` choices were tried and ``level`` the
    confidence each was tested at (``1 - beta``, or ``1 - beta / tests`` with ``correction="bonferroni"``).
    """

    epsilon: float
    best: Guesses
    m: int
    delta: float
    beta: float
    correction: str
    tests: int
    level: float
    grid: tuple[Guesses, ...]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def correct_guesses(scores: np.ndarray, included: np.ndarray, k_plus: int, k_minus: int) -> tuple[int, int]:
    """``(r, v)`` for guessing "in" on the ``k_plus`` highest ``scores`` and "out" on the ``k_minus`` lowest.

    Ties are broken by position (the canaries' order, which does not depend on who was included), so the guesses
    are a function of the scores alone, as the theorem needs.

    >>> correct_guesses(np.array([0.1, 0.9, 0.5, 0.2]), np.array([False, True, True, False]), 1, 2)
    (3, 3)
    """
    s, inc = _check_scores(scores, included)
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > s.size:
        raise ValueError(f"need k+ >= 0, k- >= 0 and k+ + k- <= m={s.size}, got {k_plus}, {k_minus}")
    order = np.lexsort((np.arange(s.size), s))  # ascending score, then position
    ranked = inc[order]
    v = int(ranked[s.size - k_plus :].sum()) if k_plus else 0
    v += int((~ranked[:k_minus]).sum())
    return k_plus + k_minus, v


def _check_scores(scores: np.ndarray, included: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    inc = np.asarray(included, dtype=bool).ravel()
    if s.shape != inc.shape:
        raise ValueError(f"scores {s.shape} and inclusion flags {inc.shape} differ in length")
    if s.size == 0:
        raise ValueError("no canary scores")
    if np.isnan(s).any():
        raise ValueError("canary scores contain NaN")
    return s, inc


def one_run_bound(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    beta: float = DEFAULT_BETA,
    grid: tuple[int, ...] | None = None,
    correction: str = "none",
) -> OneRunBound:
    """The one-run audit's epsilon lower bound from the canaries' ``scores`` (higher: more likely included) and
    who was actually ``included``: the largest :func:`one_run_epsilon` over every ``(k+, k-)`` in ``grid`` x
    ``grid`` (default :func:`guess_grid`) with ``0 < k+ + k- <= m``.

    ``correction``: "none" (the paper's practice: the maximum, each choice tested at ``beta``) or "bonferroni"
    (each at ``beta / tests``; valid at ``1 - beta`` for the maximum). See the module docstring.

    >>> rng = np.random.default_rng(0)
    >>> inc = rng.random(1000) < 0.5
    >>> b = one_run_bound(np.where(inc, 1.0, 0.0) + rng.random(1000) / 2, inc, delta=1e-5)
    >>> round(b.epsilon, 2), (b.best.k_plus, b.best.k_minus, b.best.r, b.best.v)
    (5.73, (450, 500, 950, 950))
    """
    s, inc = _check_scores(scores, included)
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")
    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    m = int(s.size)
    ks = guess_grid(m) if grid is None else tuple(sorted({int(k) for k in grid}))
    pairs = [(kp, km) for kp in ks for km in ks if 0 < kp + km <= m]
    if not pairs:
        raise ValueError(f"no (k+, k-) in the grid {ks} makes between 1 and m={m} guesses")
    level_beta = beta / len(pairs) if correction == "bonferroni" else beta
    order = np.lexsort((np.arange(m), s))
    ranked = inc[order]
    in_from_top = np.concatenate([[0], np.cumsum(ranked[::-1])])  # included among the k highest, k = 0..m
    out_from_bottom = np.concatenate([[0], np.cumsum(~ranked)])  # excluded among the k lowest
    cache: dict[tuple[int, int], float] = {}
    results = []
    for kp, km in pairs:
        r, v = kp + km, int(in_from_top[kp] + out_from_bottom[km])
        if (r, v) not in cache:
            cache[(r, v)] = one_run_epsilon(m, r, v, delta=delta, beta=level_beta)
        results.append(Guesses(k_plus=kp, k_minus=km, r=r, v=v, epsilon=cache[(r, v)]))
    best = max(results, key=lambda g: (g.epsilon, -g.r))
    return OneRunBound(
        epsilon=best.epsilon,
        best=best,
        m=m,
        delta=float(delta),
        beta=float(beta),
        correction=correction,
        tests=len(pairs),
        level=1.0 - level_beta,
        grid=tuple(results),
    )
