"""The evasion audit in blocks of records, on the audit's executor: the same numbers in this process, in local worker
processes or on Ray, whatever the number of workers and however many blocks each one takes.

The determinism unit is a **block**: the attacked records ``[k * SHARD_RECORDS, (k + 1) * SHARD_RECORDS)`` (the
records were drawn by the audit before). Each block runs the whole chain of
:func:`~modelsec.audits.robustness.evaluate_robustness` (every attack at every epsilon, the minimum-norm pass) on its
own records with its own random streams, and :func:`~modelsec.audits.robustness.concatenate_runs` merges the blocks
in record order (per-sample arrays concatenated, every rate and interval recomputed from the merged flags, seconds
summed; the queries a block made are added to the classifier's count here). The streams of a block:

- block 0 draws from the audit's own ``torch.Generator`` (and, for a model that draws its own noise, from torch's
  global generator) exactly as an audit without blocks did, and both are left where block 0 left them, wherever it
  ran: an audit of at most one block computes what it did before blocks existed, and the sanity checks that follow
  draw the same numbers in every executor;
- block ``k > 0`` draws from generators seeded with ``derived_seed(seed, "robustness-block", k)`` (and ``..., k,
  "global"`` for torch's global generator).

A block's result is so a function of its records, the model and the seed (and the audit's number of records,
which sizes an attack run as a probe: :func:`~modelsec.audits.robustness.probe_size`): the same wherever and beside
whichever other blocks it runs.

Where the blocks run (:func:`plan_shards`): one block, or the default executor (``executor="local"`` with one
worker or ``workers`` unset), runs in this process, one block after another, each inside the checkpoint's frames as
before (resumable inside an attack). ``workers > 1`` runs blocks in forked local processes, which inherit the
classifier; ``executor="ray"`` runs them as Ray tasks, the model sent as safetensors bytes and its model card
(:class:`~modelsec.models.transport.ModelPayload`). A model that cannot travel that way (Keras, ONNX, scikit-learn,
an endpoint, a Python module) runs its blocks in this process with the same numbers, and the result's model notes
say so. In parallel, the checkpoint keeps every finished block (it is written as each one finishes), and a resumed
audit attacks only the others.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from modelsec.attacks.base import EvasionAttack
from modelsec.attacks.evasion import EVASION_ATTACKS
from modelsec.audits.robustness import RobustnessRun, concatenate_runs, evaluate_robustness
from modelsec.core.executors import Executor, ExecutorConfig, make_executor
from modelsec.core.progress import NullProgress, Progress
from modelsec.core.resume import resumable
from modelsec.core.seeding import derived_generator
from modelsec.models.base import Classifier
from modelsec.models.card import ModelCard
from modelsec.models.formats import ModelFormat
from modelsec.models.transport import ModelPayload, NotTransportable
from modelsec.results.audit import ModelInfo

SHARD_RECORDS = 512
"""Attacked records a block (the unit of work and of randomness). Changing it changes the numbers of audits of more
records than the old or new value. 512: an audit of the data sets' usual test samples (digits' 449 non-members, the
tests' few hundred records) is one block, the default 1000 records two, and a block is several CPU batches (128) of
an attack."""

PROBE_RECORDS = 16
"""Records on which a model sent to Ray, rebuilt from its payload, must give the original's logits bit for bit."""

_BUILTIN_FORMATS = (ModelFormat.SAFETENSORS.value, ModelFormat.TORCH_PICKLE.value)
"""Model files whose module is a built-in architecture with the file's weights (the ones that can travel)."""

Block = tuple[int, int]
RandomState = tuple[torch.Tensor, torch.Tensor]  # the states of a block's generator and of torch's global generator


def record_blocks(n: int) -> list[Block]:
    """The blocks ``(start, stop)`` of ``n`` records (one, possibly empty, when ``n`` is 0)."""
    return [(a, min(a + SHARD_RECORDS, n)) for a in range(0, n, SHARD_RECORDS)] or [(0, 0)]


def block_random_state(seed: int, k: int) -> RandomState:
    """The initial states of block ``k``'s generator and of torch's global generator (``k > 0``; block 0 draws
    from the audit's own)."""
    if k == 0:
        raise ValueError("block 0 draws from the audit's own generators")
    gen = derived_generator(seed, "robustness-block", k)
    global_gen = derived_generator(seed, "robustness-block", k, "global")
    return gen.get_state(), global_gen.get_state()


@dataclass(frozen=True)
class ShardPlan:
    """Where an audit's blocks run: ``executor`` (``None``: in this process, one after another) and, for Ray, the
    model as a ``payload``; ``note``: why blocks that could have run on Ray ran here."""

    executor: Executor | None = None
    payload: ModelPayload | None = None
    note: str | None = None


def plan_shards(
    classifier: Classifier,
    card: ModelCard,
    info: ModelInfo,
    config: ExecutorConfig,
    *,
    records: int,
    probe: torch.Tensor | None = None,
) -> ShardPlan:
    """Where the blocks of ``records`` attacked records run (see the module's docstring). For Ray, the classifier
    must travel as a :class:`~modelsec.models.transport.ModelPayload` (a model file of a built-in architecture,
    whose rebuilt logits on ``probe`` equal the original's); otherwise the plan runs the blocks here, with a note."""
    if len(record_blocks(records)) == 1:
        return ShardPlan()
    if config.executor == "local":
        return ShardPlan() if (config.workers or 1) == 1 else ShardPlan(executor=make_executor(config))
    arch = info.arch if info.format in _BUILTIN_FORMATS else None  # other models are not a built-in's module
    try:
        payload = ModelPayload.from_classifier(classifier, replace(card, arch=arch), probe=probe)
    except NotTransportable as e:
        note = (
            f"the robustness blocks ran in this process, not on Ray workers: the model cannot travel as weights and "
            f"a model card ({e}); the numbers are the same"
        )
        return ShardPlan(note=note)
    return ShardPlan(executor=make_executor(config), payload=payload)


def evaluate_in_blocks(
    classifier: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attacks: list[EvasionAttack],
    eps: list[float],
    norm: str = "linf",
    generator: torch.Generator,
    seed: int,
    chain: bool = True,
    plan: ShardPlan | None = None,
    progress: Progress | None = None,
) -> RobustnessRun:
    """:func:`~modelsec.audits.robustness.evaluate_robustness` on ``(x, y)`` block by block (see the module's
    docstring), where ``plan`` says (default: in this process). ``generator`` is the audit's, seeded with
    ``seed``; it is left where block 0 left it. One block: exactly ``evaluate_robustness``."""
    progress = progress or NullProgress()
    blocks = record_blocks(x.shape[0])
    if len(blocks) == 1:
        return evaluate_robustness(
            classifier, x, y, attacks=attacks, eps=eps, norm=norm, generator=generator, progress=progress, chain=chain
        )
    plan = plan or ShardPlan()
    if plan.note:
        progress.note(plan.note)

    def run_here(k: int, start: RandomState) -> dict[str, Any]:
        """Block ``k`` in this process, inside the checkpoint's frames (resumable inside its attacks)."""
        state = start if k == 0 else block_random_state(seed, k)
        generator.set_state(state[0])
        torch.random.set_rng_state(state[1])
        a, b = blocks[k]
        run = evaluate_robustness(
            classifier, x[a:b], y[a:b], attacks=attacks, eps=eps, norm=norm, generator=generator, progress=progress,
            chain=chain, records=x.shape[0],
        )  # fmt: skip
        done = {"run": run.state_dict(), "generator": generator.get_state(), "global": torch.random.get_rng_state()}
        generator.set_state(start[0])  # as at every save point of this frame: block 0's start
        torch.random.set_rng_state(start[1])
        return done

    with resumable("robustness.blocks") as frame:
        if frame.restored is None:
            done: dict[int, dict[str, Any]] = {}
            start: RandomState = (generator.get_state(), torch.random.get_rng_state())
            here: int | None = None
        else:
            saved = frame.restored
            done = {int(k): d for k, d in saved["done"]}
            start = (saved["start"][0], saved["start"][1])
            here = saved["here"]  # the block this process was attacking (its frames may follow in the checkpoint)
        frame.capture(
            lambda: {"done": [[k, d] for k, d in sorted(done.items())], "start": list(start), "here": here},
            where=lambda p: f"{len(done)}/{len(blocks)} blocks of records done",
        )
        if plan.executor is None:
            for _ in frame.steps(0, len(blocks), force=True):
                here = min(set(range(len(blocks))) - done.keys())
                result = run_here(here, start)
                done[here], here = result, None
        else:
            points = frame.steps(0, len(blocks) + 1, force=True)  # a save point now and as each block finishes
            next(points)
            if here is not None and here not in done:  # a checkpoint of a run in this process: finish its block
                done[here] = run_here(here, start)
                here = None
                next(points)
            _run_on_executor(plan, classifier, x, y, attacks, eps, norm, chain, blocks, seed, start, done, points,
                             progress)  # fmt: skip
    first = done[0]
    generator.set_state(first["generator"])
    torch.random.set_rng_state(first["global"])
    return concatenate_runs([RobustnessRun.from_state(done[k]["run"]) for k in range(len(blocks))], norm)


def _run_on_executor(
    plan: ShardPlan,
    classifier: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: list[EvasionAttack],
    eps: list[float],
    norm: str,
    chain: bool,
    blocks: list[Block],
    seed: int,
    start: RandomState,
    done: dict[int, dict[str, Any]],
    points: Iterator[int],
    progress: Progress,
) -> None:
    """The blocks not ``done`` as tasks of ``plan.executor``; each finished one goes into ``done``, its queries
    onto the classifier's count, then a save point (``next(points)``) writes the checkpoint."""
    assert plan.executor is not None
    todo = [k for k in range(len(blocks)) if k not in done]
    if not todo:
        return
    shared: dict[str, Any] = {
        "x": x.numpy(),
        "y": y.numpy(),
        "attacks": [(type(a).name, a.params()) for a in attacks],
        "eps": [float(e) for e in eps],
        "norm": norm,
        "chain": chain,
    }
    if plan.payload is not None:
        shared["model"] = plan.payload.data  # bytes: safetensors and JSON, never a pickled module
    else:
        shared["classifier"] = classifier  # local workers fork: they inherit it
    items = [(k, *blocks[k], *(start if k == 0 else block_random_state(seed, k))) for k in todo]

    def finished(i: int, result: dict[str, Any]) -> None:
        classifier.queries += int(result.pop("queries"))
        done[todo[i]] = result
        next(points)

    plan.executor.map(
        attack_block,
        items,
        shared=shared,
        description=f"robustness: {len(todo)} of {len(blocks)} blocks of records",
        progress=progress,
        weights=[blocks[k][1] - blocks[k][0] for k in todo],
        on_result=finished,
    )


def attack_block(
    shared: dict[str, Any],
    k: int,
    start: int,
    stop: int,
    generator_state: torch.Tensor,
    global_state: torch.Tensor,
) -> dict[str, Any]:
    """A task (:mod:`modelsec.core.executors`): the robustness chain on records ``[start, stop)`` (block ``k``)
    from the given generator states. ``shared``: the records ``x``, ``y``, the attacks as ``(name, params)``,
    ``eps``, ``norm``, ``chain``, and the classifier (local workers) or the model's payload bytes (Ray). Returns the
    block's run (as a state dict), its final generator states and the queries it made. Runs outside any checkpoint
    (a forked worker must not write the parent's)."""
    classifier = shared["classifier"] if "classifier" in shared else ModelPayload(shared["model"]).classifier()
    attacks = [EVASION_ATTACKS.get(name)(**params) for name, params in shared["attacks"]]
    x = torch.from_numpy(np.array(shared["x"][start:stop]))  # copies: Ray's arrays are read-only
    y = torch.from_numpy(np.array(shared["y"][start:stop]))
    gen = torch.Generator()
    gen.set_state(generator_state)
    before = classifier.queries
    with torch.random.fork_rng(devices=[]):
        torch.random.set_rng_state(global_state)
        settings = {"eps": shared["eps"], "norm": shared["norm"], "chain": shared["chain"], "records": len(shared["y"])}
        # a fresh context: no checkpoint is active there (a forked worker inherits its parent's)
        context = contextvars.Context()
        run = context.run(evaluate_robustness, classifier, x, y, attacks=attacks, generator=gen, **settings)
        global_after = torch.random.get_rng_state()
    queries, classifier.queries = classifier.queries - before, before  # counted where the result arrives
    return {"run": run.state_dict(), "generator": gen.get_state(), "global": global_after, "queries": queries}
