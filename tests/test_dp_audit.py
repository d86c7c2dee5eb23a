"""The one-run privacy audit (Steinke, Nasr & Jagielski 2023): the bound's checkpoints and analytic properties, its
validity under an eps-DP null, the canaries, the pipeline on a memorising non-private model, a deliberately broken
DP-SGD caught (noise 10x below what its claim was computed for), an honest one passing, the report and the CLI's
exit codes."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch import nn

from modelsec.audits import dp_audit
from modelsec.audits.canaries import draw_canaries, with_canaries
from modelsec.audits.dp_audit import AuditTraining, defense_trainer, module_logits, one_run_audit
from modelsec.core.errors import ConfigError
from modelsec.core.seeding import seeded
from modelsec.data.dataset import Dataset
from modelsec.results.dp_audit import DPAuditResult, DPClaim
from modelsec.stats.dp_audit_bound import (
    clopper_pearson_epsilon,
    correct_guesses,
    guess_grid,
    one_run_bound,
    one_run_epsilon,
    p_value,
)

pytestmark = pytest.mark.numerics  # rerun by `make test-numerics` under another CPU configuration

# ---------------------------------------------------------------- the bound


def test_checkpoints_for_1000_canaries_at_delta_1e5() -> None:
    """REFERENCES.md: 100 perfect guesses bound eps at about 3.5, 1,000 at about 5.8."""
    assert one_run_epsilon(1000, 100, 100, delta=1e-5) == pytest.approx(3.465, abs=0.005)
    assert one_run_epsilon(1000, 1000, 1000, delta=1e-5) == pytest.approx(5.782, abs=0.005)
    # the delta term costs a little: the pure-DP bounds are logit(0.05 ** (1 / r))
    for r in (100, 1000):
        pure = math.log(0.05 ** (1 / r) / (1 - 0.05 ** (1 / r)))
        assert one_run_epsilon(1000, r, r, delta=0.0) == pytest.approx(pure, abs=1e-6)
        assert one_run_epsilon(1000, r, r, delta=1e-5) < pure


def _paper_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """The paper's Appendix D loop, term by term (the slow reference)."""
    from scipy import stats

    q = 1 / (1 + math.exp(-eps))
    beta = stats.binom.sf(v - 1, r, q)
    alpha, total = 0.0, 0.0
    for i in range(1, v + 1):
        total += stats.binom.pmf(v - i, r, q)
        if total > i * alpha:
            alpha = total / i
    return float(min(beta + alpha * delta * 2 * m, 1))


@pytest.mark.parametrize(
    ("m", "r", "v", "eps", "delta"),
    [(1000, 100, 100, 3.0, 1e-5), (1000, 300, 250, 1.5, 1e-5), (200, 50, 40, 0.7, 1e-3), (50, 10, 0, 1.0, 0.01)],
)
def test_p_value_is_the_papers(m: int, r: int, v: int, eps: float, delta: float) -> None:
    assert p_value(m, r, v, eps, delta) == pytest.approx(_paper_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(("r", "v"), [(10, 10), (50, 45), (200, 130), (1000, 900), (7, 5)])
def test_pure_dp_bound_is_logit_of_clopper_pearson(r: int, v: int) -> None:
    assert one_run_epsilon(1000, r, v, delta=0.0) == pytest.approx(clopper_pearson_epsilon(r, v), abs=1e-6)


def test_half_right_or_worse_bounds_nothing() -> None:
    for r in (2, 10, 100, 1000):
        assert one_run_epsilon(1000, r, r // 2, delta=1e-5) == 0.0
        assert one_run_epsilon(1000, r, r // 3, delta=0.0) == 0.0
    assert one_run_epsilon(10, 0, 0, delta=1e-5) == 0.0


def test_bound_grows_with_correct_guesses_and_shrinks_with_delta() -> None:
    bounds = [one_run_epsilon(1000, 200, v, delta=1e-5) for v in range(100, 201, 5)]
    assert all(b1 <= b2 for b1, b2 in itertools.pairwise(bounds))
    assert bounds[0] == 0.0 and bounds[-1] > 4
    by_delta = [one_run_epsilon(1000, 200, 190, delta=d) for d in (0.0, 1e-6, 1e-5, 1e-4, 1e-3)]
    assert all(b1 >= b2 for b1, b2 in itertools.pairwise(by_delta))


def test_bisection_returns_the_rejected_end() -> None:
    eps = one_run_epsilon(1000, 300, 260, delta=1e-5)
    assert p_value(1000, 300, 260, eps, 1e-5) < 0.05 <= p_value(1000, 300, 260, eps + 1e-6, 1e-5)


def test_bound_holds_at_its_level_under_an_eps_dp_null() -> None:
    """Canaries whose score is eps-DP randomised response of the inclusion bit: for one choice of guesses made
    in advance, the bound exceeds the true eps in at most beta = 5% of runs (up to sampling error)."""
    eps, m, runs = 1.0, 200, 300
    rng = np.random.default_rng(0)
    q = math.exp(eps) / (1 + math.exp(eps))
    exceed = 0
    for _ in range(runs):
        included = rng.random(m) < 0.5
        response = np.where(rng.random(m) < q, included, ~included)
        scores = response + rng.random(m) / 10  # ties broken at random, the response dominates
        bound = one_run_bound(scores, included, delta=0.0, grid=(0, 40))
        assert bound.tests == 3
        guess = next(g for g in bound.grid if g.k_plus == 40 and g.k_minus == 40)
        exceed += guess.epsilon > eps
    assert exceed / runs <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)


def test_correct_guesses_and_ties_by_position() -> None:
    scores = np.array([0.3, 0.9, 0.9, 0.1, 0.5])
    included = np.array([True, False, True, False, True])
    assert correct_guesses(scores, included, 1, 0) == (1, 1)  # the later of the tied 0.9s ranks higher
    assert correct_guesses(scores, included, 2, 1) == (3, 2)
    assert correct_guesses(scores, included, 0, 5) == (5, 2)
    with pytest.raises(ValueError, match="k\\+ \\+ k-"):
        correct_guesses(scores, included, 3, 3)
    with pytest.raises(ValueError, match="NaN"):
        correct_guesses(np.array([np.nan]), np.array([True]), 1, 0)


def test_grid_maximum_and_bonferroni() -> None:
    rng = np.random.default_rng(1)
    included = rng.random(1000) < 0.5
    perfect = one_run_bound(included + rng.random(1000) / 2, included, delta=1e-5)
    assert perfect.epsilon == max(g.epsilon for g in perfect.grid) > 5.5
    assert perfect.best.v == perfect.best.r and perfect.tests == len(perfect.grid)
    assert all(g.k_plus + g.k_minus <= 1000 and g.k_plus in guess_grid(1000) for g in perfect.grid)
    corrected = one_run_bound(included + rng.random(1000) / 2, included, delta=1e-5, correction="bonferroni")
    assert 0 < corrected.epsilon < perfect.epsilon and corrected.level == pytest.approx(1 - 0.05 / corrected.tests)
    noise = one_run_bound(rng.random(1000), included, delta=1e-5)
    assert noise.epsilon < 0.5
    json.dumps(perfect.to_dict())


# ---------------------------------------------------------------- canaries

K, D = 4, 64
CENTERS = np.random.default_rng(123).random((K, D)).astype(np.float32)


def blobs(n: int, seed: int, *, d: int = D, noise: float = 0.3) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    centers = CENTERS if d == D else np.random.default_rng(123).random((K, d)).astype(np.float32)
    x = np.clip(centers[y] + noise * rng.standard_normal((n, d)), 0, 1).astype(np.float32)
    return Dataset("blobs", x, y.astype(np.int64), K, (0.0, 1.0))


def test_canaries_are_seeded_wrong_and_half_included() -> None:
    pool = blobs(500, 2)
    a = draw_canaries("mislabelled", 400, like=pool, pool=pool, rng=np.random.default_rng(5))
    b = draw_canaries("mislabelled", 400, like=pool, pool=pool, rng=np.random.default_rng(5))
    assert np.array_equal(a.data.x, b.data.x) and np.array_equal(a.included, b.included)
    assert a.source_indices is not None and len(set(a.source_indices.tolist())) == 400
    assert np.array_equal(a.data.x, pool.x[a.source_indices]) and np.all(a.data.y != pool.y[a.source_indices])
    assert 160 < a.included.sum() < 240
    ood = draw_canaries("out-of-distribution", 50, like=pool, rng=np.random.default_rng(0))
    assert ood.data.x.shape == (50, D) and ood.data.x.min() >= 0 and ood.data.x.max() <= 1
    train = with_canaries(blobs(30, 1), a)
    assert len(train) == 30 + a.included.sum()
    with pytest.raises(ConfigError, match="held-out records"):
        draw_canaries("mislabelled", 600, like=pool, pool=pool, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="canary kind"):
        draw_canaries("poisoned", 5, like=pool, pool=pool, rng=np.random.default_rng(0))


# ---------------------------------------------------------------- the pipeline


def oracle(claim: DPClaim | None) -> dp_audit.TrainFn:
    """A "training" that recites the label of every record it saw: a canary scores high exactly when included."""

    def train(data: Dataset) -> AuditTraining:
        seen = {row.tobytes(): int(label) for row, label in zip(data.x, data.y, strict=True)}

        def logits(x: np.ndarray) -> np.ndarray:
            out = np.zeros((len(x), data.num_classes))
            for i, row in enumerate(x):
                if row.tobytes() in seen:
                    out[i, seen[row.tobytes()]] = 8.0
            return out

        return AuditTraining(logits, claim, {"defense": "oracle"})

    return train


def test_a_stubbed_training_that_leaks_violates_a_small_claim() -> None:
    claim = DPClaim(epsilon=0.5, delta=1e-5, accountant="prv", epsilons={"prv": 0.5, "rdp": 0.9})
    result = one_run_audit(oracle(claim), blobs(300, 1), canaries=200, seed=3)
    assert result.lower_bound > 3 and result.claimed_epsilon == 0.5 and not result.passed
    assert "EXCEEDS" in result.verdict() and "bug" in result.verdict()
    assert result.included + len(result.excluded_scores) == 200 == result.canaries
    assert "held out" in result.notes[0]  # canary originals taken from the training data
    again = DPAuditResult.from_dict(json.loads(result.to_json()))
    assert again.lower_bound == result.lower_bound and again.claim == claim and not again.passed
    with pytest.raises(ConfigError, match="claim's delta"):
        one_run_audit(oracle(claim), blobs(300, 1), canaries=50, delta=1e-3)
    generous = DPClaim(epsilon=50.0, delta=1e-5, accountant="prv")
    assert one_run_audit(oracle(generous), blobs(300, 1), canaries=200, seed=3).passed


def test_non_private_mlp_memorises_mislabelled_canaries() -> None:
    train_fn = defense_trainer(
        "standard", {"epochs": 30, "batch_size": 100, "lr": 1e-2, "lr_schedule": "constant"}, arch="mlp"
    )
    result = one_run_audit(train_fn, blobs(200, 1), canaries=200, canary_source=blobs(300, 2), seed=0)
    assert result.claimed_epsilon is None and result.passed and result.epsilons == {}
    assert result.lower_bound > 1.0, result.verdict()
    assert result.training["train_accuracy"] > 0.95 and result.training["train_records"] == 200 + result.included
    assert np.median(result.included_scores) > np.median(result.excluded_scores)
    assert result.notes == []


# A deliberately broken DP-SGD: the optimizer adds 10x less noise than the noise multiplier the claim is computed
# from. Linear model, high-dimensional noise canaries (nearly orthogonal: each one's clipped gradient moves only its
# own direction), full-size clipped gradients (the canaries are never fitted), sample rate 0.2 over 50 steps, and a
# noise multiplier whose PRV epsilon is about 1: the broken run's canaries stand out by about 2.6 standard
# deviations of the noise (q sqrt(T) / sigma), the honest run's by 0.26.
HIGH_D, SIGMA_FOR_EPS_1 = 1000, 5.57


def dp_linear_trainer() -> dp_audit.TrainFn:
    from modelsec.defenses import dp_sgd

    def train(data: Dataset) -> AuditTraining:
        with seeded(0):
            module = nn.Linear(HIGH_D, K)
        config = dp_sgd.DPSGDConfig(
            noise_multiplier=SIGMA_FOR_EPS_1, batch_size=round(0.2 * len(data)), epochs=10, lr=0.5, momentum=0.0
        )
        report = dp_sgd.train_dp_sgd(module, data, config)
        claim = DPClaim(report.epsilon or 0.0, report.delta, report.accountant, dict(report.epsilons))
        return AuditTraining(module_logits(module), claim, {"noise_multiplier_claimed": report.noise_multiplier})

    return train


@pytest.fixture
def high_d_data() -> Dataset:
    rng = np.random.default_rng(1)
    centers = np.random.default_rng(123).uniform(-0.5, 0.5, (K, HIGH_D))
    y = rng.integers(0, K, 100)
    x = np.clip(centers[y] + 0.3 * rng.standard_normal((100, HIGH_D)), -1, 1).astype(np.float32)
    return Dataset("high-d", x, y.astype(np.int64), K, (-1.0, 1.0))


@pytest.fixture
def broken_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test-only: the DP optimizer gets a tenth of the noise multiplier that the accountants are given."""
    pytest.importorskip("opacus")
    from modelsec.defenses import dp_sgd

    honest = dp_sgd.DPSGDStep

    class TenTimesLessNoise(honest):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, noise_multiplier: float, **kwargs: Any) -> None:
            super().__init__(*args, noise_multiplier=noise_multiplier / 10, **kwargs)

    monkeypatch.setattr(dp_sgd, "DPSGDStep", TenTimesLessNoise)


def test_broken_dp_sgd_is_caught(high_d_data: Dataset, broken_noise: None) -> None:
    result = one_run_audit(dp_linear_trainer(), high_d_data, canaries=500, canary_kind="out-of-distribution", seed=0)
    assert result.claimed_epsilon is not None and 0.8 < result.claimed_epsilon <= 1.0
    assert set(result.epsilons) == {"prv", "rdp", "pld"}
    assert result.lower_bound > 1.5 * result.claimed_epsilon, result.verdict()
    assert not result.passed


def test_honest_dp_sgd_passes(high_d_data: Dataset) -> None:
    pytest.importorskip("opacus")
    result = one_run_audit(dp_linear_trainer(), high_d_data, canaries=500, canary_kind="out-of-distribution", seed=0)
    assert result.claimed_epsilon is not None and 0.8 < result.claimed_epsilon <= 1.0
    assert result.lower_bound <= result.claimed_epsilon and result.passed, result.verdict()


def test_refuses_bad_options() -> None:
    data = blobs(50, 1)
    with pytest.raises(ConfigError, match="canary kind"):
        one_run_audit(oracle(None), data, canaries=10, canary_kind="poison")
    with pytest.raises(ConfigError, match="score"):
        one_run_audit(oracle(None), data, canaries=10, score="auc")
    with pytest.raises(ConfigError, match="more than the 50 records"):
        one_run_audit(oracle(None), data, canaries=50)


# ---------------------------------------------------------------- report and CLI


def test_html_report_shows_claim_accountants_bound_and_histograms(tmp_path: Path) -> None:
    from modelsec.report.dp_audit import write_dp_audit_html

    claim = DPClaim(epsilon=0.5, delta=1e-5, accountant="prv", epsilons={"prv": 0.5, "rdp": 0.9, "pld": 0.49})
    result = one_run_audit(oracle(claim), blobs(300, 1), canaries=100, seed=1)
    result.training["note"] = "<script>alert(1)</script>"
    html = write_dp_audit_html(result, tmp_path / "dp_audit.html").read_text()
    assert "verdict-fail" in html and "EXCEEDS" in html and "RDP accountant" in html and "0.9000" in html
    assert html.count("data:image/png;base64,") == 1 and "<script>" not in html and "&lt;script&gt;" in html


def run_cli(*args: str) -> int:
    from modelsec.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
        raise SystemExit(0)
    return int(e.value.code or 0)


@pytest.fixture
def npz_data(tmp_path: Path) -> Path:
    data = blobs(900, 0)
    path = tmp_path / "blobs.npz"
    np.savez(path, x=data.x, y=data.y)
    return path


def test_cli_exits_3_on_a_violated_claim_and_0_otherwise(
    npz_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    claims = {"small": DPClaim(epsilon=0.5, delta=1e-5, accountant="prv"), "large": None}
    picked: dict[str, Any] = {}

    def stub_trainer(defense: str, config: Any, **kwargs: Any) -> dp_audit.TrainFn:
        picked["config"], picked["population"] = config, kwargs["population"]
        return oracle(claims["small"])

    monkeypatch.setattr(dp_audit, "defense_trainer", stub_trainer)
    out = tmp_path / "violated"
    code = run_cli(
        "audit-dp", "--data", str(npz_data), "--arch", "mlp", "--noise-multiplier", "2.0", "--canaries", "100",
        "--out", str(out), "--quiet",
    )  # fmt: skip
    assert code == 3
    assert "FAIL" in capsys.readouterr().err
    assert picked["config"].noise_multiplier == 2.0
    from modelsec.data import load_splits

    population = load_splits(str(npz_data), seed=0).population  # 100 of it copied as canaries, the rest for the defense
    assert len(picked["population"]) == len(population) - 100
    saved = DPAuditResult.load(out / "dp_audit.json")
    assert not saved.passed and saved.training["data"]["members_used"] > 0
    assert (out / "dp_audit.html").exists()

    claims["small"] = DPClaim(epsilon=100.0, delta=1e-5, accountant="prv")
    assert run_cli("audit-dp", "--data", str(npz_data), "--canaries", "100", "--out", str(out), "-q") == 0
    assert "consistent with the claim" in capsys.readouterr().out
    assert run_cli("audit-dp", "--data", str(npz_data), "--canaries", "0", "--out", str(out)) == 2
    assert run_cli("audit-dp", "--data", str(npz_data), "--noise-multiplier", "-1", "--out", str(out)) == 2


def test_cli_non_private_run_reports_the_bound(npz_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "standard"
    code = run_cli(
        "audit-dp", "--data", str(npz_data), "--defense", "standard", "--arch", "mlp", "--epochs", "20",
        "--batch-size", "100", "--lr", "0.01", "--lr-schedule", "constant", "--canaries", "100", "--out", str(out),
        "--quiet",
    )  # fmt: skip
    assert code == 0
    result = DPAuditResult.load(out / "dp_audit.json")
    assert result.claimed_epsilon is None and result.passed and result.training["defense"] == "standard"
    assert result.canaries == 100 and len(result.included_scores) == result.included


def test_claim_from_a_defense_guarantee() -> None:
    from modelsec.defenses.base import Guarantees

    details = {"epsilon": 2.9, "delta": 1e-5, "accountant": "prv", "epsilons": {"prv": 2.9, "rdp": 6.1, "pld": 2.89}}
    claim = DPClaim.from_guarantees(
        Guarantees(kind="differential-privacy", summary="", details={**details, "steps": 7})
    )
    assert claim == DPClaim(2.9, 1e-5, "prv", details["epsilons"], {"steps": 7})
    assert DPClaim.from_guarantees(Guarantees(kind="none", summary="no defense")) is None
    assert (
        DPClaim.from_guarantees(Guarantees(kind="differential-privacy", summary="", details={"epsilon": None})) is None
    )
