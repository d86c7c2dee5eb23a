"""No code from a model file runs: hostile ``.pt2`` archives (a real ``torch.export.save`` archive, rewritten) are
refused, with and without ``trust_model``, by the archive check and, behind it, by the guarded load; the canary file
they would create never exists; a legitimate program still loads. The same archives go through the command line
in the fault table (tests/test_faults.py)."""

from __future__ import annotations

import contextlib
import logging
import pickle
import sys
import threading
import warnings
import zipfile
from pathlib import Path

import pytest
import sympy
import torch

import modelsec.models.export_safety as export_safety
from modelsec.core.errors import ModelLoadError, UnsafeModelError, printable
from modelsec.core.seeding import seeded
from modelsec.models import load_model
from modelsec.models.export_safety import check_graph_target, check_guard, check_symbolic_expression
from modelsec.models.zoo import build_architecture
from tests.evil_archives import EVIL_KINDS, EVIL_PARTS, RUN_BY_PLAIN_TORCH, evil_archive, export_mlp, rewrite


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A static and a dynamic-batch export of the same seeded MLP (64 features, 10 classes)."""
    folder = tmp_path_factory.mktemp("exports")
    return export_mlp(folder / "static.pt2"), export_mlp(folder / "dynamic.pt2", dynamic=True)


def _evil(kind: str, exports: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    canary = tmp_path / f"canary-{kind}"
    return evil_archive(kind, *exports, tmp_path / f"{kind}.pt2", canary), canary


@pytest.mark.parametrize("trust", [False, True])
@pytest.mark.parametrize("kind", EVIL_KINDS)
def test_hostile_archive_is_refused_and_runs_nothing(
    kind: str, trust: bool, exports: tuple[Path, Path], tmp_path: Path
) -> None:
    path, canary = _evil(kind, exports, tmp_path)
    with pytest.raises(UnsafeModelError) as err:
        load_model(path, input_shape=(64,), num_classes=10, trust_model=trust)
    message = str(err.value)
    assert EVIL_PARTS[kind] in message and "refused" in message and "with or without --trust-model" in message
    assert not canary.exists()


@pytest.mark.parametrize("kind", [k for k in EVIL_KINDS if k != "custom-object-constant"])
def test_guarded_load_refuses_what_the_archive_check_would(
    kind: str, exports: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: with the archive check switched off, the guards around torch.export.load still refuse."""
    path, canary = _evil(kind, exports, tmp_path)
    monkeypatch.setattr(export_safety, "check_export_archive", lambda data, where: None)
    with pytest.raises(UnsafeModelError, match="refused"):
        load_model(path, input_shape=(64,), num_classes=10, trust_model=True)
    assert not canary.exists()


@pytest.mark.parametrize("kind", RUN_BY_PLAIN_TORCH)
def test_the_hostile_archives_are_real_attacks(kind: str, exports: tuple[Path, Path], tmp_path: Path) -> None:
    """The premise: plain torch.export.load, module() and one forward pass run each of these archives' payloads."""
    path, canary = _evil(kind, exports, tmp_path)
    torch_logger = logging.getLogger("torch")
    handlers, torch_logger.handlers = torch_logger.handlers, []  # keep torch's own warnings out of the output
    try:
        program = torch.export.load(path)
        program.module()(torch.zeros(3, 64))
    except Exception:
        pass  # most crash after running the payload
    finally:
        torch_logger.handlers = handlers
    assert canary.exists()


def test_guards_are_lifted_after_a_load(exports: tuple[Path, Path], tmp_path: Path) -> None:
    before = (torch.load, torch.serialization.load, pickle.loads, pickle.load, sympy.sympify, torch._C._pickle_load_obj)
    handlers = list(logging.getLogger("torch").handlers)
    path, _ = _evil("sample-inputs-pickle", exports, tmp_path)
    for file in (exports[0], path):
        with contextlib.suppress(UnsafeModelError):
            load_model(file, input_shape=(64,), num_classes=10)
        after = (
            torch.load,
            torch.serialization.load,
            pickle.loads,
            pickle.load,
            sympy.sympify,
            torch._C._pickle_load_obj,
        )
        assert after == before
        assert logging.getLogger("torch").handlers == handlers
    assert pickle.loads(pickle.dumps({"a": 1})) == {"a": 1}


def test_legitimate_programs_still_load(exports: tuple[Path, Path]) -> None:
    """Static and symbolic batch sizes: same outputs as the module exported, at any batch size."""
    with seeded(0):
        reference = build_architecture("mlp", (64,), 10).eval()
    x = torch.rand(7, 64)
    for path in exports:
        loaded = load_model(path, num_classes=10)
        assert loaded.classifier.input_shape == (64,)
        assert torch.allclose(loaded.classifier.predict_logits(x), reference(x), atol=1e-6)
    dynamic = load_model(exports[1], num_classes=10).classifier.module
    assert getattr(dynamic, "fixed_batch", "missing") is None  # the symbolic batch is used as such


def test_a_malformed_archive_names_the_problem_and_prints_nothing(
    exports: tuple[Path, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Torch logs a traceback and raises "check the warnings above"; modelsec says which part is missing."""
    with_missing_part = tmp_path / "missing.pt2"
    with zipfile.ZipFile(exports[0]) as zin, zipfile.ZipFile(with_missing_part, "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith("data/weights/weight_0"):
                zout.writestr(info, zin.read(info.filename))
    capfd.readouterr()
    with pytest.raises(ModelLoadError, match="data/weights/weight_0") as err:
        load_model(with_missing_part, num_classes=10)
    assert "check the warnings above" not in str(err.value) and "\n" not in str(err.value)
    printed = capfd.readouterr()
    assert printed.err == "" and printed.out == ""
    broken_json = rewrite(exports[0], tmp_path / "json.pt2", {"models/model.json": lambda raw: raw[:-20]})
    with pytest.raises(ModelLoadError, match=r"models/model\.json is not valid JSON"):
        load_model(broken_json, num_classes=10)


def test_unsafe_member_names_and_duplicates_are_refused(exports: tuple[Path, Path], tmp_path: Path) -> None:
    traversal = rewrite(exports[0], tmp_path / "t.pt2", add={"static/../../../escaped.txt": b"x"})
    with pytest.raises(UnsafeModelError, match=r"unsafe name"):
        load_model(traversal, num_classes=10)
    twice = tmp_path / "twice.pt2"
    with zipfile.ZipFile(exports[0]) as zin, zipfile.ZipFile(twice, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
            zout.writestr(zin.infolist()[0], b"\x00" * 16)
    with pytest.raises(UnsafeModelError, match="two members named"):
        load_model(twice, num_classes=10)


@pytest.mark.parametrize(
    "expr",
    [
        "Symbol('s77', positive=True, integer=True)",
        "Max(Integer(1), Add(Symbol('s77', positive=True, integer=True), Integer(-1)))",
        "FloorDiv(Symbol('s0', integer=True), Integer(2))",
        "Float('1.5e-3', precision=53)",
        "2*s0 - 1 >= 3",
        "True",
    ],
)
def test_plain_symbolic_expressions_pass(expr: str) -> None:
    check_symbolic_expression(expr)
    sympy.sympify(expr)  # and sympy reads them


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("__import__('os').system('x')", "character '_'"),
        ("exec('print(1)')", "call of 'exec'"),
        ("sympify('x')", "call of 'sympify'"),
        ("Symbol('x').evalf()", "character '.'"),
        ("Integer(1)(2)", "call of a result"),
        ("(lambda: 1)()", "keyword 'lambda'"),
        ("Symbol('a__b')", "double underscore"),
        ('Symbol("x")', "character '\"'"),
        ("x" * 10_001, "10001 characters"),
    ],
)
def test_symbolic_expressions_that_could_run_code_are_refused(expr: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_symbolic_expression(expr)


def test_guards_and_graph_targets() -> None:
    check_guard("L['x'].size()[0] <= 4096 and 2 <= L['x'].size()[0]")
    check_guard("Max(L['x'].size()[0], 2) % 2 == 0")
    for bad in ("__import__('os')", "L['x'].__class__", "open('f')", "L['x'].size(dim=0)", "[1][0]", "lambda: 1"):
        with pytest.raises(ValueError):
            check_guard(bad)
    for good in ("torch.ops.aten.linear.default", "torch.ops.higher_order.cond", "_operator.getitem", "torch.sym_max"):
        check_graph_target(good)
    bad_targets = ("torch.save", "torch.ops.aten.from_file.default", "_operator.call", "builtins.exec", "#custom")
    for bad in (*bad_targets, "torch.ops.higher_order.flat_apply", "torch.ops.higher_order.invoke_leaf_function"):
        with pytest.raises(ValueError, match="not an operator modelsec runs"):
            check_graph_target(bad)


def test_printable_strips_escape_sequences_and_controls() -> None:
    bold = "Weights only load failed. \x1b[1mdo those steps only if you trust the source\x1b[0m.\r\nnext"
    assert printable(bold) == "Weights only load failed. do those steps only if you trust the source. next"
    assert printable("title\x1b]0;evil\x07 bell\x07 nul\x00 c1\x9b31m") == "title bell nul c1"
    assert printable("a" * 50, max_chars=10) == "a" * 9 + "…"


def test_the_lock_serialises_loads(exports: tuple[Path, Path]) -> None:
    """Two threads loading at once: both succeed and the guards are lifted afterwards."""
    results: list[object] = []

    def load() -> None:
        results.append(load_model(exports[1], num_classes=10).classifier.num_classes)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [10, 10]
    assert torch.load is torch.serialization.load and not export_safety._LOCK.locked()
    assert "modelsec" not in getattr(torch.load, "__module__", "") and sys.modules["pickle"].loads is pickle.loads
