"""Membership inference: numerically stable signals, the metric attacks, LiRA, RMIA, the membership matrix, the
record pool, reference-model training (in and out of process) and its cache."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from modelsec.attacks.membership import (
    MEMBERSHIP_ATTACKS,
    LiRAOffline,
    LiRAOnline,
    MembershipInputs,
    ReferenceSignals,
    RMIAOffline,
    RMIAOnline,
    Signals,
)
from modelsec.attacks.membership.lira import lira_scores
from modelsec.attacks.membership.rmia import A_GRID, rmia_log_ratio, rmia_pairwise_scores, tune_offline_a
from modelsec.attacks.membership.signals import (
    cross_entropy,
    entropy,
    max_log_prob,
    modified_entropy,
    scaled_logit,
)
from modelsec.audits.membership import evaluate_membership, plan_membership_attacks
from modelsec.audits.membership_pool import build_pool, reference_signals
from modelsec.audits.reference_models import (
    BuiltinRecipe,
    ReferenceConfig,
    membership_matrix,
    train_reference_models,
)
from modelsec.core.errors import ConfigError
from modelsec.core.seeding import spawned_seeds
from modelsec.data.dataset import Dataset, Splits
from modelsec.defenses.training import TrainingConfig
from modelsec.models.base import Capability
from modelsec.stats.metrics import auc
from modelsec.store.cache import SignalCache, cache_key

pytestmark = pytest.mark.numerics  # rerun by `make test-numerics` under another CPU configuration


def signals_from_logits(logits: np.ndarray, labels: np.ndarray) -> Signals:
    return Signals(logits.astype(np.float32), labels.astype(np.int64), cross_entropy(logits, labels))


# -- signals ----------------------------------------------------------------------------------------------------


def test_saturated_model_still_gets_distinct_scores_from_every_score_attack() -> None:
    """Margins of 40-80: softmax is exactly 1.0 in float32 and the float32 loss is exactly 0, yet every attack
    that reads scores ranks the records without ties (and in the right order: larger margin = more member)."""
    margins = np.linspace(40.0, 80.0, 9)
    logits = np.zeros((9, 3), dtype=np.float32)
    logits[:, 0] = margins
    labels = np.zeros(9, dtype=np.int64)
    p32 = torch.softmax(torch.from_numpy(logits), dim=1)
    assert bool((p32[:, 0] == 1.0).all())
    assert bool(
        (
            nn.functional.cross_entropy(torch.from_numpy(logits), torch.zeros(9, dtype=torch.long), reduction="none")
            == 0
        ).all()
    )
    inputs = MembershipInputs(signals_from_logits(logits, labels))
    for name in ("loss-threshold", "confidence", "entropy", "modified-entropy"):
        scores = MEMBERSHIP_ATTACKS.get(name)()(inputs)
        assert np.all(np.diff(scores) > 0), name


def test_signal_formulas_match_direct_float64_evaluation() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 5)) * 3
    y = rng.integers(0, 5, 50)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    py = p[np.arange(50), y]
    np.testing.assert_allclose(cross_entropy(z, y), -np.log(py), rtol=1e-10)
    np.testing.assert_allclose(scaled_logit(z, y), np.log(py / (1 - py)), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(max_log_prob(z), np.log(p.max(1)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(entropy(z), -(p * np.log(p)).sum(1), rtol=1e-10)
    others = np.where(np.arange(5)[None, :] == y[:, None], 0.0, -p * np.log(1 - p)).sum(1)
    np.testing.assert_allclose(modified_entropy(z, y), -(1 - py) * np.log(py) + others, rtol=1e-9)
    # leading dimensions (one row per reference model) broadcast over the same labels
    stacked = np.stack([z, z + 1.0])
    np.testing.assert_allclose(scaled_logit(stacked, y)[1], scaled_logit(z + 1.0, y))


# -- the membership matrix and the pool -------------------------------------------------------------------------


@pytest.mark.parametrize("models", [2, 4, 8])
def test_membership_matrix_is_balanced_for_every_even_prefix(models: int) -> None:
    eligible = np.ones(500, dtype=bool)
    eligible[:50] = False
    m = membership_matrix(models, eligible, np.random.default_rng(1))
    assert m.shape == (models, 500) and not m[:, :50].any()
    for k in range(2, models + 1, 2):
        assert (m[:k, 50:].sum(axis=0) == k // 2).all()
    assert 0.4 < m[0, 50:].mean() < 0.6  # a fair coin per record
    assert np.array_equal(m, membership_matrix(models, eligible, np.random.default_rng(1)))


def test_membership_matrix_odd_and_single() -> None:
    eligible = np.ones(2000, dtype=bool)
    one = membership_matrix(1, eligible, np.random.default_rng(0))
    assert 0.45 < one.mean() < 0.55
    three = membership_matrix(3, eligible, np.random.default_rng(0))
    assert set(np.unique(three.sum(axis=0))) == {1, 2}


def _splits(n_members: int = 60, n_non: int = 40, n_pop: int = 100, shared: int = 0) -> Splits:
    rng = np.random.default_rng(0)

    def ds(n: int, name: str) -> Dataset:
        return Dataset(name, rng.random((n, 4)).astype(np.float32), rng.integers(0, 2, n), 2, (0.0, 1.0))

    members, non, pop = ds(n_members, "m"), ds(n_non, "n"), ds(n_pop, "p")
    if shared:
        non.x[:shared] = members.x[:shared]  # the same inputs in two splits
    return Splits("synthetic", 0, members, non, pop)


def test_pool_layout_online_and_offline() -> None:
    splits = _splits()
    rng = np.random.default_rng(0)
    online = build_pool(
        splits, members=30, nonmembers=20, rng=rng, reference=ReferenceConfig(models=2), target_train_size=60
    )
    assert online.members.tolist() == list(range(30)) and online.nonmembers.tolist() == list(range(30, 50))
    assert len(online.records) == 120 and online.eligible.all()  # 2 * 60 records: 50 candidates + 70 population
    offline = build_pool(
        splits,
        members=30,
        nonmembers=20,
        rng=rng,
        reference=ReferenceConfig(models=1, online=False),
        target_train_size=40,
    )
    assert len(offline.records) == 130 and not offline.eligible[:50].any() and offline.eligible[50:].all()
    none = build_pool(splits, members=500, nonmembers=500, rng=rng)
    assert (none.members.size, none.nonmembers.size, len(none.records)) == (60, 40, 100)
    np.testing.assert_array_equal(none.records.x[none.members], splits.members.x[none.member_source])


def test_pool_leaves_out_records_shared_between_splits() -> None:
    splits = _splits(shared=5)
    pool = build_pool(splits, members=100, nonmembers=100, rng=np.random.default_rng(0), exclude_shared=True)
    assert (pool.members.size, pool.nonmembers.size) == (55, 35)
    shared = {row.tobytes() for row in splits.members.x[:5]}
    assert not any(row.tobytes() in shared for row in pool.records.x)


def test_attack_plan() -> None:
    online, offline = ReferenceConfig(models=2), ReferenceConfig(models=1, online=False)
    names = lambda attacks: sorted(a.name for a in attacks)  # noqa: E731
    plain, notes = plan_membership_attacks(None, Capability.GRADIENTS, None)
    assert names(plain) == ["confidence", "entropy", "loss-threshold", "modified-entropy"]
    assert any("lira" in n for n in notes)
    with_online, _ = plan_membership_attacks(None, Capability.SCORES, online)
    assert {"lira", "lira-offline", "rmia", "rmia-offline", "shadow"} <= set(names(with_online))
    with_offline, _ = plan_membership_attacks(None, Capability.SCORES, offline)
    assert "lira" not in names(with_offline) and "rmia-offline" in names(with_offline)
    labels_only, notes = plan_membership_attacks(None, Capability.LABELS, None)
    assert names(labels_only) == ["label-only"] and any("labels only" in n for n in notes)
    with pytest.raises(ConfigError, match="reference models"):
        plan_membership_attacks(("lira",), Capability.SCORES, None)
    with pytest.raises(ConfigError, match="online"):
        plan_membership_attacks(("rmia",), Capability.SCORES, offline)
    with pytest.raises(ConfigError, match="at least 2"):
        ReferenceConfig(models=1, online=True)


# -- LiRA -------------------------------------------------------------------------------------------------------


def _gaussian_world(
    n: int = 400, models: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-record IN / OUT Gaussians of the scaled logit with record-specific means (some records are easy), the
    reference models' values drawn from them, and a target that trained on the first half of the records."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 3.0, n)
    mu_out, mu_in, sigma = difficulty, difficulty + 1.0, 0.5
    inclusion = membership_matrix(models, np.ones(n, dtype=bool), rng)
    ref = np.where(inclusion, mu_in, mu_out) + sigma * rng.normal(size=(models, n))
    member = np.arange(n) < n // 2
    target = np.where(member, mu_in, mu_out) + sigma * rng.normal(size=n)
    return target, ref, inclusion, member


def test_lira_matches_a_slow_reference_implementation() -> None:
    target, ref, inclusion, _ = _gaussian_world(n=30, models=8)
    ins = [ref[inclusion[:, i], i] for i in range(30)]
    outs = [ref[~inclusion[:, i], i] for i in range(30)]

    def pooled(groups: list[list[np.ndarray]]) -> float:  # within-record spread, one mean per record and group
        resid = sum(((v - v.mean()) ** 2).sum() for g in groups for v in g)
        return float(np.sqrt(resid / sum(v.size - 1 for g in groups for v in g)))

    for per_example in (True, False):
        fast = lira_scores(target, ref, inclusion, online=True, per_example_variance=per_example)
        fast_off = lira_scores(target, ref, inclusion, online=False, per_example_variance=per_example)
        for i in range(30):
            s_in, s_out = (ins[i].std(), outs[i].std()) if per_example else (pooled([ins, outs]),) * 2
            s_off = outs[i].std() if per_example else pooled([outs])
            slow = stats.norm.logpdf(target[i], ins[i].mean(), s_in) - stats.norm.logpdf(
                target[i], outs[i].mean(), s_out
            )
            assert fast[i] == pytest.approx(slow, rel=1e-9, abs=1e-9)
            assert fast_off[i] == pytest.approx((target[i] - outs[i].mean()) / s_off, rel=1e-12)


def test_lira_global_variance_with_one_model_per_group_falls_back_to_the_spread_across_records() -> None:
    target, ref, inclusion, member = _gaussian_world(models=2)
    s = lira_scores(target, ref, inclusion, online=True, per_example_variance=False)
    sigma = ref.std()  # every record has one IN and one OUT value: no within-record spread to pool
    in_mean, out_mean = (ref * inclusion).sum(0), (ref * ~inclusion).sum(0)
    np.testing.assert_allclose(s, ((target - out_mean) ** 2 - (target - in_mean) ** 2) / (2 * sigma**2), rtol=1e-9)
    assert np.abs(s).max() < 1e4 and auc(s[member], s[~member]) > 0.6


def test_records_without_the_models_a_test_needs_score_nan_and_candidates_must_have_them() -> None:
    """One offline reference model trained on half of the population: the population records it trained on have
    no OUT model, so offline attacks cannot judge them (NaN), while the candidates, OUT of it, are judged."""
    rng = np.random.default_rng(0)
    n, k = 40, 3
    labels = rng.integers(0, k, n)
    eligible = np.arange(n) >= 20  # 20 candidates, 20 population records
    inclusion = membership_matrix(1, eligible, rng)
    inputs = MembershipInputs(
        signals_from_logits(rng.normal(size=(n, k)), labels),
        ReferenceSignals(rng.normal(size=(1, n, k)).astype(np.float32), inclusion, labels),
    )
    for attack in (LiRAOffline(), RMIAOffline()):
        s = attack(inputs)
        assert np.isfinite(s[:20]).all() and np.array_equal(np.isnan(s), inclusion[0]), attack.name
    results, _ = evaluate_membership([LiRAOffline()], inputs, np.arange(10), np.arange(10, 20), rng=rng)
    assert results[0].n_members == 10
    with pytest.raises(ConfigError, match="cannot judge"):
        evaluate_membership([LiRAOffline()], inputs, np.flatnonzero(inclusion[0])[:3], np.arange(5), rng=rng)


def test_lira_beats_a_global_threshold_where_records_differ_in_difficulty() -> None:
    target, ref, inclusion, member = _gaussian_world()
    global_auc = auc(target[member], target[~member])
    for online in (True, False):
        s = lira_scores(target, ref, inclusion, online=online, per_example_variance=False)
        assert auc(s[member], s[~member]) > global_auc + 0.2


def test_lira_and_rmia_attack_classes_read_the_signals() -> None:
    rng = np.random.default_rng(0)
    n, k, models = 200, 4, 4
    labels = rng.integers(0, k, n)
    inclusion = membership_matrix(models, np.ones(n, dtype=bool), rng)
    ref_logits = rng.normal(size=(models, n, k))
    ref_logits[np.arange(models)[:, None], np.arange(n)[None, :], labels[None, :]] += 2.0 * inclusion
    member = rng.random(n) < 0.5
    target_logits = rng.normal(size=(n, k))
    target_logits[np.arange(n), labels] += 2.0 * member
    inputs = MembershipInputs(
        signals_from_logits(target_logits, labels),
        ReferenceSignals(ref_logits.astype(np.float32), inclusion, labels),
        online=True,
    )
    for attack in (LiRAOnline(), LiRAOffline(), RMIAOnline(), RMIAOffline(), RMIAOffline(a=0.5)):
        s = attack(inputs)
        assert s.shape == (n,) and auc(s[member], s[~member]) > 0.75, attack.name
    with pytest.raises(ConfigError, match="online"):
        LiRAOnline()(MembershipInputs(inputs.target, inputs.reference, online=False))
    with pytest.raises(ConfigError, match="reference models"):
        RMIAOffline()(MembershipInputs(inputs.target))
    with pytest.raises(ConfigError):
        LiRAOnline(variance="median")


# -- RMIA -------------------------------------------------------------------------------------------------------


def test_rmia_log_ratio_matches_probabilities() -> None:
    rng = np.random.default_rng(0)
    target_logp = np.log(rng.uniform(0.05, 0.95, 20))
    ref_logp = np.log(rng.uniform(0.05, 0.95, (4, 20)))
    inclusion = membership_matrix(4, np.ones(20, dtype=bool), rng)
    p_t, p_r = np.exp(target_logp), np.exp(ref_logp)
    online = rmia_log_ratio(target_logp, ref_logp, inclusion, online=True, a=1.0)
    np.testing.assert_allclose(online, np.log(p_t / p_r.mean(0)), rtol=1e-12)
    a = 0.3
    p_out = np.array([p_r[~inclusion[:, i], i].mean() for i in range(20)])
    offline = rmia_log_ratio(target_logp, ref_logp, inclusion, online=False, a=a)
    np.testing.assert_allclose(offline, np.log(p_t / ((1 + a) / 2 * p_out + (1 - a) / 2)), rtol=1e-12)


def test_rmia_pairwise_score_orders_records_as_the_log_ratio_does() -> None:
    rng = np.random.default_rng(0)
    lr_x, lr_z = rng.normal(size=300), rng.normal(size=1000)
    pairwise = rmia_pairwise_scores(lr_x, lr_z, gamma=2.0)
    order = np.argsort(lr_x)
    assert np.all(np.diff(pairwise[order]) >= 0)  # a non-decreasing function of LR(x): the same ROC up to ties
    slow = np.array([np.mean(np.exp(x - lr_z) > 2.0) for x in lr_x])
    np.testing.assert_allclose(pairwise, slow)


def test_tuned_a_is_on_the_grid_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    ref_logp = np.log(rng.uniform(0.05, 0.95, (4, 300)))
    inclusion = membership_matrix(4, np.ones(300, dtype=bool), rng)
    ref_logp = np.where(inclusion, np.log(0.5 + 0.5 * np.exp(ref_logp)), ref_logp)  # IN records more confident
    a = tune_offline_a(ref_logp, inclusion)
    assert a in A_GRID and a == tune_offline_a(ref_logp, inclusion)


# -- reference models -------------------------------------------------------------------------------------------


def _blobs(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.normal(size=(n, 6)) * 0.15 + 0.5 + 0.1 * y[:, None]).clip(0, 1).astype(np.float32)
    return Dataset("blobs", x, y, 3, (0.0, 1.0))


def test_reference_training_is_seeded_and_the_same_in_worker_processes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pool = _blobs(120, 0)
    inclusion = membership_matrix(2, np.ones(120, dtype=bool), np.random.default_rng(0))
    recipe = BuiltinRecipe(arch="mlp", training=TrainingConfig(epochs=2, batch_size=32))
    here = train_reference_models(pool, inclusion, recipe=recipe, seed=3, workers=1)
    there = train_reference_models(pool, inclusion, recipe=recipe, seed=3, workers=2)
    assert here.signals.logits.shape == (2, 120, 3) and here.workers == 1 and there.workers == 2
    np.testing.assert_array_equal(here.signals.logits, there.signals.logits)
    assert not np.array_equal(here.signals.logits[0], here.signals.logits[1])  # different data and seeds


def test_reference_signals_are_cached(tmp_path) -> None:  # type: ignore[no-untyped-def]
    splits = Splits("blobs", 0, _blobs(80, 1), _blobs(40, 2), _blobs(80, 3))
    config = ReferenceConfig(models=2, workers=1)
    pool = build_pool(
        splits, members=40, nonmembers=40, rng=np.random.default_rng(0), reference=config, target_train_size=60
    )
    cache = SignalCache(tmp_path)
    training = TrainingConfig(epochs=1, batch_size=32)
    recipe = BuiltinRecipe(arch="mlp", training=training)
    first = reference_signals(pool, config, recipe=recipe, cache=cache)
    second = reference_signals(pool, config, recipe=recipe, cache=cache)
    assert not first.cached and second.cached and second.compute()["from_cache"]
    np.testing.assert_array_equal(first.signals.logits, second.signals.logits)
    np.testing.assert_array_equal(first.signals.inclusion, second.signals.inclusion)
    # one entry per model, keyed by the pool, the model's members, its seed and the recipe (not the executor)
    inclusion = membership_matrix(config.models, pool.eligible, np.random.default_rng(config.seed))
    for k, seed in enumerate(spawned_seeds(config.seed, config.models)):
        packed = np.packbits(inclusion[k]).tobytes() + str(inclusion[k].shape).encode()
        key = {
            "kind": "reference-model-logits",
            "pool": pool.records.sha256(),
            "members": hashlib.sha256(packed).hexdigest(),
            "seed": seed,
            "arch": "mlp",
            "training": dataclasses.asdict(training),
        }
        np.testing.assert_array_equal(cache.load(cache_key(key))["logits"], first.signals.logits[k])
    assert (
        first.compute()["arch"] == "mlp" and first.compute()["epochs"] == 1 and "recipe_guessed" not in first.compute()
    )
    other = reference_signals(
        pool, config, recipe=BuiltinRecipe(arch="mlp", training=TrainingConfig(epochs=2, batch_size=32)), cache=cache
    )
    assert not other.cached  # a different recipe is a different key


def test_reference_models_are_cached_one_by_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A run of 4 models reuses the 2 of an earlier run (same first rows and seeds) and trains only 2; the 4 are
    those a fresh run of 4 trains."""
    splits = Splits("blobs", 0, _blobs(80, 1), _blobs(40, 2), _blobs(80, 3))
    recipe = BuiltinRecipe(arch="mlp", training=TrainingConfig(epochs=1, batch_size=32))
    pool = build_pool(
        splits, members=40, nonmembers=40, rng=np.random.default_rng(0), reference=ReferenceConfig(models=4),
        target_train_size=60,
    )  # fmt: skip
    cache = SignalCache(tmp_path / "cache")
    trained: list[int] = []
    two = reference_signals(pool, ReferenceConfig(models=2, workers=1), recipe=recipe, cache=cache)
    four = train_then_count(pool, recipe, cache, trained)
    assert trained == [2, 3] and not four.cached
    np.testing.assert_array_equal(four.signals.logits[:2], two.signals.logits)
    fresh = reference_signals(pool, ReferenceConfig(models=4, workers=1), recipe=recipe, cache=None)
    np.testing.assert_array_equal(four.signals.logits, fresh.signals.logits)
    again: list[int] = []
    assert train_then_count(pool, recipe, cache, again).cached and again == []


def train_then_count(pool, recipe, cache, trained):  # type: ignore[no-untyped-def]
    """``reference_signals`` with 4 models, recording in ``trained`` which models it trained."""
    from modelsec.audits import membership_pool

    original = membership_pool.train_reference_models

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        on_model = kwargs["on_model"]
        kwargs["on_model"] = lambda k, logits, seconds: (trained.append(k), on_model(k, logits, seconds))
        return original(*args, **kwargs)

    membership_pool.train_reference_models = counting
    try:
        return reference_signals(pool, ReferenceConfig(models=4, workers=1), recipe=recipe, cache=cache)
    finally:
        membership_pool.train_reference_models = original
