"""The command line: exit codes (0 ok, 2 user error without a traceback), nothing lost on errors, the run store."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.cli_runner import assert_user_error, modelsec, modelsec_process
from tests.conftest import make_blobs


class _CreatesFile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.target, "w"))


def test_help_and_version() -> None:
    proc = modelsec_process("--help")
    assert proc.returncode == 0 and "audit" in proc.stdout and "train" in proc.stdout
    assert modelsec_process("--version").stdout.strip().startswith("modelsec, version")
    assert_user_error(modelsec_process("audit", "--no-such-flag"), "No such option")  # the real command's exit code


def test_user_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    assert_user_error(modelsec("audit", "--model", str(tmp_path / "missing.safetensors")), "does not exist")
    assert_user_error(modelsec("audit", "--data", "no-such-set"), "fashion-mnist")
    assert_user_error(modelsec("audit", "--eps", "0.1,abc"), "--eps")
    assert_user_error(modelsec("audit", "--attacks", "nope"), "unknown evasion attack")
    bad = tmp_path / "nan.npz"
    x, y = make_blobs(40)
    x[3, 2] = np.nan
    np.savez(bad, x=x, y=y)
    assert_user_error(modelsec("train", "--data", str(bad), "--out", str(tmp_path / "m.safetensors")), "NaN")
    assert_user_error(modelsec("audit", "--no-such-flag"), "No such option")
    assert_user_error(modelsec("audit", "--reference-models", "1"), "at least 2")
    assert_user_error(modelsec("audit", "--membership-attacks", "lira"), "needs reference models")
    assert_user_error(modelsec("audit", "--membership-attacks", "nope"), "unknown membership attack")


def test_pickle_model_refused_and_payload_never_runs(tmp_path: Path) -> None:
    target = tmp_path / "created-by-pickle"
    model = tmp_path / "model.pt"
    model.write_bytes(pickle.dumps(_CreatesFile(str(target))))
    proc = modelsec("audit", "--model", str(model), "--arch", "small-cnn", "--no-store", "--out", str(tmp_path / "o"))
    assert_user_error(proc, "--trust-model")
    assert not target.exists()
    proc = modelsec("audit", "--model", str(model), "--arch", "mlp", "--data", "digits", "--trust-model", "--no-store")
    assert_user_error(proc, "weights_only")
    assert not target.exists()
    assert not (tmp_path / "o").exists()


def test_train_audit_runs_and_report_on_a_data_file(tmp_path: Path) -> None:
    """The whole CLI path on a user .npz file: train, audit, list and show runs, re-render the report;
    an existing model is never overwritten without --overwrite."""
    data = tmp_path / "blobs.npz"
    x, y = make_blobs(400, d=12, classes=3)
    np.savez(data, x=x, y=y)
    model = tmp_path / "blobs.safetensors"
    proc = modelsec("train", "--data", str(data), "--out", str(model), "--epochs", "20", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert model.exists() and Path(str(model) + ".json").exists()
    before = model.read_bytes()
    assert_user_error(modelsec("train", "--data", str(data), "--out", str(model)), "--overwrite")
    assert model.read_bytes() == before

    out = tmp_path / "audit"
    proc = modelsec(
        "audit", "--model", str(model), "--samples", "60", "--mia-samples", "100", "--eps", "0.05,0.2",
        "--preset", "quick", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (out / "result.json").exists() and (out / "report.html").exists() and (out / "adversarial.npz").exists()
    run_id = proc.stdout.strip().splitlines()[-1].split()[-1]

    listing = modelsec("runs", "list")
    assert listing.returncode == 0 and run_id in listing.stdout
    shown = modelsec("runs", "show", run_id[:15])
    assert shown.returncode == 0 and "loss-threshold" in shown.stdout
    assert_user_error(modelsec("runs", "show", "19990101"), "no run")

    html = tmp_path / "again.html"
    proc = modelsec("report", str(out / "result.json"), "--out", str(html))
    assert proc.returncode == 0 and html.read_text().startswith("<!DOCTYPE html>")
    (tmp_path / "broken.json").write_text("{}")
    assert_user_error(modelsec("report", str(tmp_path / "broken.json"), "--out", str(html)), "not a modelsec result")


@pytest.mark.parametrize("kind", ["attacks", "architectures", "datasets"])
def test_list_registries(kind: str) -> None:
    proc = modelsec("list", kind)
    assert proc.returncode == 0
    expected = {"attacks": "pgd", "architectures": "small-cnn", "datasets": "fashion-mnist"}[kind]
    assert expected in proc.stdout
