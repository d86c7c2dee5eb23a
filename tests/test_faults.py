"""The fault table: hostile or broken inputs through the real command line (``python -m modelsec`` in a subprocess),
each with the exit code it must give, a fragment of its message, and a check that nothing ran, nothing was written
and nothing was lost.

Every case runs in a folder of its own, which is also the processes' working directory, HOME and default run
store. By default a failing case must leave that folder exactly as its setup made it (:func:`_snapshot`): no
canary, no output folder, the run store and any existing output untouched. A case adds its own checks in
``check`` and may replace the plain run (signals, concurrent writers) with ``run``.

The cases run concurrently (a few at a time) from one session fixture; ``test_fault[name]`` reports each. To add a
case, append a :class:`Fault` to :data:`FAULTS`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from modelsec.core.seeding import seeded
from modelsec.models.torch import save_safetensors
from modelsec.models.zoo import build_architecture
from tests.evil_archives import EVIL_KINDS, EVIL_PARTS, evil_archive, export_mlp, rewrite

WORKERS = 3
HARDEN = ["harden", "--defense", "standard", "--data", "digits", "--arch", "mlp", "--epochs", "12", "--batch-size", "8"]
"""The session's model (trained once, in this process) and the runs the signal cases interrupt: a digits MLP."""
QUICK = ["--preset", "quick", "--samples", "20", "--mia-samples", "40", "--eps", "0.1", "--no-store", "--quiet"]


@dataclass(frozen=True)
class Env:
    """What a case gets: its folder, the session's shared files (never written; made while the first cases run)
    and the processes' environment."""

    case: Path
    shared_model: Future[Path]
    shared_exports: Future[tuple[Path, Path]]
    environ: dict[str, str]

    @property
    def model(self) -> Path:
        """A digits MLP (safetensors with its header), trained with HARDEN."""
        return self.shared_model.result()

    @property
    def exports(self) -> tuple[Path, Path]:
        """torch.export archives of a 64 -> 10 MLP: static batch, symbolic batch."""
        return self.shared_exports.result()

    @property
    def canary(self) -> Path:
        return self.case / "canary"

    @property
    def out(self) -> Path:
        return self.case / "out"

    def modelsec(self, *argv: str, timeout: float = 300) -> Outcome:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "modelsec", *argv],
            capture_output=True,
            text=True,
            cwd=self.case,
            env=self.environ,
            timeout=timeout,
        )
        return Outcome(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float
    notes: dict[str, object] = field(default_factory=dict)  # what a custom run observed on the way


def _nothing(env: Env) -> None:
    """No setup."""


@dataclass(frozen=True)
class Fault:
    """One row: ``argv`` (without ``modelsec``) run in the case's folder after ``setup``; the exit ``code`` and a
    ``message`` fragment (stderr; stdout too when the command succeeds) it must give; ``check`` for what must (not)
    be there afterwards; ``unchanged``: the case folder must be exactly as the setup left it."""

    name: str
    argv: Callable[[Env], list[str]]
    code: int
    message: str
    setup: Callable[[Env], object] = _nothing
    check: Callable[[Env, Outcome], None] | None = None
    unchanged: bool = True
    run: Callable[[Fault, Env], Outcome] | None = None
    slow: bool = False  # started first

    def __repr__(self) -> str:
        return self.name


# -- setups ---------------------------------------------------------------------------------------------------------


class CreatesFile:
    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.target, "w"))


def _write(name: str, data: bytes | str) -> Callable[[Env], object]:
    def setup(env: Env) -> None:
        path = env.case / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def _npz(name: str, change: Callable[[np.ndarray, np.ndarray, Env], tuple[np.ndarray, np.ndarray]]) -> Callable:
    """An .npz of 80 digit-like records (64 features in [0, 1], labels 0..9), passed through ``change``."""

    def setup(env: Env) -> None:
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 1, size=(80, 64)).astype(np.float32)
        y = np.arange(80) % 10
        x, y = change(x, y, env)
        np.savez(env.case / name, x=x, y=y)

    return setup


def _with(x: np.ndarray, y: np.ndarray, at: tuple[int, int], value: float) -> tuple[np.ndarray, np.ndarray]:
    x = x.copy()
    x[at] = value
    return x, y


def _nan_and_inf(x: np.ndarray, y: np.ndarray, env: Env) -> tuple[np.ndarray, np.ndarray]:
    x, y = _with(x, y, (3, 5), np.nan)
    return _with(x, y, (7, 1), np.inf)


def _evil_pt2(kind: str) -> Callable[[Env], object]:
    def setup(env: Env) -> None:
        evil_archive(kind, *env.exports, env.case / "model.pt2", env.canary)

    return setup


def _safetensors_bytes(env: Env) -> bytes:
    return env.model.read_bytes()


def _truncated_header(env: Env) -> None:
    """The first 200 bytes of the header a length of 4096 announces (the file ends before its header does)."""
    header = _safetensors_bytes(env)[8:208]
    (env.case / "m.safetensors").write_bytes((4096).to_bytes(8, "little") + header)


def _malformed_header(env: Env) -> None:
    header = b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]'  # no closing brace
    (env.case / "m.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)


def _tensor_past_the_end(env: Env) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
    (env.case / "m.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)


def _wrong_shapes(env: Env) -> None:
    with seeded(0):
        module = build_architecture("mlp", (6,), 3)
    save_safetensors(module, env.case / "m.safetensors", {})


def _malformed_card(env: Env) -> None:
    """Readable weights whose modelsec header records an input shape that is not a list of integers."""
    with seeded(0):
        module = build_architecture("mlp", (64,), 10)
    save_safetensors(module, env.case / "m.safetensors", {"arch": "mlp", "input_shape": "64", "num_classes": 10})


def _pickle(env: Env) -> None:
    import pickle

    (env.case / "model.pt").write_bytes(pickle.dumps(CreatesFile(env.canary)))


def _torch_pickle(env: Env) -> None:
    torch.save({"w": CreatesFile(env.canary)}, env.case / "model.pt")


def _result_json(change: Callable[[dict[str, object]], None]) -> Callable[[Env], object]:
    def setup(env: Env) -> None:
        from tests.store_fixtures import make_result

        d = make_result().to_dict()
        change(d)
        (env.case / "result.json").write_text(json.dumps(d), encoding="utf-8")

    return setup


def _file_in_the_way(env: Env) -> None:
    (env.case / "afile").write_text("not a folder\n", encoding="utf-8")


def _existing_output(env: Env) -> None:
    (env.case / "m.safetensors").write_bytes(b"precious weights")


def _traversal(env: Env) -> None:
    rewrite(env.exports[0], env.case / "model.pt2", add={"static/../../escaped.txt": b"x"})


def _missing_part(env: Env) -> None:
    import zipfile

    with zipfile.ZipFile(env.exports[0]) as zin, zipfile.ZipFile(env.case / "model.pt2", "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith("data/weights/weight_0"):
                zout.writestr(info, zin.read(info.filename))


def _store_file(env: Env) -> None:
    (env.case / "store.sqlite").write_bytes(_safetensors_bytes(env))


def _html_data(env: Env) -> None:
    """A CSV whose file name, class names and column names are HTML, and a model trained on it (here, in-process)."""
    from modelsec.defenses.training import TrainingConfig, train_and_save

    rng = np.random.default_rng(0)
    names = ["<script>alert(2)</script>", "<img src=x onerror=alert(3)>"]
    columns = [f"<b onmouseover=alert({i})>" for i in range(8)]
    rows = [",".join([*columns, "label"])]
    for i in range(160):
        k = i % 2
        values = np.clip(rng.normal(0.3 + 0.4 * k, 0.1, size=8), 0, 1)
        rows.append(",".join([*(f"{v:.4f}" for v in values), names[k]]))
    data = env.case / "<img src=x onerror=alert(1)>.csv"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    train_and_save(data=str(data), arch="mlp", out=env.case / "<svg onload=alert(4)>.safetensors",
                   config=TrainingConfig(epochs=2))  # fmt: skip


# -- checks ---------------------------------------------------------------------------------------------------------


def _html_escaped(env: Env, outcome: Outcome) -> None:
    html = (env.out / "report.html").read_text(encoding="utf-8")
    for raw in ("<script>alert", "<img src=x onerror", "<svg onload", "<b onmouseover"):
        assert raw not in html, raw
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html or "&lt;script&gt;alert(2)" in html
    result = json.loads((env.out / "result.json").read_text(encoding="utf-8"))
    # --samples 1000 on 40 test records and --mia-samples 100000: both said, in the warnings and the result
    n = result["settings"]["samples"]
    assert n < 1000 and result["settings"]["samples_requested"] == 1000
    assert f"warning: --samples 1000 is more than the {n} test records" in outcome.stderr
    assert any("--mia-samples 100000 is more than the data holds" in note for note in result["privacy"]["notes"])
    assert "warning: --mia-samples 100000 is more than the data holds" in outcome.stderr
    assert "samples_requested" in html and "--mia-samples 100000 is more than" in html


def _not_escaped(env: Env, outcome: Outcome) -> None:
    assert not (env.case.parent / "escaped.txt").exists() and not (env.case / "escaped.txt").exists()


def _no_traceback_or_torch_log(env: Env, outcome: Outcome) -> None:
    assert "check the warnings above" not in outcome.stderr and "W1" not in outcome.stderr


def _same_weights(path: Path, reference: Path) -> None:
    a, b = load_file(str(path)), load_file(str(reference))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _interrupted_then_resumed(env: Env, outcome: Outcome) -> None:
    notes = outcome.notes
    assert notes["checkpoint_left"] and not notes["output_after_interrupt"], notes
    assert notes["first_code"] == notes["expected_first_code"], notes
    assert "resuming from" in outcome.stderr and "after epoch" in outcome.stderr
    assert not (env.case / "m.safetensors.ckpt").exists()
    _same_weights(env.case / "m.safetensors", env.model)  # the resumed run ends where an uninterrupted one does


def _eight_rows_intact(env: Env, outcome: Outcome) -> None:
    lines = [line for line in outcome.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 + 8, outcome.stdout  # header + one row per writer
    with sqlite3.connect(env.case / "runs.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 8


# -- custom runs ----------------------------------------------------------------------------------------------------


def _interrupt_harden(sig: int) -> Callable[[Fault, Env], Outcome]:
    """Start HARDEN, send ``sig`` once its first checkpoint is written, then rerun the same command."""

    def run(fault: Fault, env: Env) -> Outcome:
        argv = [sys.executable, "-m", "modelsec", *fault.argv(env)]
        ckpt = env.case / "m.safetensors.ckpt"
        proc = subprocess.Popen(argv, cwd=env.case, env=env.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        notes: dict[str, object] = {
            "first_code": proc.returncode,
            "expected_first_code": 130 if sig == signal.SIGINT else -signal.SIGKILL,
            "first_stderr": err.decode(errors="replace")[-400:],
            "checkpoint_left": ckpt.exists(),
            "output_after_interrupt": (env.case / "m.safetensors").exists(),
        }
        again = env.modelsec(*fault.argv(env))
        again.notes = notes
        if sig == signal.SIGINT:
            assert "modelsec: interrupted" in str(notes["first_stderr"]), notes
        return again

    return run


def _interrupt_audit(sig: int) -> Callable[[Fault, Env], Outcome]:
    """Run the audit once uninterrupted (into ``ref``), then again into ``out``: checkpointing at every point and
    held at its checkpoint before membership inference (so it cannot finish first), ``sig`` once its checkpoint
    exists; then rerun the same command, which must resume."""

    def run(fault: Fault, env: Env) -> Outcome:
        reference = env.modelsec(*fault.argv(env)[:-1], "ref")
        assert reference.code == 0, reference.stderr
        argv = [sys.executable, "-m", "modelsec", *fault.argv(env)]
        ckpt = env.out / "audit.ckpt"
        held = dict(env.environ, MODELSEC_CHECKPOINT_INTERVAL="0", MODELSEC_TEST_PAUSE_AT="membership inference next")
        proc = subprocess.Popen(argv, cwd=env.case, env=held, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        notes: dict[str, object] = {
            "first_code": proc.returncode,
            "expected_first_code": 130 if sig == signal.SIGINT else -signal.SIGKILL,
            "first_stderr": err.decode(errors="replace")[-600:],
            "checkpoint_left": ckpt.exists(),
            "output_after_interrupt": (env.out / "result.json").exists(),
        }
        again = env.modelsec(*fault.argv(env))
        again.notes = notes
        return again

    return run


def _audit_numbers(folder: Path) -> dict[str, object]:
    d = json.loads((folder / "result.json").read_text())
    for key in ("run_id", "created_at", "timings"):
        d.pop(key)
    for entry in d["robustness"]["results"] + d["privacy"]["attacks"]:
        entry.pop("seconds", None)
    return dict(d)


def _audit_interrupted_then_resumed(env: Env, outcome: Outcome) -> None:
    notes = outcome.notes
    assert notes["checkpoint_left"] and not notes["output_after_interrupt"], notes
    assert notes["first_code"] == notes["expected_first_code"], notes
    if notes["expected_first_code"] == 130:
        assert "the audit can be resumed from" in str(notes["first_stderr"]), notes
    assert not (env.out / "audit.ckpt").exists()
    assert _audit_numbers(env.out) == _audit_numbers(env.case / "ref")
    a, b = np.load(env.out / "adversarial.npz"), np.load(env.case / "ref" / "adversarial.npz")
    assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)


_WRITER = """
import json, sys, time
from pathlib import Path
from modelsec.results.audit import AuditResult
from modelsec.store import RunStore
d = json.loads(Path("result.json").read_text())
d["run_id"] = "20250114-093012-w" + sys.argv[1]
go = Path("go")
while not go.exists():
    time.sleep(0.005)
RunStore(Path("runs.sqlite")).record_audit(AuditResult.from_dict(d), out_dir=None, artifacts={})
"""


def _eight_writers(fault: Fault, env: Env) -> Outcome:
    """Eight processes record a run in one store at the same moment; then `runs list` reads it back."""
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(i)], cwd=env.case, env=env.environ,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(8)
    ]  # fmt: skip
    time.sleep(0.5)
    (env.case / "go").touch()
    errors = [w.communicate(timeout=120)[1].decode() for w in writers]
    assert all(w.returncode == 0 for w in writers), errors
    return env.modelsec(*fault.argv(env))


# -- the table ------------------------------------------------------------------------------------------------------


def _audit(*extra: str) -> Callable[[Env], list[str]]:
    """An audit whose options are refused before the model is read (so any model path does)."""
    return lambda env: ["audit", "--model", "model.safetensors", "--data", "digits", *QUICK, *extra]


def _audit_model(name: str, *extra: str) -> Callable[[Env], list[str]]:
    return lambda env: ["audit", "--model", name, "--data", "digits", *QUICK, "--out", "out", *extra]


def _audit_data(name: str) -> Callable[[Env], list[str]]:
    return lambda env: ["audit", "--model", str(env.model), "--data", name, *QUICK, "--out", "out"]


def _const(*argv: str) -> Callable[[Env], list[str]]:
    return lambda env: list(argv)


FAULTS: list[Fault] = [
    # model files that try to run code, or are broken
    *(
        Fault(
            f"pt2-{kind}",
            _audit_model("model.pt2", "--trust-model"),
            2,
            EVIL_PARTS[kind],
            setup=_evil_pt2(kind),
            check=_no_traceback_or_torch_log,
        )
        for kind in EVIL_KINDS
    ),
    Fault("pt2-path-traversal", _audit_model("model.pt2"), 2, "unsafe name", _traversal, _not_escaped),
    Fault(
        "pt2-missing-part",
        _audit_model("model.pt2"),
        2,
        "data/weights/weight_0",
        _missing_part,
        _no_traceback_or_torch_log,
    ),
    Fault("pickle-untrusted", _audit_model("model.pt", "--arch", "mlp"), 2, "--trust-model", _pickle),
    Fault(
        "pickle-trusted", _audit_model("model.pt", "--arch", "mlp", "--trust-model"), 2, "weights_only", _torch_pickle
    ),
    Fault(
        "safetensors-truncated-header", _audit_model("m.safetensors"), 2, "unrecognised model format", _truncated_header
    ),
    Fault(
        "safetensors-malformed-header",
        _audit_model("m.safetensors", "--arch", "mlp"),
        2,
        "cannot read safetensors file",
        _malformed_header,
    ),
    Fault(
        "safetensors-tensor-past-end",
        _audit_model("m.safetensors", "--arch", "mlp"),
        2,
        "cannot read safetensors file",
        _tensor_past_the_end,
    ),
    Fault("safetensors-wrong-shapes", _audit_model("m.safetensors", "--arch", "mlp"), 2, "do not fit", _wrong_shapes),
    Fault(
        "safetensors-malformed-card",
        _audit_model("m.safetensors"),
        2,
        "malformed modelsec header: input_shape must be a list",
        _malformed_card,
    ),
    Fault(
        "model-empty-file", _audit_model("m.safetensors"), 2, "unrecognised model format", _write("m.safetensors", b"")
    ),
    Fault("model-empty-folder", _audit_model("models"), 2, "not a file", _write("models/.keep", b"")),
    # data files
    Fault("data-nan-inf", _audit_data("d.npz"), 2, "2 NaN/Inf value(s)", _npz("d.npz", _nan_and_inf)),
    Fault("data-out-of-bounds", _audit_data("d.npz"), 2, "declared bounds", _npz("d.npz", lambda x, y, e: (x * 3, y))),
    Fault("data-one-class", _audit_data("d.npz"), 2, "only one class", _npz("d.npz", lambda x, y, e: (x, y * 0))),
    Fault("data-length-mismatch", _audit_data("d.npz"), 2, "labels", _npz("d.npz", lambda x, y, e: (x, y[:-1]))),
    Fault(
        "data-object-dtype",
        _audit_data("d.npz"),
        2,
        "pickled",
        _npz("d.npz", lambda x, y, e: (np.array([CreatesFile(e.canary)] * len(y), dtype=object), y)),
    ),
    Fault("data-csv-no-label-column", _audit_data("d.csv"), 2, "no label column", _write("d.csv", "a,b\n0.1,0.2\n")),
    Fault(
        "data-csv-non-numeric",
        _audit_data("d.csv"),
        2,
        "non-numeric value",
        _write("d.csv", "a,b,label\n0.1,0.2,0\n0.3,oops,1\n"),
    ),
    Fault("data-empty-file", _audit_data("d.csv"), 2, "is empty", _write("d.csv", b"")),
    Fault("data-empty-folder", _audit_data("data"), 2, "is a folder", _write("data/.keep", b"")),
    # HTML in names, and capped sample counts said out loud (a full, successful audit)
    Fault(
        "html-injection-and-capped-samples",
        lambda env: [
            "audit",
            "--model",
            "<svg onload=alert(4)>.safetensors",
            "--data",
            "<img src=x onerror=alert(1)>.csv",
            "--preset",
            "quick",
            "--samples",
            "1000",
            "--mia-samples",
            "100000",
            "--eps",
            "0.1",
            "--no-store",
            "--out",
            "out",
        ],
        0,
        "report:",
        _html_data,
        _html_escaped,
        unchanged=False,
        slow=True,
    ),
    # options
    Fault("seed-negative", _audit("--seed", "-1"), 2, "'--seed': -1 is not in the range"),
    Fault("seed-too-large", _audit("--seed", "99999999999999999999999"), 2, "is not in the range"),
    Fault(
        "compare-seed-negative", _const("compare", "base.safetensors", "at.safetensors", "--seed", "-1"), 2, "--seed"
    ),
    Fault("harden-seed-negative", lambda e: [*HARDEN, "--seed", "-1", "--out", "m.safetensors"], 2, "--seed"),
    Fault(
        "train-seed-negative",
        _const("train", "--data", "digits", "--seed", "-1", "--out", "m.safetensors"),
        2,
        "--seed",
    ),
    Fault("audit-dp-seed-negative", _const("audit-dp", "--seed", "-1"), 2, "--seed"),
    Fault("split-seed-too-large", _audit("--split-seed", str(2**32)), 2, "--split-seed"),
    Fault("workers-zero", _audit("--workers", "0"), 2, "--workers"),
    Fault("samples-zero", _audit("--samples", "0"), 2, "--samples"),
    Fault("eps-nan", _audit("--eps", "0.1,nan"), 2, "finite number"),
    Fault("reference-models-huge", _audit("--reference-models", "100000000000"), 2, "--reference-models must be"),
    Fault("device-unknown", _audit("--device", "banana"), 2, "--device must be cpu, cuda or cuda:N"),
    Fault(
        "train-batch-size-zero",
        _const("train", "--data", "digits", "--batch-size", "0", "--out", "m.safetensors"),
        2,
        "--batch-size",
    ),
    Fault("harden-epochs-zero", lambda e: [*HARDEN, "--epochs", "0", "--out", "m.safetensors"], 2, "--epochs"),
    # outputs that cannot be written, or must not be replaced: refused before any work
    Fault("audit-out-under-a-file", _audit("--out", "afile/out"), 2, "a part of the path is a file", _file_in_the_way),
    Fault(
        "compare-out-under-a-file",
        lambda e: ["compare", str(e.model), str(e.model), "--data", "digits", *QUICK, "--out", "afile/out"],
        2,
        "a part of the path is a file",
        _file_in_the_way,
    ),
    Fault(
        "harden-out-under-a-file",
        lambda e: [*HARDEN, "--out", "afile/m.safetensors"],
        2,
        "a part of the path is a file",
        _file_in_the_way,
    ),
    Fault(
        "train-out-under-a-file",
        _const("train", "--data", "digits", "--out", "afile/m.safetensors"),
        2,
        "a part of the path is a file",
        _file_in_the_way,
    ),
    Fault(
        "audit-dp-out-under-a-file",
        _const("audit-dp", "--data", "digits", "--defense", "standard", "--out", "afile/dp"),
        2,
        "a part of the path is a file",
        _file_in_the_way,
    ),
    Fault(
        "report-out-under-a-file",
        _const("report", "result.json", "--out", "afile/r.html"),
        2,
        "a part of the path is a file",
        lambda env: (_file_in_the_way(env), _result_json(lambda d: None)(env)),
    ),
    Fault(
        "harden-existing-output", lambda e: [*HARDEN, "--out", "m.safetensors"], 2, "pass --overwrite", _existing_output
    ),
    # result files and run stores
    Fault(
        "report-verdict-null",
        _const("report", "result.json", "--out", "r.html"),
        2,
        "verdict must be an object",
        _result_json(lambda d: d.update(verdict=None)),
    ),
    Fault(
        "report-model-null",
        _const("report", "result.json", "--out", "r.html"),
        2,
        "model must be an object",
        _result_json(lambda d: d.update(model=None)),
    ),
    Fault(
        "report-schema-version-negative",
        _const("report", "result.json", "--out", "r.html"),
        2,
        "schema_version -5 is not a version this modelsec reads",
        _result_json(lambda d: d.update(schema_version=-5)),
    ),
    Fault(
        "report-schema-version-string",
        _const("report", "result.json", "--out", "r.html"),
        2,
        "schema_version must be the integer 1",
        _result_json(lambda d: d.update(schema_version="1")),
    ),
    Fault(
        "runs-list-missing-store", _const("runs", "list", "--store", "nonexistent/dir/x.sqlite"), 0, "no runs recorded"
    ),
    Fault(
        "runs-show-missing-store", _const("runs", "show", "abc", "--store", "nonexistent/x.sqlite"), 2, "no run store"
    ),
    Fault(
        "runs-list-not-a-store",
        _const("runs", "list", "--store", "store.sqlite"),
        2,
        "not a modelsec run store",
        _store_file,
    ),
    Fault(
        "runs-eight-concurrent-writers",
        _const("runs", "list", "--store", "runs.sqlite", "--limit", "50"),
        0,
        "20250114-093012-w",
        _result_json(lambda d: None),
        _eight_rows_intact,
        unchanged=False,
        run=_eight_writers,
    ),
    # interrupted training resumes to the same model
    Fault(
        "harden-sigint-resumes",
        lambda e: [*HARDEN, "--out", "m.safetensors"],
        0,
        "saved m.safetensors",
        check=_interrupted_then_resumed,
        unchanged=False,
        run=_interrupt_harden(signal.SIGINT),
        slow=True,
    ),
    Fault(
        "harden-sigkill-resumes",
        lambda e: [*HARDEN, "--out", "m.safetensors"],
        0,
        "saved m.safetensors",
        check=_interrupted_then_resumed,
        unchanged=False,
        run=_interrupt_harden(signal.SIGKILL),
        slow=True,
    ),
    # an interrupted audit resumes to the numbers of an uninterrupted one
    Fault(
        "audit-sigint-resumes",
        lambda e: ["audit", "--model", str(e.model), *QUICK, "--out", "out"],
        0,
        "",
        check=_audit_interrupted_then_resumed,
        unchanged=False,
        run=_interrupt_audit(signal.SIGINT),
        slow=True,
    ),
    Fault(
        "audit-sigkill-resumes",
        lambda e: ["audit", "--model", str(e.model), *QUICK, "--out", "out"],
        0,
        "",
        check=_audit_interrupted_then_resumed,
        unchanged=False,
        run=_interrupt_audit(signal.SIGKILL),
        slow=True,
    ),
]


# -- running the table ----------------------------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with a hash of its content (``"dir"`` for folders)."""
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        out[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@dataclass
class Ran:
    env: Env
    before: dict[str, str]
    outcome: Outcome | None = None
    error: BaseException | None = None


def _run(fault: Fault, env: Env) -> Ran:
    env.case.mkdir(parents=True)
    ran = Ran(env, {})
    try:
        fault.setup(env)
        ran.before = _snapshot(env.case)
        ran.outcome = fault.run(fault, env) if fault.run else env.modelsec(*fault.argv(env))
    except BaseException as e:  # reported by the case's test
        ran.error = e
    return ran


@pytest.fixture(scope="session")
def fault_outcomes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Ran]:
    """Run every selected case once, ``WORKERS`` at a time, and keep what each did."""
    selected = {
        item.callspec.params["fault"].name
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_fault" and hasattr(item, "callspec")
    }
    root = tmp_path_factory.mktemp("faults")
    shared = root / "shared"
    shared.mkdir()
    environ = dict(os.environ)
    environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLCONFIGDIR=str(shared / "mpl"), PYTHONHASHSEED="0")

    def train() -> Path:
        import modelsec

        model = shared / "digits-mlp.safetensors"
        config = {"epochs": int(HARDEN[HARDEN.index("--epochs") + 1]), "batch_size": int(HARDEN[-1])}
        modelsec.harden("standard", data="digits", arch="mlp", out=model, config=config)
        model.chmod(0o444)
        return model

    exports: Future[tuple[Path, Path]] = Future()  # made here, before training starts (tracing is not thread-safe)
    exports.set_result((export_mlp(shared / "static.pt2"), export_mlp(shared / "dynamic.pt2", dynamic=True)))
    chosen = sorted((f for f in FAULTS if f.name in selected), key=lambda f: not f.slow)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        model = pool.submit(train)  # first: the cases that need it wait for it

        def env_of(fault: Fault) -> Env:
            case = root / fault.name
            e = dict(environ, HOME=str(case / "home"), MODELSEC_STORE=str(case / "home" / "runs.sqlite"))
            e.update(XDG_DATA_HOME=str(case / "home" / "share"), XDG_CACHE_HOME=str(case / "home" / "cache"))
            return Env(case=case, shared_model=model, shared_exports=exports, environ=e)

        futures = {f.name: pool.submit(_run, f, env_of(f)) for f in chosen}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(fault: Fault, fault_outcomes: dict[str, Ran]) -> None:
    ran = fault_outcomes[fault.name]
    if ran.error is not None:
        raise ran.error
    outcome = ran.outcome
    assert outcome is not None
    shown = f"exit {outcome.code} ({outcome.seconds:.1f} s)\nstdout: {outcome.stdout[-2000:]}"
    shown += f"\nstderr: {outcome.stderr[-2000:]}"
    assert outcome.code == fault.code, shown
    assert "Traceback" not in outcome.stderr, shown
    assert fault.message in (outcome.stderr if fault.code else outcome.stdout + outcome.stderr), shown
    if fault.unchanged:
        assert _snapshot(ran.env.case) == ran.before, "the failed command left something behind or changed a file"
    if fault.check is not None:
        fault.check(ran.env, outcome)


def test_the_table_covers_the_brief() -> None:
    names = [f.name for f in FAULTS]
    assert len(names) == len(set(names)) and len(names) >= 30
    assert {f"pt2-{kind}" for kind in EVIL_KINDS} <= set(names)
    interrupted = {f"{command}-{sig}-resumes" for command in ("audit", "harden") for sig in ("sigint", "sigkill")}
    assert interrupted <= set(names)
