"""Reference (shadow) models: trained by modelsec on data the attacker has, with a membership matrix.

The strongest membership attacks (LiRA, Carlini et al. 2022; RMIA, Zarifzadeh et al. 2024; the shadow-model attack
of Shokri et al. 2017) learn how a record's signal behaves when a model of the same kind was or was not trained on
it. modelsec trains ``models`` such reference models on a pool of records with a membership matrix
``inclusion[k, i]``: every eligible record is in exactly half of the models (one model: each record in it with
probability 1/2), as in Carlini et al.'s experiments, so that every record has IN and OUT models; the models come
in complementary pairs, so that the first 2, 4, ... models are balanced too.

- **online**: the pool's eligible records include the candidate members and non-members being audited, so online
  attacks can compare each candidate's IN and OUT distributions;
- **offline**: only population records are eligible; the candidates are OUT of every reference model (the attacker
  never trains on the records it tests), which is cheaper to reuse and enough for offline LiRA and RMIA.

How a reference model is trained is a :class:`~modelsec.models.reference_recipe.ReferenceRecipe` (the extension
point; its module lists the recipes). :class:`BuiltinRecipe`, here, trains a built-in architecture with a
:class:`TrainingConfig`: the target's architecture when it is a built-in one (else the built-in architecture for the
input shape) and the target's recorded training recipe when its file carries one. A model loaded by an adapter may
bring its own recipe (a scikit-learn estimator: clones of it, refitted). Models train as tasks of an executor
(:mod:`modelsec.core.executors`: local processes or Ray), one torch thread each, and only their logits on the pool
are kept (:class:`ReferenceSignals`), so attacks never need the models again. Every random choice is seeded: the
same seed gives the same matrix and the same models.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from modelsec.attacks.membership.signals import ReferenceSignals
from modelsec.core.errors import ConfigError
from modelsec.core.executors import Executor, ExecutorConfig, LocalExecutor
from modelsec.core.progress import NullProgress, Progress
from modelsec.core.seeding import spawned_seeds
from modelsec.data.dataset import Dataset
from modelsec.defenses.training import TrainingConfig
from modelsec.models.base import Classifier
from modelsec.models.reference_recipe import ReferenceRecipe


@dataclass(frozen=True, kw_only=True)
class ReferenceConfig:
    """How to train reference models.

    Args:
        models: how many (online attacks need at least 2, so that every record has IN and OUT models).
        online: train on the candidate records too (each in half of the models); else only on population records.
        arch: a built-in architecture; None = the target's when it is built-in, else the default for the input.
        training: the training recipe; None = the target's recorded one, else :class:`TrainingConfig` defaults.
        train_size: records each model trains on; None = the target's training-set size when known, capped by the
            pool (each model trains on half of the eligible records, so the pool holds twice this many).
        workers: training processes; None = min(models, CPU cores). 1 trains in this process.
        seed: seeds the membership matrix and each model's initialisation and batch order.
    """

    models: int = 4
    online: bool = True
    arch: str | None = None
    training: TrainingConfig | None = None
    train_size: int | None = None
    workers: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.models < 1:
            raise ConfigError(f"reference models must be >= 1, got {self.models}")
        if self.online and self.models < 2:
            raise ConfigError(
                "online reference models need at least 2 models (each record IN half of them); "
                "use 2 or more, or offline reference models"
            )
        if self.train_size is not None and self.train_size < 1:
            raise ConfigError(f"reference train_size must be >= 1, got {self.train_size}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"reference workers must be >= 1, got {self.workers}")

    def resolved_workers(self) -> int:
        return self.workers or max(1, min(self.models, os.cpu_count() or 1))


def membership_matrix(models: int, eligible: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(models, n)`` bool, built from complementary pairs: for each pair of models (0 and 1, 2 and 3, ...) a fair
    coin per record decides which of the two trains on it, so every eligible record is IN exactly half of any
    first ``2j`` models (the first 2, 4, 8 models of a larger set are themselves balanced, which lets a study
    compare numbers of reference models without retraining). A last, unpaired model takes each record with
    probability 1/2. Records not eligible are OUT of every model.

    >>> m = membership_matrix(4, np.array([True, True, True, False]), np.random.default_rng(0))
    >>> m.sum(axis=0).tolist(), m[:2].sum(axis=0).tolist()
    ([2, 2, 2, 0], [1, 1, 1, 0])
    """
    eligible = np.asarray(eligible, dtype=bool)
    coins = rng.random(((models + 1) // 2, eligible.size)) < 0.5
    rows = []
    for j in range(models):
        pair = coins[j // 2]
        rows.append(pair if j % 2 == 0 else ~pair)
    return np.stack(rows) & eligible[None, :]


def training_record(training: TrainingConfig) -> dict[str, Any]:
    """The training settings a report shows beside a recipe: all but the seed, which each model draws."""
    return {k: v for k, v in dataclasses.asdict(training).items() if k != "seed"}


@dataclass(frozen=True, kw_only=True)
class BuiltinRecipe(ReferenceRecipe):
    """A built-in architecture (:mod:`modelsec.models.zoo`) trained from a seeded initialisation with modelsec's
    training loop and ``training`` (its ``seed`` replaced by each reference model's).

    Args:
        arch: the built-in architecture's name.
        training: the training settings.
    """

    arch: str
    training: TrainingConfig

    def describe(self) -> dict[str, Any]:
        return {"arch": self.arch, "training": dataclasses.asdict(self.training)}

    def summary(self) -> dict[str, Any]:
        return {"arch": self.arch, "epochs": self.training.epochs}

    def record(self) -> dict[str, Any]:
        return {**super().record(), **training_record(self.training)}

    def train_logits(
        self,
        x_in: np.ndarray,
        y_in: np.ndarray,
        x_pool: np.ndarray,
        *,
        num_classes: int,
        bounds: tuple[float, float],
        seed: int,
    ) -> np.ndarray:
        from modelsec.core.seeding import seeded
        from modelsec.defenses.training import train_classifier
        from modelsec.models.zoo import build_architecture

        input_shape = tuple(int(s) for s in x_pool.shape[1:])
        with seeded(seed):
            module = build_architecture(self.arch, input_shape, num_classes)
        train = Dataset(name="reference", x=x_in, y=y_in, num_classes=num_classes, bounds=bounds)
        train_classifier(module, train, config=replace(self.training, seed=seed))
        classifier = Classifier(module, input_shape=input_shape, num_classes=num_classes, bounds=bounds)
        return classifier.predict_logits(x_pool).numpy().astype(np.float32)


@dataclass(frozen=True)
class ReferenceTraining:
    """What training the reference models produced and cost."""

    signals: ReferenceSignals
    recipe: ReferenceRecipe
    seconds: list[float] = field(default_factory=list)  # per model, in its process
    wall_seconds: float = 0.0
    workers: int = 1
    executor: str = "local"
    cached: bool = False  # every model came from the cache

    def compute(self) -> dict[str, Any]:
        """A summary for reports: models, the recipe (:meth:`ReferenceRecipe.summary`; the whole recipe, and
        whether it was guessed, is :meth:`ReferenceRecipe.record`), their total training seconds, the wall time,
        the processes."""
        return {
            "reference_models": self.signals.num_models,
            **self.recipe.summary(),
            "train_size": int(self.signals.inclusion.sum(axis=1).mean()) if self.signals.num_models else 0,
            "training_seconds": round(float(sum(self.seconds)), 2),
            "wall_seconds": round(self.wall_seconds, 2),
            "workers": self.workers,
            "executor": self.executor,
            "from_cache": self.cached,
        }


# -- training, on an executor --------------------------------------------------------------------------------------


def train_one_reference_model(
    shared: dict[str, Any], recipe: ReferenceRecipe, members: np.ndarray, seed: int
) -> tuple[np.ndarray, float]:
    """A task (:mod:`modelsec.core.executors`): train one reference model on the pool rows ``members`` with one
    torch thread and return its logits on the whole pool and its training seconds. ``shared``: the pool's ``x``,
    ``y``, ``num_classes`` and ``bounds``."""
    start = time.perf_counter()
    x, y, k, bounds = shared["x"], shared["y"], shared["num_classes"], shared["bounds"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a worker process, so that a model is the same wherever it trains
    try:
        logits = recipe.train_logits(x[members], y[members], x, num_classes=k, bounds=bounds, seed=seed)
    finally:
        torch.set_num_threads(threads)
    if logits.shape != (len(x), k):
        raise ValueError(f"{type(recipe).__name__} returned logits of shape {logits.shape}, not {(len(x), k)}")
    return np.asarray(logits, dtype=np.float32), time.perf_counter() - start


def train_reference_models(
    pool: Dataset,
    inclusion: np.ndarray,
    *,
    recipe: ReferenceRecipe,
    seed: int,
    workers: int = 1,
    executor: Executor | None = None,
    done: Mapping[int, tuple[np.ndarray, float]] | None = None,
    on_model: Callable[[int, np.ndarray, float], None] | None = None,
    progress: Progress | None = None,
) -> ReferenceTraining:
    """Train one model per row of ``inclusion`` on its IN records of ``pool`` with ``recipe`` and collect every
    model's logits on the whole pool. Model ``k`` is seeded with ``spawned_seeds(seed, models)[k]``, so it is the
    same model whichever executor trains it, in whichever process (one torch thread each).

    Args:
        executor: where the models train (:mod:`modelsec.core.executors`); default: ``workers`` local processes
            (1: this process).
        done: models already trained (``k -> (logits, seconds)``, e.g. from the cache): not trained again.
        on_model: called in this process with ``(k, logits, seconds)`` as each model finishes (e.g. to cache it,
            so that an interrupted run loses no finished model).
    """
    progress = progress or NullProgress()
    executor = executor or LocalExecutor(ExecutorConfig(workers=max(1, workers)))
    inclusion = np.asarray(inclusion, dtype=bool)
    models = inclusion.shape[0]
    if inclusion.shape != (models, len(pool)):
        raise ValueError(f"inclusion {inclusion.shape} does not match the pool of {len(pool)} records")
    empty = [k for k in range(models) if not inclusion[k].any()]
    if empty:
        raise ConfigError(f"reference model(s) {empty} would train on no record; the pool is too small")
    seeds = spawned_seeds(seed, models)
    results: dict[int, tuple[np.ndarray, float]] = dict(done or {})
    todo = [k for k in range(models) if k not in results]
    start = time.perf_counter()

    def finished(i: int, result: tuple[np.ndarray, float]) -> None:
        results[todo[i]] = result
        if on_model is not None:
            on_model(todo[i], *result)

    if todo:
        executor.map(
            train_one_reference_model,
            [(recipe, np.flatnonzero(inclusion[k]), seeds[k]) for k in todo],
            shared={"x": pool.x, "y": pool.y, "num_classes": pool.num_classes, "bounds": pool.bounds},
            description=f"reference models ({len(todo)} to train"
            + (f", {models - len(todo)} cached)" if len(todo) < models else ")"),
            progress=progress,
            on_result=finished,
        )
    stacked = np.stack([results[k][0] for k in range(models)])
    signals = ReferenceSignals(logits=stacked, inclusion=inclusion, labels=np.asarray(pool.y, dtype=np.int64))
    return ReferenceTraining(
        signals=signals,
        recipe=recipe,
        seconds=[results[k][1] for k in range(models)],
        wall_seconds=time.perf_counter() - start,
        workers=executor.parallel(len(todo)) if todo else 0,
        executor=executor.name,
        cached=not todo,
    )
