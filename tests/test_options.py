"""Options every workflow shares, checked before any work: seeds, the device, where outputs go. Through the Python
API (the command line is in tests/test_faults.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import modelsec
from modelsec.audits import AuditConfig, run_audit
from modelsec.audits.compare import run_compare
from modelsec.audits.dp_audit import run_dp_audit
from modelsec.core.errors import ConfigError
from modelsec.core.options import (
    SEED_LIMIT,
    SPLIT_SEED_LIMIT,
    check_device,
    check_seed,
    check_writable_file,
    check_writable_folder,
)
from modelsec.defenses import make_defense
from modelsec.defenses.training import TrainingConfig, train_and_save
from modelsec.outputs.audit import audit_and_write
from modelsec.outputs.compare import compare_and_write
from modelsec.outputs.dp_audit import dp_audit_and_write


@pytest.mark.parametrize("seed", [-1, SEED_LIMIT, 99999999999999999999999, True, 1.0, "3", None])
def test_bad_seeds_are_refused_everywhere(seed: object) -> None:
    with pytest.raises(ConfigError, match="must be an integer from 0 to 2\\*\\*63 - 1"):
        check_seed(seed)
    with pytest.raises(ConfigError, match="--seed must be an integer"):
        AuditConfig(seed=seed)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seed must be an integer"):
        TrainingConfig(seed=seed)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="standard: seed must be"):
        make_defense("standard", {"seed": seed})
    with pytest.raises(ConfigError, match="--seed must be an integer"):
        run_dp_audit("standard", data="no-such-data", seed=seed)  # type: ignore[arg-type]


def test_seed_ranges() -> None:
    assert check_seed(0) == 0 and check_seed(SEED_LIMIT - 1) == SEED_LIMIT - 1
    assert AuditConfig(seed=SEED_LIMIT - 1, split_seed=SPLIT_SEED_LIMIT - 1).seed == SEED_LIMIT - 1
    with pytest.raises(ConfigError, match="--split-seed must be an integer from 0 to 2\\*\\*32 - 1"):
        AuditConfig(split_seed=SPLIT_SEED_LIMIT)
    with pytest.raises(ConfigError, match="--split-seed"):
        modelsec.harden("standard", data="digits", arch="mlp", out="never.safetensors", split_seed=-1)
    assert not Path("never.safetensors").exists()


def test_other_audit_options() -> None:
    with pytest.raises(ConfigError, match="--workers must be >= 1"):
        AuditConfig(workers=0)
    with pytest.raises(ConfigError, match="--reference-models must be from 0 to 1024"):
        AuditConfig(reference_models=100_000_000_000)
    with pytest.raises(ConfigError, match="finite number"):
        AuditConfig(eps=(0.1, float("nan")))


@pytest.mark.parametrize("device", ["banana", "cuda:x", "CPU", "", "cpu "])
def test_unknown_devices_are_refused(device: str) -> None:
    with pytest.raises(ConfigError, match="--device must be cpu, cuda or cuda:N"):
        check_device(device)
    assert check_device("cpu") == "cpu"


def test_writable_folder_check_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    check_writable_folder(target)
    assert list(tmp_path.iterdir()) == []  # created for the probe, then removed again
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("x")
    check_writable_folder(existing)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    check_writable_file(tmp_path / "new" / "model.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["existing"]


def test_unwritable_outputs_are_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="a part of the path is a file"):
        check_writable_folder(a_file / "out")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_writable_folder(a_file)
    with pytest.raises(ConfigError, match="a part of the path is a file"):
        check_writable_file(a_file / "sub" / "m.safetensors")
    with pytest.raises(ConfigError, match="is a folder"):
        check_writable_file(tmp_path)
    assert a_file.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_folder_without_write_permission_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(ConfigError, match="Permission denied"):
            check_writable_folder(locked / "out")
    finally:
        locked.chmod(0o700)


def test_every_workflow_checks_its_output_before_any_work(tmp_path: Path) -> None:
    """An output (or checkpoint) folder under a file is refused before the data is even looked at (the data here
    does not exist)."""
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    missing = str(tmp_path / "no-such-data.npz")
    with pytest.raises(ConfigError, match="a part of the path is a file"):
        audit_and_write(None, missing, out_dir=a_file / "out")
    with pytest.raises(ConfigError, match="a part of the path is a file"):
        run_audit(None, missing, checkpoint_dir=a_file / "out")
    with pytest.raises(ConfigError, match="a part of the path is a file"):
        compare_and_write("base.safetensors", ["at.safetensors"], data=missing, out_dir=a_file / "out")
    with pytest.raises(ConfigError, match="a part of the path is a file"):
        run_compare("base.safetensors", ["at.safetensors"], data=missing, checkpoint_dir=a_file / "out")
    with pytest.raises(ConfigError, match="a part of the path is a file"):
        modelsec.harden("standard", data=missing, arch="mlp", out=a_file / "m.safetensors")
    with pytest.raises(ConfigError, match="a part of the path is a file"):
        train_and_save(data=missing, arch="mlp", out=a_file / "m.safetensors", config=TrainingConfig())
    with pytest.raises(ConfigError, match="a part of the path is a file"):
        dp_audit_and_write("standard", data=missing, out_dir=a_file / "dp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
