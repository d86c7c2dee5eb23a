"""Audits that survive a crash: a resumed audit writes the numbers and arrays of an uninterrupted one, bit for bit.

- every resumable loop (each attack's batches, restarts, targets and iterations, the robustness plan) resumed from
  every kind of save point gives the uninterrupted run's arrays, entries, query count and generator state;
- ``modelsec audit`` killed with SIGKILL (by itself right after a chosen checkpoint, or from outside at a polled
  point) or interrupted with SIGINT, then rerun, writes the same ``result.json`` numbers and ``adversarial.npz``;
- a checkpoint of another run (another seed or eps) is refused, ``--no-resume`` starts over, and a truncated one is
  a clear user error;
- ``compare`` reuses the audits it had finished before an interruption.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import modelsec
from modelsec.attacks.base import EvasionAttack, ThreatModel
from modelsec.attacks.evasion import EVASION_ATTACKS
from modelsec.audits.checkpoint import AUDIT_CHECKPOINT_FORMAT, AuditCheckpoint, audit_checkpoint_path
from modelsec.audits.robustness import RobustnessRun, evaluate_robustness
from modelsec.cli.main import main
from modelsec.core.resume import CheckpointMismatch, Resumer, checkpointing, resumable, track_generator, track_queries
from modelsec.core.seeding import generator
from modelsec.data import load_splits
from modelsec.defenses.training import TrainingConfig, train_and_save
from modelsec.models.base import Classifier

# A multi-batch audit (300 test records, 128 a batch) that takes a few seconds: the quick preset (APGD with
# restarts, FGSM) at two budgets, the sanity checks and membership inference.
AUDIT_OPTIONS = ["--preset", "quick", "--samples", "300", "--mia-samples", "300", "--eps", "0.05,0.1", "--no-store"]


class Interrupted(Exception):
    """Stands for a crash right after a checkpoint write, in-process."""


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "digits.safetensors"
    train_and_save(data="digits", arch="mlp", out=path, config=TrainingConfig(epochs=8, batch_size=64, seed=0))
    return path


def audit_argv(model: Path, out: Path, *extra: str, quiet: bool = True) -> list[str]:
    return ["audit", "--model", str(model), *AUDIT_OPTIONS, *(["--quiet"] if quiet else []), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def reference(digits_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted audit (in this process, checkpointing at every save point)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    with pytest.MonkeyPatch.context() as m:
        m.setenv("MODELSEC_CHECKPOINT_INTERVAL", "0")
        main(audit_argv(digits_model, out))
    assert not audit_checkpoint_path(out).exists()
    return out


def numbers(out: Path) -> dict[str, Any]:
    """result.json without what may differ between two runs of the same audit: ids, dates and durations."""
    d = json.loads((out / "result.json").read_text())
    for key in ("run_id", "created_at", "timings"):
        d.pop(key)
    for entry in d["robustness"]["results"] + d["privacy"]["attacks"]:
        entry.pop("seconds", None)
    return dict(d)


def assert_same_audit(out: Path, reference: Path) -> None:
    assert numbers(out) == numbers(reference)
    a, b = np.load(out / "adversarial.npz"), np.load(reference / "adversarial.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    assert not audit_checkpoint_path(out).exists()


def saved_state(out: Path) -> dict[str, Any]:
    saved = torch.load(audit_checkpoint_path(out), map_location="cpu", weights_only=True)
    assert saved["format"] == AUDIT_CHECKPOINT_FORMAT
    return dict(saved["state"])


def start_cli(model: Path, out: Path, quiet: bool = True, **env: str) -> subprocess.Popen[str]:
    """``python -m modelsec audit`` in a subprocess, one thread, a checkpoint at every save point."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MODELSEC_CHECKPOINT_INTERVAL": "0", **env}
    cmd = [sys.executable, "-m", "modelsec", *audit_argv(model, out, quiet=quiet)]
    return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(model: Path, out: Path, quiet: bool = True, **env: str) -> tuple[int, str]:
    """Run it to its end: the exit status (negative: the signal that ended it) and stderr."""
    proc = start_cli(model, out, quiet, **env)
    _, stderr = proc.communicate(timeout=600)
    return proc.returncode, stderr


def wait_for_writes(proc: subprocess.Popen[str], out: Path, writes: int, timeout: float = 300.0) -> None:
    """Poll until the running audit has written ``writes`` checkpoints (the process cannot finish meanwhile: it
    pauses at its last checkpoint before membership inference)."""
    deadline = time.monotonic() + timeout
    path = audit_checkpoint_path(out)
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        if path.exists():
            try:
                if saved_state(out)["writes"] >= writes:
                    return
            except (OSError, RuntimeError, EOFError):  # replaced between exists() and the read: read again
                pass
        time.sleep(0.05)
    raise AssertionError(f"no {writes} checkpoints within {timeout} s")


# -- resuming each loop, in-process --------------------------------------------------------------------------


def digits_problem() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    """A briefly trained digits MLP (some samples fall, others resist), batches of 8, 16 test records."""
    splits = load_splits("digits", seed=0)
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    xs, ys = torch.from_numpy(splits.members.x), torch.from_numpy(splits.members.y)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(xs), ys).backward()
        opt.step()
    clf = Classifier(module, input_shape=(64,), num_classes=10, batch_size=8)
    return clf, torch.from_numpy(splits.nonmembers.x[:16]), torch.from_numpy(splits.nonmembers.y[:16])


def make_attack(name: str) -> EvasionAttack:
    """The attack with small settings, and restarts where it has them (so every loop of it runs)."""
    extra: dict[str, dict[str, Any]] = {
        "pgd": {"restarts": 2, "steps": 5},
        "apgd": {"restarts": 2, "loss": "dlr"},
        "apgd-t": {"restarts": 2},
        "square": {"restarts": 2, "max_queries": 40},
        "hopskipjump": {"iterations": 3},
        "cw-l2": {"steps": 10},
    }
    cls = EVASION_ATTACKS.get(name)
    return cls(**{**cls.test_params, **extra.get(name, {})})


def snapshots_by_kind(
    call: Callable[[], Any], clf: Classifier, gen: torch.Generator
) -> tuple[Any, dict[tuple[str, ...], list[dict[str, Any]]]]:
    """Run ``call`` checkpointing at every save point; its result and the snapshots (serialised and read back as
    the checkpoint file is) grouped by their stack of loops."""
    by_kind: dict[tuple[str, ...], list[dict[str, Any]]] = {}

    def write(payload: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(payload, buf)
        saved = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
        by_kind.setdefault(tuple(f["name"] for f in saved["frames"]), []).append(saved)

    with checkpointing(Resumer(write=write, tracked={"g": track_generator(gen), "q": track_queries(clf)}, interval=0)):
        out = call()
    return out, by_kind


def resumed(
    call: Callable[[torch.Generator], Any], saved: dict[str, Any], clf: Classifier
) -> tuple[Any, torch.Generator]:
    """Run ``call`` resuming from ``saved``, with a differently seeded generator and a wrong query count (both
    must be restored)."""
    clf.queries, gen = 12345, generator(99)
    with checkpointing(Resumer(write=lambda p: None, saved=saved, tracked={"g": track_generator(gen),
                                                                          "q": track_queries(clf)})):  # fmt: skip
        return call(gen), gen


EVASION_FIELDS = ("x_adv", "success", "pred_clean", "pred_adv", "distance", "min_distance")
# The loops of each registered attack that checkpoint inside a batch (a new attack must say which it has).
ATTACK_LOOPS = {
    "fgsm": {"gradient.restarts", "gradient.steps"},
    "bim": {"gradient.restarts", "gradient.steps"},
    "pgd": {"gradient.restarts", "gradient.steps"},
    "apgd": {"apgd.restarts", "apgd.steps"},
    "apgd-t": {"apgd-t.targets", "apgd.restarts", "apgd.steps"},
    "deepfool": {"deepfool.steps"},
    "cw-l2": {"cw.constants", "cw.steps"},
    "square": {"square.restarts", "square.queries"},
    "hopskipjump": {"hopskipjump.iterations"},
}


@pytest.mark.parametrize(
    ("name", "norm"),
    [(n, "l2" if n == "cw-l2" else "linf") for n in EVASION_ATTACKS.names()] + [("square", "l2"), ("apgd", "l2")],
)
def test_every_attack_resumes_exactly_from_each_kind_of_save_point(name: str, norm: str) -> None:
    """From a checkpoint at each kind of save point (between batches, and inside the batch at every loop of the
    attack: restarts, targets, iterations), the attack returns the uninterrupted call's examples, flags and
    distances, with the same queries and leaves the generator in the same state; checkpoints change nothing."""
    clf, x, y = digits_problem()
    attack = make_attack(name)
    threat = ThreatModel(norm, 0.1 if norm == "linf" else 1.0)
    plain_gen = generator(3)
    plain = attack(clf, x, y, threat, generator=plain_gen)

    clf.queries, gen = 0, generator(3)
    whole, by_kind = snapshots_by_kind(lambda: attack(clf, x, y, threat, generator=gen), clf, gen)
    assert whole.queries == plain.queries and clf.queries == plain.queries
    assert torch.equal(gen.get_state(), plain_gen.get_state())
    assert {loop for kind in by_kind for loop in kind} == {"attack.batches"} | ATTACK_LOOPS[name]
    for kind, saved in by_kind.items():
        res, gen = resumed(lambda g: attack(clf, x, y, threat, generator=g), saved[len(saved) // 2], clf)
        for field in EVASION_FIELDS:
            a, b = getattr(res, field), getattr(plain, field)
            assert (a is None and b is None) or torch.equal(a, b), (kind, field)
        assert res.queries == plain.queries and clf.queries == plain.queries, kind
        assert res.cost == plain.cost, kind  # the passes and their floor, as if never interrupted
        assert torch.equal(gen.get_state(), plain_gen.get_state()), kind


@pytest.mark.parametrize("chain", [True, False])
def test_evaluate_robustness_resumes_between_and_inside_attacks(chain: bool) -> None:
    """The robustness plan (every attack at every eps, then the minimum-norm pass) resumed from every step of
    the plan and from inside an attack equals the uninterrupted run: arrays, entries, queries, generator."""
    clf, x, y = digits_problem()
    attacks = [make_attack("pgd"), make_attack("deepfool"), make_attack("fgsm")]
    eps = [0.05, 0.15]
    plain_gen = generator(3)
    plain = evaluate_robustness(clf, x, y, attacks=attacks, eps=eps, generator=plain_gen, chain=chain)
    plain_queries = clf.queries

    clf.queries, gen = 0, generator(3)
    whole, by_kind = snapshots_by_kind(
        lambda: evaluate_robustness(clf, x, y, attacks=attacks, eps=eps, generator=gen, chain=chain), clf, gen
    )
    assert_same_run(run_arrays(whole), run_arrays(plain))
    steps = by_kind[("robustness",)]
    assert [s["where"] for s in steps] == [
        "pgd at eps 0.05",
        "deepfool at eps 0.05",
        "fgsm at eps 0.05",
        "robustness done for eps 0.05; pgd at eps 0.15",
        "robustness done for eps 0.05; deepfool at eps 0.15",
        "robustness done for eps 0.05; fgsm at eps 0.15",
    ] + (["robustness done for eps 0.05, 0.15; deepfool minimum-norm pass"] if chain else [])
    inside = [saved[len(saved) // 2] for kind, saved in by_kind.items() if len(kind) > 1]
    for saved in steps + inside:
        run, gen = resumed(
            lambda g: evaluate_robustness(clf, x, y, attacks=attacks, eps=eps, generator=g, chain=chain), saved, clf
        )
        assert_same_run(run_arrays(run), run_arrays(plain))
        assert clf.queries == plain_queries and torch.equal(gen.get_state(), plain_gen.get_state()), saved["where"]


def run_arrays(run: RobustnessRun) -> dict[str, Any]:
    """Everything a robustness run computed, but the seconds."""
    entries = [{k: v for k, v in vars(e).items() if k != "seconds"} for e in run.result.results]
    tensors = {
        **{f"x_adv {e}": t for e, t in run.x_adv.items()},
        **{f"robust {e}": t for e, t in run.robust.items()},
        **{f"pred_adv {e}": t for e, t in run.pred_adv.items()},
        **{f"per_attack {k}": t for k, t in run.per_attack_robust.items()},
        **{f"broken {k}": t for k, t in run.per_attack_broken.items()},
    }
    min_norm = [dataclasses.replace(s, seconds=None) for s in run.result.min_norm]
    return {"entries": entries, "min_norm": min_norm, "tensors": tensors}


def assert_same_run(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["entries"] == b["entries"] and a["min_norm"] == b["min_norm"]
    assert a["tensors"].keys() == b["tensors"].keys()
    for key, t in a["tensors"].items():
        assert t.dtype == b["tensors"][key].dtype and torch.equal(t, b["tensors"][key]), key


def test_a_checkpoint_of_other_loops_is_refused() -> None:
    def loops(names: list[str]) -> Iterator[None]:
        with resumable(names[0]) as outer:
            for _ in outer.steps(0, 2):
                with resumable(names[1]) as inner:
                    for _ in inner.steps(0, 2):
                        yield

    payloads: list[dict[str, Any]] = []
    with checkpointing(Resumer(write=payloads.append, interval=0)):
        for _ in loops(["a", "b"]):
            pass
    assert [[f["state"]["position"] for f in p["frames"]] for p in payloads] == [
        [0],
        [0, 0],
        [0, 1],
        [1],
        [1, 0],
        [1, 1],
    ]
    assert payloads[2]["where"] == ""
    resumer = Resumer(write=payloads.append, saved=payloads[2])
    with checkpointing(resumer), pytest.raises(CheckpointMismatch, match="resumes 'b' where this run enters 'c'"):
        for _ in loops(["a", "c"]):
            pass


# -- the command line: kills, interrupts, other runs -----------------------------------------------------------


def test_audit_killed_mid_attack_and_between_phases_resumes_to_the_same_numbers(
    digits_model: Path, reference: Path, tmp_path: Path
) -> None:
    """SIGKILL right after a checkpoint inside an APGD run (its 5th step), then, resumed, right after the one
    between the sanity checks and membership inference; the third run (in this process) finishes with the
    reference's numbers."""
    out = tmp_path / "out"
    status, stderr = run_cli(digits_model, out, MODELSEC_TEST_KILL_AT="step 5/")
    assert status == -signal.SIGKILL, stderr
    state = saved_state(out)
    assert [f["name"] for f in state["frames"]] == ["audit", "robustness", "attack.batches", "apgd.restarts",
                                                    "apgd.steps"]  # fmt: skip
    assert state["where"] == "apgd-margin at eps 0.05, batch 1/3, restart 1/10, step 5/12"
    assert not (out / "result.json").exists()

    status, stderr = run_cli(digits_model, out, quiet=False, MODELSEC_TEST_KILL_AT="membership inference next")
    assert status == -signal.SIGKILL, stderr
    restored = "apgd-margin at eps 0.05, batch 1/3, restart 1/10, step 5/12"
    assert f"resuming from {audit_checkpoint_path(out)}: {restored}\n" in stderr
    state = saved_state(out)
    assert [f["name"] for f in state["frames"]] == ["audit"]
    assert state["where"] == "robustness and sanity checks done; membership inference next"

    main(audit_argv(digits_model, out))  # resumed in this process
    assert_same_audit(out, reference)


def test_audit_killed_from_outside_resumes_to_the_same_numbers(
    digits_model: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = start_cli(digits_model, out, MODELSEC_TEST_PAUSE_AT="membership inference next")
    try:
        wait_for_writes(proc, out, writes=20)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.communicate()
    assert saved_state(out)["writes"] >= 20 and not (out / "result.json").exists()
    main(audit_argv(digits_model, out))
    assert_same_audit(out, reference)


def test_interrupted_audit_exits_130_and_resumes_to_the_same_numbers(
    digits_model: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = start_cli(digits_model, out, MODELSEC_TEST_PAUSE_AT="membership inference next")
    try:
        wait_for_writes(proc, out, writes=10)
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"modelsec: interrupted: the audit can be resumed from {audit_checkpoint_path(out)} (" in stderr
    assert stderr.rstrip().endswith("by rerunning the same command")
    state = saved_state(out)  # still a valid checkpoint of this run
    assert state["frames"][0]["name"] == "audit" and state["writes"] >= 10
    main(audit_argv(digits_model, out))  # (at the default interval: it changes no number)
    assert_same_audit(out, reference)


def interrupt_after(monkeypatch: pytest.MonkeyPatch, writes: int) -> None:
    """Make the audit's checkpoint writer raise right after its ``writes``-th write: a crash there."""
    write = AuditCheckpoint._write

    def write_then_stop(self: AuditCheckpoint, payload: dict[str, Any]) -> None:
        write(self, payload)
        if self.writes == writes:
            raise Interrupted

    monkeypatch.setattr(AuditCheckpoint, "_write", write_then_stop)


def test_another_run_never_reuses_the_checkpoint(
    digits_model: Path,
    reference: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another seed or eps is refused with what differs (exit 2); --no-resume starts over and finishes; a
    truncated checkpoint is a clear error, never a traceback."""
    out = tmp_path / "out"
    monkeypatch.setenv("MODELSEC_CHECKPOINT_INTERVAL", "0")
    with monkeypatch.context() as m:  # the Python API, with the options of the command line: the same run
        interrupt_after(m, 30)
        with pytest.raises(Interrupted):
            modelsec.audit(digits_model, eps=(0.05, 0.1), samples=300, mia_samples=300, preset="quick", out=out)
    checkpoint = audit_checkpoint_path(out)
    assert saved_state(out)["writes"] == 30
    blob = checkpoint.read_bytes()

    for extra, differs in ((["--seed", "1"], "config.seed"), (["--eps", "0.05"], "config.eps")):
        with pytest.raises(SystemExit) as exit_info:
            main(audit_argv(digits_model, out, *extra))
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"is the checkpoint of a different run (it differs in {differs})" in err
        assert "--no-resume" in err and "Traceback" not in err
    assert checkpoint.read_bytes() == blob  # refused, untouched

    checkpoint.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(SystemExit) as exit_info:
        main(audit_argv(digits_model, out))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"modelsec: error: cannot read the checkpoint {checkpoint}" in err and "Traceback" not in err

    main(audit_argv(digits_model, out, "--no-resume"))
    assert_same_audit(out, reference)


def test_compare_reuses_the_audits_it_had_finished(
    digits_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupted comparison keeps each finished audit (its checkpoint holds the result) and resumes the one
    under way; the rerun's comparison equals an uninterrupted one's, and no checkpoint is left."""
    other = tmp_path / "other.safetensors"
    train_and_save(data="digits", arch="mlp", out=other, config=TrainingConfig(epochs=3, batch_size=64, seed=1))
    options: dict[str, Any] = {"eps": (0.1,), "samples": 60, "mia_samples": 100, "preset": "quick"}
    whole = modelsec.compare(digits_model, other, out=tmp_path / "whole", **options)

    out = tmp_path / "resumed"
    monkeypatch.setenv("MODELSEC_CHECKPOINT_INTERVAL", "0")
    write = AuditCheckpoint._write

    def crash_in_second_audit(self: AuditCheckpoint, payload: dict[str, Any]) -> None:
        write(self, payload)
        if self.path.parent.name == "other" and self.writes == 5:
            raise Interrupted

    with monkeypatch.context() as m:
        m.setattr(AuditCheckpoint, "_write", crash_in_second_audit)
        with pytest.raises(Interrupted):
            modelsec.compare(digits_model, other, out=out, **options)
    first_run_id = json.loads((out / "digits" / "result.json").read_text())["run_id"]
    assert "finished" in torch.load(audit_checkpoint_path(out / "digits"), weights_only=True)["state"]
    assert saved_state(out / "other")["writes"] == 5

    resumed = modelsec.compare(digits_model, other, out=out, **options)
    assert json.loads((out / "digits" / "result.json").read_text())["run_id"] == first_run_id  # not redone
    assert not audit_checkpoint_path(out / "digits").exists() and not audit_checkpoint_path(out / "other").exists()
    for name in ("digits", "other"):
        assert numbers(out / name) == numbers(tmp_path / "whole" / name)
    assert [m.robust_accuracy for m in resumed.models] == [m.robust_accuracy for m in whole.models]
    assert resumed.recommendation == whole.recommendation


class GaussianInputNoise(torch.nn.Module):
    """Adds N(0, 0.3^2) noise to the input, drawn from torch's global generator (a randomised defense)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.3 * torch.randn_like(x)


def test_a_randomised_model_resumes_to_the_same_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that draws its noise from torch's global generator (seeded by the audit's seed) is audited with
    EoT and majority votes; interrupted inside an attack and resumed, it gives the uninterrupted numbers, because
    the global generator's state is saved with the checkpoint like the audit's own generator."""
    from modelsec.audits import checkpoint as checkpoint_module

    clf, _, _ = digits_problem()
    noisy = torch.nn.Sequential(GaussianInputNoise(), clf.module)
    options = dict(data="digits", eps=(0.05,), samples=24, mia_samples=60, preset="quick", seed=1)
    monkeypatch.setenv("MODELSEC_CHECKPOINT_INTERVAL", "0")
    plain = modelsec.audit(noisy, out=tmp_path / "plain", **options)  # type: ignore[arg-type]
    assert "predictions by majority vote over 10 passes" in plain.settings["remedies"]

    original = checkpoint_module.AuditCheckpoint._write
    interrupted: list[str] = []

    def write_then_crash(self: AuditCheckpoint, payload: dict[str, Any]) -> None:
        original(self, payload)
        if not interrupted and "step 3/" in payload["where"]:
            interrupted.append(payload["where"])
            raise Interrupted

    monkeypatch.setattr(checkpoint_module.AuditCheckpoint, "_write", write_then_crash)
    with pytest.raises(Interrupted):
        modelsec.audit(noisy, out=tmp_path / "resumed", **options)  # type: ignore[arg-type]
    assert interrupted and audit_checkpoint_path(tmp_path / "resumed").exists()
    torch.manual_seed(12345)  # the caller's global generator must not matter
    modelsec.audit(noisy, out=tmp_path / "resumed", **options)  # type: ignore[arg-type]
    assert_same_audit(tmp_path / "resumed", tmp_path / "plain")
