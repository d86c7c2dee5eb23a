"""Golden runs: the same commands with the same seeds write the same numbers, release after release and refactoring
after refactoring.

- ``modelsec audit`` of a committed digits MLP (``tests/data/golden-digits-mlp.safetensors``, made by ``modelsec
  harden --defense standard --data digits --arch mlp --epochs 10 --batch-size 32 --seed 0``): the quick preset, an
  explicit list of gradient attacks, and membership inference with reference models (LiRA, RMIA, shadow);
- ``modelsec harden --defense pgd-at`` for two epochs: the weights it writes and their test accuracy.

``tests/data/golden.json`` holds the numbers and the fingerprint of the machine configuration that wrote them
(torch version, the CPU kernels torch chose, threads). Under that configuration the numbers must be equal to the
last bit ("same seed, same CPU result"); under another one (another CPU, ``make test-numerics``) float reductions
run in another order, so the headline numbers must agree within a few samples. To rewrite the file after a change
that is meant to change numbers (say so in the commit): ``MODELSEC_WRITE_GOLDEN=1 pytest tests/test_golden_run.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from modelsec.cli.main import main

pytestmark = pytest.mark.numerics  # exact on the configuration that wrote the file, close on others

DATA = Path(__file__).parent / "data"
MODEL = DATA / "golden-digits-mlp.safetensors"
GOLDEN = DATA / "golden.json"
WRITE = os.environ.get("MODELSEC_WRITE_GOLDEN") == "1"

AUDITS: dict[str, list[str]] = {
    "quick-with-reference-models": [
        "--preset", "quick", "--samples", "200", "--mia-samples", "300", "--eps", "0.05,0.1",
        "--reference-models", "4", "--workers", "1", "--seed", "3",
    ],
    "gradient-attacks": [
        "--attacks", "fgsm,pgd,apgd,apgd-t,deepfool", "--samples", "80", "--mia-samples", "100", "--eps", "0.1",
        "--membership-attacks", "loss-threshold,modified-entropy", "--seed", "5",
    ],
}  # fmt: skip
HARDEN = ["harden", "--defense", "pgd-at", "--eps", "0.1", "--steps", "5", "--data", "digits", "--arch", "mlp",
          "--epochs", "2", "--batch-size", "32", "--seed", "1", "--quiet"]  # fmt: skip
VOLATILE = {"run_id", "created_at", "timings", "versions", "seconds", "path", "adversarial_file"}


def fingerprint() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


def stable(value: Any) -> Any:
    """``value`` without what differs between two runs of the same command (ids, dates, durations, paths)."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE and not k.endswith("_seconds")}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def run_audit(name: str, out: Path) -> dict[str, Any]:
    main(["audit", "--model", str(MODEL), *AUDITS[name], "--no-store", "--quiet", "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    return dict(stable(result))


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers compared across machine configurations."""
    rob, priv = result["robustness"], result["privacy"]
    return {
        "n": rob["n"],
        "clean_accuracy": rob["clean_accuracy"],
        "robust_accuracy": rob["robust_accuracy"],
        "attacks": [(e["attack"], e["eps"], e["robust_accuracy"]) for e in rob["results"]],
        "auc": {a["attack"]: a["auc"] for a in priv["attacks"]},
    }


def assert_close_headline(got: dict[str, Any], want: dict[str, Any]) -> None:
    n = want["n"]
    assert got["n"] == n
    slack = 3 / n + 1e-9  # a few samples may fall the other way when float reductions run in another order
    assert abs(got["clean_accuracy"] - want["clean_accuracy"]) <= slack
    assert got["robust_accuracy"].keys() == want["robust_accuracy"].keys()
    for key, value in want["robust_accuracy"].items():
        assert abs(got["robust_accuracy"][key] - value) <= slack, key
    assert [a[:2] for a in got["attacks"]] == [tuple(a[:2]) for a in want["attacks"]]
    for (attack, eps, value), (_, _, expected) in zip(got["attacks"], want["attacks"], strict=True):
        assert abs(value - expected) <= slack, (attack, eps)
    assert got["auc"].keys() == want["auc"].keys()
    for attack, auc in want["auc"].items():
        assert abs(got["auc"][attack] - auc) <= 0.01, attack


def weights_digest(path: Path) -> str:
    tensors = load_file(str(path))
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    if WRITE:
        return {"fingerprint": fingerprint(), "audits": {}, "harden": {}}
    return dict(json.loads(GOLDEN.read_text()))


@pytest.fixture(scope="module", autouse=True)
def write_golden(golden: dict[str, Any]) -> Any:
    yield
    if WRITE:
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


@pytest.mark.parametrize("name", list(AUDITS))
def test_audit_writes_the_golden_numbers(name: str, golden: dict[str, Any], tmp_path: Path) -> None:
    got = run_audit(name, tmp_path / "out")
    if WRITE:
        golden["audits"][name] = got
        return
    want = golden["audits"][name]
    if golden["fingerprint"] == fingerprint():
        assert got == want  # the same CPU configuration: the same result, to the last bit
    else:
        assert_close_headline(headline(got), headline(want))


def test_harden_writes_the_golden_model(golden: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "at.safetensors"
    main([*HARDEN, "--out", str(out)])
    record = json.loads(out.with_name(out.name + ".json").read_text())
    got = {"weights": weights_digest(out), "test_accuracy": record["training"]["test_accuracy"]}
    if WRITE:
        golden["harden"] = got
        return
    want = golden["harden"]
    if golden["fingerprint"] == fingerprint():
        assert got == want
    else:
        assert all(abs(a - b) <= 0.03 for a, b in zip(got["test_accuracy"], want["test_accuracy"], strict=True))
