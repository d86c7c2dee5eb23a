"""Accountants of the Poisson-subsampled Gaussian mechanism: pinned reference values, agreement between independent
implementations, monotonicity, and noise calibration to a target epsilon."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("opacus")
pytest.importorskip("dp_accounting")

from modelsec.core.errors import ConfigError
from modelsec.stats.accountants import (
    ACCOUNTANTS,
    all_epsilons,
    epsilon,
    epsilon_pld,
    epsilon_prv,
    epsilon_rdp,
    noise_multiplier_for_epsilon,
)

pytestmark = pytest.mark.numerics  # rerun by `make test-numerics` under another CPU configuration

# One epoch of MNIST-sized DP-SGD: q = 1/235 (batch 256 of 60,000 as Opacus's DPDataLoader rounds it), sigma 1.1,
# 235 steps, delta 1e-5 (REFERENCES.md: PRV 0.316, PLD 0.307, RDP 0.739).
EPOCH = {"noise_multiplier": 1.1, "sample_rate": 1 / 235, "steps": 235, "delta": 1e-5}


@pytest.mark.parametrize(("name", "expected"), [("prv", 0.316), ("pld", 0.307), ("rdp", 0.739)])
def test_pinned_epoch_epsilons(name: str, expected: float) -> None:
    assert epsilon(name, **EPOCH) == pytest.approx(expected, rel=0.02)


def test_pinned_opacus_rdp_value() -> None:
    # Opacus's own test (accountants_test.py): sigma 1.5, q 0.04, 90 epochs, delta 1e-5.
    assert epsilon_rdp(1.5, 0.04, int(90 / 0.04), 1e-5) == pytest.approx(7.32911117143, rel=1e-6)


def test_prv_and_pld_agree_within_one_percent() -> None:
    # Two independent numerical accountants (Opacus PRV, Google dp_accounting PLD); PRV at a tighter eps_error than
    # its default 0.01, which alone is 3% of this small epsilon.
    prv = epsilon_prv(1.1, 1 / 235, 235, 1e-5, eps_error=0.001)
    pld = epsilon_pld(1.1, 1 / 235, 235, 1e-5)
    assert prv == pytest.approx(pld, rel=0.01)
    # both are upper bounds with discretisation error on the safe side of the truth; RDP is looser still
    assert epsilon_rdp(**EPOCH) > 2 * max(prv, pld)


def test_all_epsilons_lists_every_accountant() -> None:
    values = all_epsilons(noise_multiplier=2.0, sample_rate=0.01, steps=50, delta=1e-5)
    assert sorted(values) == ACCOUNTANTS.names() == ["pld", "prv", "rdp"]
    assert all(math.isfinite(v) and v > 0 for v in values.values())


def test_epsilon_grows_with_steps_and_falls_with_noise() -> None:
    assert epsilon_rdp(1.0, 0.01, 100, 1e-5) < epsilon_rdp(1.0, 0.01, 400, 1e-5)
    assert epsilon_rdp(2.0, 0.01, 100, 1e-5) < epsilon_rdp(1.0, 0.01, 100, 1e-5)
    assert epsilon_rdp(1.0, 0.01, 100, 1e-3) < epsilon_rdp(1.0, 0.01, 100, 1e-6)
    assert epsilon_rdp(1.0, 0.01, 0, 1e-5) == 0.0


def test_noise_multiplier_for_target_epsilon_within_one_percent() -> None:
    q, steps = 1 / 32, 64
    sigma = noise_multiplier_for_epsilon(target_epsilon=2.0, delta=1e-5, sample_rate=q, steps=steps)
    reached = epsilon_prv(sigma, q, steps, 1e-5)
    assert 0.99 * 2.0 <= reached <= 2.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise_multiplier": 0.0},
        {"noise_multiplier": math.inf},
        {"sample_rate": 0.0},
        {"sample_rate": 1.5},
        {"steps": -1},
        {"delta": 0.0},
        {"delta": 1.0},
    ],
)
def test_bad_inputs_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        epsilon("rdp", **{**EPOCH, **kwargs})


def test_unknown_accountant_and_unreachable_target() -> None:
    with pytest.raises(ConfigError, match="known: pld, prv, rdp"):
        epsilon("moments", **EPOCH)
    with pytest.raises(ConfigError, match="out of reach"):
        noise_multiplier_for_epsilon(target_epsilon=1e-9, delta=1e-5, sample_rate=1.0, steps=10, accountant="rdp")
