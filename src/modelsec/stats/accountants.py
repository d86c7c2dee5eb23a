"""Privacy accountants for the Poisson-subsampled Gaussian mechanism (DP-SGD), found by name.

DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy") releases, at each of ``steps`` steps, the sum
of the clipped per-example gradients of a batch in which every record is included independently with probability
``sample_rate`` (Poisson subsampling), plus Gaussian noise of standard deviation ``noise_multiplier * clip``. Under
add/remove-one adjacency this is ``steps`` self-compositions of the Poisson-subsampled Gaussian mechanism, and an
accountant turns ``(noise_multiplier, sample_rate, steps)`` into an epsilon at a given delta:

- ``prv``: privacy random variables composed numerically by FFT (Gopi, Lee & Wutschitz 2021, "Numerical Composition
  of Differential Privacy"), Opacus's ``PRVAccountant``. Returns an upper bound within ``eps_error`` of the true
  epsilon: with Opacus's default ``eps_error=0.01`` it exceeds PLD by up to that much. modelsec's default.
- ``rdp``: Renyi DP (Mironov 2017; Mironov, Talwar & Zhang 2019), Opacus's ``RDPAccountant``. A valid but loose upper
  bound: about 2.3x PRV/PLD on a typical epoch.
- ``pld``: privacy loss distributions (Koskela et al. 2020; Doroshenko et al. 2022), Google's ``dp_accounting``
  ``PLDAccountant`` (pessimistic discretisation, so also an upper bound). Independent of Opacus: the cross-check.

Every function is pure: no state, no training, so a run's claim can be recomputed from its recorded assumptions.

>>> round(epsilon("rdp", noise_multiplier=1.1, sample_rate=1 / 235, steps=235, delta=1e-5), 3)
0.739
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator

from modelsec.core.errors import ConfigError
from modelsec.core.registry import Registry

EpsilonFunction = Callable[[float, float, int, float], float]
"""``(noise_multiplier, sample_rate, steps, delta) -> epsilon``."""

ACCOUNTANTS: Registry[EpsilonFunction] = Registry("privacy accountant")

DEFAULT_ACCOUNTANT = "prv"
PRV_EPS_ERROR = 0.01
"""Opacus's default accuracy of the PRV accountant (an absolute error on epsilon)."""
PLD_DISCRETIZATION = 1e-4
"""dp_accounting's default value discretisation interval of the PLD accountant."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Opacus's RDP analysis warns when the best order is its largest one (the bound could be a little tighter
    with more orders); PRV sizes its domain with RDP and triggers it too. The values stay valid upper bounds."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


def _check(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> None:
    if not noise_multiplier > 0 or not math.isfinite(noise_multiplier):
        raise ConfigError(f"noise multiplier must be a finite number > 0 for a finite epsilon, got {noise_multiplier}")
    if not 0 < sample_rate <= 1:
        raise ConfigError(f"sample rate must be in (0, 1], got {sample_rate}")
    if steps < 0 or int(steps) != steps:
        raise ConfigError(f"steps must be an integer >= 0, got {steps}")
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")


@ACCOUNTANTS.register("prv")
def epsilon_prv(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, *, eps_error: float = PRV_EPS_ERROR
) -> float:
    """Epsilon at ``delta`` from Opacus's PRV accountant (an upper bound, within ``eps_error`` of the truth).

    >>> round(epsilon_prv(1.1, 1 / 235, 235, 1e-5), 3)
    0.316
    """
    _check(noise_multiplier, sample_rate, steps, delta)
    if steps == 0:
        return 0.0
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    with _quiet():
        return float(accountant.get_epsilon(delta=delta, eps_error=eps_error))


@ACCOUNTANTS.register("rdp")
def epsilon_rdp(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon at ``delta`` from Opacus's RDP accountant (default orders 1.1 ... 63)."""
    _check(noise_multiplier, sample_rate, steps, delta)
    if steps == 0:
        return 0.0
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    with _quiet():
        return float(accountant.get_epsilon(delta=delta))


@ACCOUNTANTS.register("pld")
def epsilon_pld(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    *,
    value_discretization_interval: float = PLD_DISCRETIZATION,
) -> float:
    """Epsilon at ``delta`` from ``dp_accounting``'s PLD accountant (add/remove-one adjacency).

    >>> round(epsilon_pld(1.1, 1 / 235, 235, 1e-5), 3)
    0.306
    """
    _check(noise_multiplier, sample_rate, steps, delta)
    if steps == 0:
        return 0.0
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(float(sample_rate), dp_accounting.GaussianDpEvent(float(noise_multiplier))),
        int(steps),
    )
    accountant = PLDAccountant(value_discretization_interval=value_discretization_interval)
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def epsilon(name: str, *, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon at ``delta`` from the accountant registered as ``name`` (``prv``, ``rdp`` or ``pld``)."""
    return ACCOUNTANTS.get(name)(noise_multiplier, sample_rate, steps, delta)


def all_epsilons(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> dict[str, float]:
    """Epsilon at ``delta`` from every registered accountant, by name."""
    return {
        name: epsilon(name, noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, delta=delta)
        for name in ACCOUNTANTS.names()
    }


def noise_multiplier_for_epsilon(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = DEFAULT_ACCOUNTANT,
    relative_tolerance: float = 0.005,
) -> float:
    """The smallest noise multiplier (up to the search's tolerance) whose epsilon at ``delta`` after ``steps``
    Poisson-sampled steps is at most ``target_epsilon``: Opacus's ``get_noise_multiplier`` (a bisection), with a
    tolerance relative to the target (Opacus's default is an absolute 0.01, which is 10% of a target of 0.1).

    The result's epsilon lies in ``[target * (1 - relative_tolerance), target]`` for the same accountant.
    """
    if not target_epsilon > 0 or not math.isfinite(target_epsilon):
        raise ConfigError(f"target epsilon must be a finite number > 0, got {target_epsilon}")
    _check(1.0, sample_rate, steps, delta)
    if steps < 1:
        raise ConfigError("a noise multiplier for a target epsilon needs at least one step")
    if accountant not in ("prv", "rdp"):
        raise ConfigError(f"noise calibration supports the 'prv' and 'rdp' accountants, got {accountant!r}")
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with _quiet():
            return float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=int(steps),
                    accountant=accountant,
                    epsilon_tolerance=relative_tolerance * target_epsilon,
                )
            )
    except ValueError as e:  # "The privacy budget is too low." (noise multiplier beyond 1e6)
        raise ConfigError(
            f"target epsilon {target_epsilon} at delta {delta} is out of reach with {steps} steps at sample rate "
            f"{sample_rate:.3g} ({e}); raise the target, or train for fewer steps"
        ) from None
