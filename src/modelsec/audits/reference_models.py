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
bring its own recipe (a scikit-learn estimator: clones of it, refitted). Models train in parallel processes, one
torch thread each, and only their logits on the pool are kept (:class:`ReferenceSignals`), so attacks never need the
models again. Every random choice is seeded: the same seed gives the same matrix and the same models.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from modelsec.attacks.membership.signals import ReferenceSignals
from modelsec.core.errors import ConfigError
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
    cached: bool = False

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
            "from_cache": self.cached,
        }


# -- training, in this process or in worker processes ------------------------------------------------------------

_POOL: dict[str, Any] = {}


def _init_worker(x: np.ndarray, y: np.ndarray, num_classes: int, bounds: tuple[float, float]) -> None:
    torch.set_num_threads(1)
    _POOL.update(x=x, y=y, num_classes=num_classes, bounds=bounds)


def _train_one(recipe: ReferenceRecipe, members: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """Train one reference model on the pool rows ``members``; return its logits on the whole pool."""
    start = time.perf_counter()
    x, y, k, bounds = _POOL["x"], _POOL["y"], _POOL["num_classes"], _POOL["bounds"]
    logits = recipe.train_logits(x[members], y[members], x, num_classes=k, bounds=bounds, seed=seed)
    if logits.shape != (len(x), k):
        raise ValueError(f"{type(recipe).__name__} returned logits of shape {logits.shape}, not {(len(x), k)}")
    return np.asarray(logits, dtype=np.float32), time.perf_counter() - start


def _preload_training() -> None:
    """Import here what a torch optimizer imports on its first use (``torch._dynamo``: seconds), so that forked
    workers inherit it instead of each importing it again."""
    import torch._dynamo  # noqa: F401


def _start_method() -> str:
    """``fork`` where the platform has it (as PyTorch's DataLoader workers do on Linux: the pool's arrays are
    shared copy-on-write, and a user's script is not re-imported, so it needs no ``__main__`` guard; each worker
    sets one torch thread first), else ``spawn``."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def train_reference_models(
    pool: Dataset,
    inclusion: np.ndarray,
    *,
    recipe: ReferenceRecipe,
    seed: int,
    workers: int = 1,
    progress: Progress | None = None,
) -> ReferenceTraining:
    """Train one model per row of ``inclusion`` on its IN records of ``pool`` with ``recipe`` and collect every
    model's logits on the whole pool. ``workers > 1`` trains in that many processes (one torch thread each), on the
    CPU."""
    progress = progress or NullProgress()
    inclusion = np.asarray(inclusion, dtype=bool)
    models = inclusion.shape[0]
    if inclusion.shape != (models, len(pool)):
        raise ValueError(f"inclusion {inclusion.shape} does not match the pool of {len(pool)} records")
    empty = [k for k in range(models) if not inclusion[k].any()]
    if empty:
        raise ConfigError(f"reference model(s) {empty} would train on no record; the pool is too small")
    seeds = spawned_seeds(seed, models)
    logits: list[np.ndarray | None] = [None] * models
    seconds = [0.0] * models
    start = time.perf_counter()
    workers = max(1, min(workers, models))
    with progress.task(f"reference models ({workers} process{'es' if workers > 1 else ''})", total=models) as advance:
        if workers == 1:
            threads = torch.get_num_threads()
            try:
                _init_worker(pool.x, pool.y, pool.num_classes, pool.bounds)
                for k in range(models):
                    logits[k], seconds[k] = _train_one(recipe, np.flatnonzero(inclusion[k]), seeds[k])
                    advance(1)
            finally:
                torch.set_num_threads(threads)
                _POOL.clear()
        else:
            _preload_training()
            context = multiprocessing.get_context(_start_method())
            initargs = (pool.x, pool.y, pool.num_classes, pool.bounds)
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=initargs) as ex:
                futures = {
                    ex.submit(_train_one, recipe, np.flatnonzero(inclusion[k]), seeds[k]): k for k in range(models)
                }
                for future in as_completed(futures):
                    k = futures[future]
                    logits[k], seconds[k] = future.result()
                    advance(1)
    stacked = np.stack([lg for lg in logits if lg is not None])
    signals = ReferenceSignals(logits=stacked, inclusion=inclusion, labels=np.asarray(pool.y, dtype=np.int64))
    return ReferenceTraining(
        signals=signals,
        recipe=recipe,
        seconds=seconds,
        wall_seconds=time.perf_counter() - start,
        workers=workers,
    )
