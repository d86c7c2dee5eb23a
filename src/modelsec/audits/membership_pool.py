"""The records a membership audit scores, and the reference models' signals on them.

The pool is ``[candidate members | candidate non-members | population records]``. The candidates are what the
audit judges (members are the positive class); population records are data the attacker may use, here to train
reference models (:mod:`modelsec.audits.reference_models`). Online reference models may train on any record of
the pool, offline ones only on population records. The audit's attacks then score the whole pool and are judged on
the candidates.

Reference signals are cached by content (the pool's records and labels, the membership matrix, the reference
models' recipe as it describes itself), so a re-run with the same data and settings trains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelsec.attacks.membership.signals import ReferenceSignals
from modelsec.audits.reference_models import (
    ReferenceConfig,
    ReferenceTraining,
    membership_matrix,
    train_reference_models,
)
from modelsec.core.errors import ConfigError
from modelsec.core.progress import Progress
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
    progress: Progress | None = None,
) -> ReferenceTraining:
    """Train (or fetch from ``cache``) the reference models of ``config`` on ``pool``, each with ``recipe``."""
    rng = np.random.default_rng(config.seed)
    inclusion = membership_matrix(config.models, pool.eligible, rng)
    parts = {
        "kind": "reference-logits",
        "pool": pool.records.sha256(),
        "inclusion": _digest(inclusion),
        "seed": config.seed,
    }
    described = recipe.describe()
    if parts.keys() & described.keys():
        raise ValueError(f"a recipe's description may not use the keys {sorted(parts)}")
    key = cache_key({**parts, **described})  # a built-in recipe's: {"arch", "training"}, as before recipes
    if cache is not None:
        hit = cache.load(key)
        if hit is not None and hit.get("logits") is not None and hit["logits"].shape[:2] == inclusion.shape:
            signals = ReferenceSignals(hit["logits"], inclusion, np.asarray(pool.records.y, dtype=np.int64))
            seconds = [float(s) for s in hit.get("seconds", np.zeros(config.models))]
            return ReferenceTraining(signals, recipe, seconds, 0.0, 0, cached=True)
    trained = train_reference_models(
        pool.records,
        inclusion,
        recipe=recipe,
        seed=config.seed,
        workers=config.resolved_workers(),
        progress=progress,
    )
    if cache is not None:
        cache.save(key, {"logits": trained.signals.logits, "seconds": np.asarray(trained.seconds)})
    return trained


def _digest(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(
        np.packbits(np.ascontiguousarray(a, dtype=bool)).tobytes() + str(a.shape).encode()
    ).hexdigest()
