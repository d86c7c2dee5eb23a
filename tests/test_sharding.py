"""Sharded evasion audits (issue 14): the attacked records in fixed blocks, each block the whole attack chain with its
own seeded streams, so that the numbers do not depend on where the blocks ran.

- the same ``result.json`` numbers and ``adversarial.npz`` arrays from one process, two local processes and Ray with
  two workers (``modelsec audit --executor ray --workers 2`` through the CLI), for a standard-preset chain (APGD-CE,
  APGD-DLR, APGD-T, DeepFool, Square, FGSM, with few steps) on a digits MLP;
- each block of a sharded run equals the chain run on that block's records alone, from its own generator, and the
  merged rates, intervals and minimum-norm statistics are those of the merged per-sample flags;
- blocks in parallel resume from the blocks they had finished (and from a checkpoint written inside a block in this
  process) to the uninterrupted run;
- a model travels as safetensors bytes and its card, without pickle, and comes back with the same logits; one that
  cannot travel runs its blocks in this process with the same numbers and a note in the result.

``SHARD_RECORDS`` is set to 64 here, so that 150 records make three blocks (64, 64, 22).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from modelsec.attacks.base import EvasionAttack
from modelsec.attacks.evasion import EVASION_ATTACKS
from modelsec.audits import sharding
from modelsec.audits.presets import PRESETS, AttackSpec
from modelsec.audits.robustness import RobustnessRun, evaluate_robustness
from modelsec.audits.runner import AuditConfig, run_audit
from modelsec.audits.sharding import ShardPlan, block_random_state, evaluate_in_blocks, record_blocks
from modelsec.cli.main import main
from modelsec.core.executors import ExecutorConfig, LocalExecutor
from modelsec.core.progress import Progress
from modelsec.core.resume import Resumer, checkpointing, track_generator, track_queries
from modelsec.core.seeding import generator
from modelsec.data import load_splits
from modelsec.defenses.training import TrainingConfig, train_and_save
from modelsec.models.base import Capability, Classifier
from modelsec.models.card import ModelCard
from modelsec.models.loading import load_model, read_card
from modelsec.models.normalization import normalized
from modelsec.models.output import harden_output
from modelsec.models.transport import ModelPayload, NotTransportable
from modelsec.models.zoo import build_architecture
from modelsec.results.audit import eps_key
from modelsec.stats.metrics import rate_with_ci

BLOCK = 64
SAMPLES = 150  # three blocks: 64, 64, 22
# the standard preset's chain, with few steps and queries
FAST_STANDARD = (
    AttackSpec("apgd", {"steps": 10}),
    AttackSpec("apgd", {"steps": 10, "loss": "dlr"}),
    AttackSpec("apgd-t", {"steps": 10, "n_targets": 3}),
    AttackSpec("deepfool"),
    AttackSpec("square", {"max_queries": 100}),
    AttackSpec("fgsm"),
)
VOLATILE = {"run_id", "created_at", "timings", "seconds", "versions", "executor", "workers", "ray_address"}


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "digits.safetensors"
    train_and_save(data="digits", arch="mlp", out=path, config=TrainingConfig(epochs=5, batch_size=64, seed=0))
    return path


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 64 records and a standard preset with few steps (forked workers inherit both; Ray tasks get their
    blocks and attacks from this process)."""
    monkeypatch.setattr(sharding, "SHARD_RECORDS", BLOCK)
    monkeypatch.setitem(PRESETS, "standard", FAST_STANDARD)


def stable(value: Any) -> Any:
    """A result without what may differ between executors and runs: ids, dates, durations, where tasks ran."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def digits_records(model: Path) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    splits = load_splits("digits", seed=0)
    x, y = splits.nonmembers.x[:SAMPLES], splits.nonmembers.y[:SAMPLES]
    return load_model(model).classifier, torch.from_numpy(x), torch.from_numpy(y)


def small_attacks() -> list[EvasionAttack]:
    """APGD, DeepFool (minimum norm) and Square, cheaply."""
    return [
        EVASION_ATTACKS.get("apgd")(steps=5),
        EVASION_ATTACKS.get("deepfool")(),
        EVASION_ATTACKS.get("square")(max_queries=60),
    ]


def run_tensors(run: RobustnessRun) -> dict[str, torch.Tensor]:
    return {
        "x": run.x,
        "pred_clean": run.pred_clean,
        **{f"x_adv {e}": t for e, t in run.x_adv.items()},
        **{f"robust {e}": t for e, t in run.robust.items()},
        **{f"pred_adv {e}": t for e, t in run.pred_adv.items()},
        **{f"per_attack {k}": t for k, t in run.per_attack_robust.items()},
        **{f"broken {k}": t for k, t in run.per_attack_broken.items()},
        **{f"min_distance {k}": t for k, t in run.min_distance.items()},
    }


def assert_same_run(a: RobustnessRun, b: RobustnessRun) -> None:
    assert stable(a.state_dict()["result"]) == stable(b.state_dict()["result"])
    ta, tb = run_tensors(a), run_tensors(b)
    assert ta.keys() == tb.keys()
    for key, t in ta.items():
        assert t.dtype == tb[key].dtype and torch.equal(t, tb[key]), key


class Recorder(Progress):
    """Remembers every progress description and note."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def task(self, description: str, total: int) -> Any:
        self.lines.append(description)
        return super().task(description, total)

    def note(self, message: str) -> None:
        self.lines.append(message)


# -- the same numbers on every executor ----------------------------------------------------------------------------


def test_a_sharded_audit_gives_the_same_numbers_in_one_process_two_processes_and_on_ray(
    digits_model: Path, ray_instance: Any, small_blocks: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["--samples", str(SAMPLES), "--mia-samples", "60", "--eps", "0.05,0.1", "--membership-attacks",
               "loss-threshold", "--seed", "4", "--no-store"]  # fmt: skip
    executors = {"one process": [], "two processes": ["--workers", "2"], "ray": ["--executor", "ray", "--workers", "2"]}
    results, arrays, stderr = {}, {}, {}
    for name, extra in executors.items():
        out = tmp_path / name.replace(" ", "-")
        main(["audit", "--model", str(digits_model), *options, *extra, "--out", str(out)])
        stderr[name] = capsys.readouterr().err
        results[name] = json.loads((out / "result.json").read_text())
        arrays[name] = dict(np.load(out / "adversarial.npz"))
    # the blocks ran where asked: here one after another, then as tasks of two processes, then of Ray
    assert "blocks of records" not in stderr["one process"]
    assert "robustness: 3 of 3 blocks of records (2 processes): done" in stderr["two processes"]
    assert "robustness: 3 of 3 blocks of records (Ray): done" in stderr["ray"]

    want = results["one process"]
    rob = want["robustness"]
    assert rob["n"] == SAMPLES and [e["attack"] for e in rob["results"][:6]] == [
        "apgd", "apgd-dlr", "apgd-t", "deepfool", "square", "fgsm"
    ]  # fmt: skip
    assert 0 < rob["robust_accuracy"]["0.1"] < rob["robust_accuracy"]["0.05"] <= rob["clean_accuracy"]
    assert [m["attack"] for m in rob["min_norm"]] == ["deepfool"] and rob["min_norm"][0]["found"] > 0
    assert want["model"]["notes"] == []
    for name in ("two processes", "ray"):
        assert stable(results[name]) == stable(want), name
        assert arrays[name].keys() == arrays["one process"].keys()
        for key, array in arrays["one process"].items():
            assert array.dtype == arrays[name][key].dtype and np.array_equal(array, arrays[name][key]), (name, key)


def test_a_model_that_cannot_travel_runs_its_blocks_here_with_the_same_numbers(small_blocks: None) -> None:
    """A Python module asked to run on Ray: its blocks run in this process (Ray is never started), with the numbers
    of a local run, a progress note and a note in the result's model notes."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))  # untrained: most samples misclassified
    base = dict(attacks=("apgd", "fgsm"), samples=SAMPLES, mia_samples=40, eps=(0.1,), checks=False,
                membership_attacks=("loss-threshold",), seed=2)  # fmt: skip
    local = run_audit(module, "digits", config=AuditConfig(**base))  # type: ignore[arg-type]
    progress = Recorder()
    on_ray = run_audit(module, "digits", config=AuditConfig(**base, executor="ray"), progress=progress)  # type: ignore[arg-type]
    note = on_ray.result.model.notes[-1]
    assert "ran in this process, not on Ray workers" in note and "records no built-in architecture" in note
    assert note in progress.lines and local.result.model.notes == []
    assert stable(dataclasses.asdict(on_ray.result.robustness)) == stable(dataclasses.asdict(local.result.robustness))
    assert local.robustness_run is not None and on_ray.robustness_run is not None
    assert_same_run(on_ray.robustness_run, local.robustness_run)


# -- blocks --------------------------------------------------------------------------------------------------------


def test_each_block_is_the_chain_on_its_records_alone(digits_model: Path, small_blocks: None) -> None:
    """Block k of a sharded run equals evaluate_robustness on its records alone, from block 0's audit generator or
    block k's own; the audit's generator is left where block 0 left it; the merged numbers are those of the merged
    flags."""
    clf, x, y = digits_records(digits_model)
    eps = [0.05, 0.1]
    gen = generator(7)
    whole = evaluate_in_blocks(clf, x, y, attacks=small_attacks(), eps=eps, generator=gen, seed=7)
    assert record_blocks(SAMPLES) == [(0, 64), (64, 128), (128, 150)]
    for k, (a, b) in enumerate(record_blocks(SAMPLES)):
        own = generator(7)
        if k:
            own.set_state(block_random_state(7, k)[0])
        alone = evaluate_robustness(clf, x[a:b], y[a:b], attacks=small_attacks(), eps=eps, generator=own)
        for key, t in run_tensors(alone).items():
            assert torch.equal(run_tensors(whole)[key][a:b], t), (k, key)
        if k == 0:
            assert torch.equal(gen.get_state(), own.get_state())
    # every number is recomputed from the merged per-sample flags
    result = whole.result
    assert result.n == SAMPLES and all(e.n == SAMPLES for e in result.results)
    correct = whole.pred_clean == whole.y
    assert result.clean_accuracy == rate_with_ci(correct.numpy())[0]
    for e in eps:
        rate, ci = rate_with_ci(whole.robust[e].numpy())
        assert result.robust_accuracy[eps_key(e)] == rate and result.robust_ci[eps_key(e)] == ci
    for entry in result.results:
        rate, ci = rate_with_ci(whole.per_attack_robust[(entry.attack, entry.eps)].numpy())
        assert (entry.robust_accuracy, entry.ci_low, entry.ci_high) == (rate, ci.low, ci.high)
    (stats,) = result.min_norm
    found = whole.min_distance["deepfool"][correct]
    found = found[torch.isfinite(found)].double().numpy()
    assert stats.n == int(correct.sum()) and stats.found == found.size > 0 and stats.median == np.median(found)


def test_one_block_is_the_unsharded_run(digits_model: Path) -> None:
    clf, x, y = digits_records(digits_model)
    assert len(record_blocks(SAMPLES)) == 1  # SHARD_RECORDS as shipped
    gen_a, gen_b = generator(3), generator(3)
    a = evaluate_in_blocks(clf, x, y, attacks=small_attacks(), eps=[0.1], generator=gen_a, seed=3)
    b = evaluate_robustness(clf, x, y, attacks=small_attacks(), eps=[0.1], generator=gen_b)
    assert_same_run(a, b)
    assert torch.equal(gen_a.get_state(), gen_b.get_state())


# -- checkpoints -----------------------------------------------------------------------------------------------------


def tracked(clf: Classifier, gen: torch.Generator) -> dict[str, Any]:
    return {
        "generator": track_generator(gen),
        "global_generator": track_generator(torch.random.default_generator),
        "queries": track_queries(clf),
    }


def test_blocks_in_parallel_resume_from_the_blocks_they_had_finished(digits_model: Path, small_blocks: None) -> None:
    """Two local processes, a checkpoint as each block finishes: resumed from the one with a block done, only the
    other two run, and the run equals the uninterrupted one in this process (arrays, numbers, queries, generator).
    A checkpoint written inside a block in this process resumes there, in this process or in parallel (that block
    here, then the rest)."""
    clf, x, y = digits_records(digits_model)
    eps = [0.05, 0.1]
    parallel = ShardPlan(executor=LocalExecutor(ExecutorConfig(workers=2)))

    def call(gen: torch.Generator, plan: ShardPlan, progress: Progress | None = None) -> RobustnessRun:
        return evaluate_in_blocks(clf, x, y, attacks=small_attacks(), eps=eps, generator=gen, seed=5, plan=plan,
                                  progress=progress)  # fmt: skip

    def saving(plan: ShardPlan, keep: str) -> tuple[RobustnessRun, list[dict[str, Any]], int, torch.Tensor]:
        """The run checkpointing at every save point; the snapshots whose place starts with ``keep``."""
        clf.queries, gen = 0, generator(5)
        saved: list[dict[str, Any]] = []

        def write(payload: dict[str, Any]) -> None:  # as the checkpoint file: tensors and plain values only
            if payload["where"].startswith(keep):
                buf = io.BytesIO()
                torch.save(payload, buf)
                saved.append(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))

        with checkpointing(Resumer(write=write, tracked=tracked(clf, gen), interval=0)):
            run = call(gen, plan)
        return run, saved, clf.queries, gen.get_state()

    def resumed(saved: dict[str, Any], plan: ShardPlan) -> tuple[RobustnessRun, Recorder]:
        clf.queries, gen, progress = 12345, generator(99), Recorder()  # both must be restored
        saved = copy.deepcopy(saved)  # as read from the file again (a run changes the tensors it resumes from)
        with checkpointing(Resumer(write=lambda p: None, saved=saved, tracked=tracked(clf, gen))):
            run = call(gen, plan, progress)
        assert clf.queries == plain_queries and torch.equal(gen.get_state(), plain_state)
        return run, progress

    # in this process (checkpoints change nothing: the uninterrupted run), then in two processes
    second_block_deepfool = "1/3 blocks of records done, robustness done for eps 0.05; deepfool at eps 0.1, batch"
    plain, inside, plain_queries, plain_state = saving(ShardPlan(), second_block_deepfool)
    whole, saved, queries, state = saving(parallel, "")
    assert_same_run(whole, plain)
    assert queries == plain_queries and torch.equal(state, plain_state)
    assert [s["where"] for s in saved] == [f"{k}/3 blocks of records done" for k in range(4)]
    run, progress = resumed(saved[1], parallel)
    assert_same_run(run, plain)
    assert "robustness: 2 of 3 blocks of records (2 processes)" in progress.lines

    assert inside and all(len(s["frames"]) > 2 for s in inside)  # inside DeepFool's loops, in the second block
    assert_same_run(resumed(inside[len(inside) // 2], ShardPlan())[0], plain)
    run, progress = resumed(inside[len(inside) // 2], parallel)
    assert_same_run(run, plain)
    assert "robustness: 1 of 3 blocks of records (this process)" in progress.lines  # the third, after the second here


# -- the model as bytes ----------------------------------------------------------------------------------------------


def test_a_model_travels_as_safetensors_and_its_card_and_comes_back_with_the_same_logits(
    digits_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clf, x, _ = digits_records(digits_model)
    torch.manual_seed(1)
    hardened = Classifier(
        harden_output(build_architecture("mlp", (64,), 10), {"kind": "top-k", "k": 3}),
        input_shape=(64,), num_classes=10, bounds=(0.0, 1.0), capability=Capability.SCORES, batch_size=32, votes=3,
        name="hardened",
    )  # fmt: skip
    hardened = normalized(hardened, [0.2], [0.5])
    payloads = [
        (clf, ModelPayload.from_classifier(clf, read_card(digits_model), probe=x[:16])),
        (hardened, ModelPayload.from_classifier(hardened, ModelCard(arch="mlp"), probe=x[:16])),
    ]

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unpickling")

    monkeypatch.setattr(pickle, "loads", refuse)  # nothing is unpickled on the way back
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    for original, payload in payloads:
        assert isinstance(payload.data, bytes)
        meta = payload.metadata()  # JSON in a safetensors header
        assert meta["card"]["arch"] == "mlp" and meta["card"]["input_shape"] == [64]
        back = payload.classifier()
        assert torch.equal(back.predict_logits(x), original.predict_logits(x))
        assert torch.equal(back.predict(x), original.predict(x))  # with votes: three passes each
        for attribute in ("input_shape", "num_classes", "bounds", "capability", "batch_size", "votes", "name"):
            assert getattr(back, attribute) == getattr(original, attribute), attribute
    assert payloads[1][1].card.output == {"kind": "top-k", "k": 3}
    assert repr(payloads[1][0].preprocess) == repr(payloads[1][1].classifier().preprocess)


def test_a_model_that_is_not_a_builtin_architecture_with_its_weights_does_not_travel() -> None:
    torch.manual_seed(0)
    mlp = build_architecture("mlp", (64,), 10)
    tanh = nn.Sequential(*(nn.Tanh() if isinstance(m, nn.ReLU) else m for m in mlp))  # the same weights' shapes
    cases = {
        "records no built-in architecture": (Classifier(mlp, input_shape=(64,), num_classes=10), ModelCard()),
        "is not the built-in architecture": (
            Classifier(tanh, input_shape=(64,), num_classes=10),
            ModelCard(arch="mlp"),
        ),
        "does not fit it": (Classifier(mlp, input_shape=(64,), num_classes=10), ModelCard(arch="small-cnn")),
        "preprocessing is Python code": (
            Classifier(mlp, input_shape=(64,), num_classes=10, preprocess=lambda t: t.round()),
            ModelCard(arch="mlp"),
        ),
    }
    for reason, (clf, card) in cases.items():
        with pytest.raises(NotTransportable, match=reason):
            ModelPayload.from_classifier(clf, card)
