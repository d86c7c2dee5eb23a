"""The records a membership audit scores, and the reference models' signals on them.

The pool is ``[candidate members | candidate non-members | population records]``. The candidates are what the
audit judges (members are the positive class); population records are data the attacker may use, here to train
reference models (:mod:`modelsec.audits.reference_models`). Online reference models may train on any record of
the pool, offline ones only on population records. The audit's attacks then score the whole pool and are judged on
the candidates.

Reference signals are cached by content, one entry per reference model (the pool's records and labels, the model's
row of the membership matrix, its seed, the recipe as it describes itself), so a re-run with the same data and
settings trains nothing, wherever it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modelsec.audits.reference_models import (
    ReferenceConfig,
    ReferenceTraining,
    membership_matrix,
    train_reference_models,
)
from modelsec.core.errors import ConfigError
from modelsec.core.executors import Executor
from modelsec.core.progress import Progress
from modelsec.core.seeding import spawned_seeds
from modelsec.data.dataset import Dataset, Splits
from modelsec.models.reference_recipe import ReferenceRecipe
from modelsec.store.cache import SignalCache, cache_key


@dataclass(frozen=True)
class MembershipPool:
    """The pool of records, where its candidates sit, and which records reference models may train on."""

    records: Dataset
    members: np.ndarray  # pool indices of the candidate members
    nonmembers: np.ndarray  # pool indices of the candidate non-members
    eligible: np.ndarray  # (n,) bool: reference models may train on the record
    member_source: np.ndarray  # for each candidate member, its index in the members split

    @property
    def population(self) -> np.ndarray:
        n_cand = self.members.size + self.nonmembers.size
        return np.arange(n_cand, len(self.records))


def build_pool(
    splits: Splits,
    *,
    members: int,
    nonmembers: int,
    rng: np.random.Generator,
    reference: ReferenceConfig | None = None,
    target_train_size: int | None = None,
    exclude_shared: bool = False,
) -> MembershipPool:
    """Draw ``members`` and ``nonmembers`` candidates (seeded) and, when reference models are asked for, enough
    population records that each reference model trains on about ``train_size`` records (the target's training
    set size by default), as many as the population has. ``exclude_shared`` leaves out every record whose input
    also occurs in another split (by content hash): such a record is both a member and not one."""
    usable = _without_shared_records(splits) if exclude_shared else None
    mem_all = np.arange(len(splits.members)) if usable is None else usable["members"]
    non_all = np.arange(len(splits.nonmembers)) if usable is None else usable["nonmembers"]
    pop_all = np.arange(len(splits.population)) if usable is None else usable["population"]
    m = min(members, mem_all.size)
    k = min(nonmembers, non_all.size)
    if m < 1 or k < 1:
        raise ConfigError("membership inference needs at least one member and one non-member that no other split holds")
    mem_idx = np.sort(rng.choice(mem_all, size=m, replace=False))
    non_idx = np.sort(rng.choice(non_all, size=k, replace=False))
    parts = [splits.members.subset(mem_idx), splits.nonmembers.subset(non_idx)]
    n_pop = 0
    if reference is not None:
        size = reference.train_size or target_train_size or pop_all.size
        wanted = 2 * size - (m + k if reference.online else 0)
        n_pop = int(np.clip(wanted, 0, pop_all.size))
        if n_pop:
            pop_idx = np.sort(rng.choice(pop_all, size=n_pop, replace=False))
            parts.append(splits.population.subset(pop_idx))
    x = np.concatenate([p.x for p in parts])
    y = np.concatenate([p.y for p in parts])
    records = Dataset(
        name=f"{splits.source}/membership-pool",
        x=x,
        y=y,
        num_classes=splits.num_classes,
        bounds=splits.bounds,
        class_names=splits.members.class_names,
    )
    eligible = np.zeros(len(records), dtype=bool)
    if reference is not None:
        eligible[m + k :] = True
        if reference.online:
            eligible[: m + k] = True
        if eligible.sum() < 2:
            raise ConfigError(
                "offline reference models need population records to train on, and this data has none; "
                "use online reference models (--reference-mode online), or give population records "
                "(--population FILE with --members and --nonmembers)"
            )
    return MembershipPool(records, np.arange(m), np.arange(m, m + k), eligible, mem_idx)


def _without_shared_records(splits: Splits) -> dict[str, np.ndarray]:
    """For each split, the indices of its records whose input no other split holds."""
    hashes = {
        "members": splits.members.record_hashes(),
        "nonmembers": splits.nonmembers.record_hashes(),
        "population": splits.population.record_hashes(),
    }
    out = {}
    for name, own in hashes.items():
        others = set().union(*(set(h) for other, h in hashes.items() if other != name))
        out[name] = np.array([i for i, h in enumerate(own) if h not in others], dtype=np.int64)
    return out


def reference_signals(
    pool: MembershipPool,
    config: ReferenceConfig,
    *,
    recipe: ReferenceRecipe,
    cache: SignalCache | None = None,
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> ReferenceTraining:
    """Train (or fetch from ``cache``) the reference models of ``config`` on ``pool``, each with ``recipe``, on
    ``executor`` (default: ``config.workers`` local processes).

    The cache holds one entry per model, keyed by what makes the model: the pool's records, the model's row of the
    membership matrix, its seed and the recipe (:func:`model_cache_key`); not by the executor or the number of
    models. So a run on a Ray cluster and a local run share their models, a run of 16 models reuses those of an
    earlier run of 8 (the first rows of the matrix and the first seeds do not depend on the count), and a run that
    was interrupted trains only the models it had not finished: each is cached as soon as it finishes."""
    rng = np.random.default_rng(config.seed)
    inclusion = membership_matrix(config.models, pool.eligible, rng)
    described = recipe.describe()
    keys = [model_cache_key(pool, inclusion[k], seed, described) for k, seed in enumerate(model_seeds(config))]
    done: dict[int, tuple[np.ndarray, float]] = {}
    for k, key in enumerate(keys):
        hit = None if cache is None else cache.load(key)
        if hit is not None and hit.get("logits") is not None and hit["logits"].shape == (len(pool.records), _k(pool)):
            done[k] = (hit["logits"], float(hit.get("seconds", np.zeros(1))[0]))

    def save(k: int, logits: np.ndarray, seconds: float) -> None:
        if cache is not None:
            cache.save(keys[k], {"logits": logits, "seconds": np.array([seconds])})

    return train_reference_models(
        pool.records,
        inclusion,
        recipe=recipe,
        seed=config.seed,
        workers=config.resolved_workers(),
        executor=executor,
        done=done,
        on_model=save,
        progress=progress,
    )


def model_seeds(config: ReferenceConfig) -> list[int]:
    """Each reference model's seed (:func:`~modelsec.core.seeding.spawned_seeds`: the first ones do not depend on
    the number of models)."""
    return spawned_seeds(config.seed, config.models)


def model_cache_key(pool: MembershipPool, row: np.ndarray, seed: int, described: dict[str, Any]) -> str:
    """The cache key of one reference model: the pool's records, which of them it trains on, its seed and its
    recipe (:meth:`ReferenceRecipe.describe`)."""
    parts = {"kind": "reference-model-logits", "pool": pool.records.sha256(), "members": _digest(row), "seed": seed}
    if parts.keys() & described.keys():
        raise ValueError(f"a recipe's description may not use the keys {sorted(parts)}")
    return cache_key({**parts, **described})


def _k(pool: MembershipPool) -> int:
    return int(pool.records.num_classes)


def _digest(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(
        np.packbits(np.ascontiguousarray(a, dtype=bool)).tobytes() + str(a.shape).encode()
    ).hexdigest()
