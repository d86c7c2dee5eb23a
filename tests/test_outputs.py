"""The outputs layer: the workflows compute and write nothing; modelsec.outputs writes their files, atomically, for
the command line and the Python API alike (the end-to-end tests in test_audit, test_compare, test_dp_audit and
test_audit_resume check the files' contents)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest

import modelsec
from modelsec.audits import AuditConfig, run_audit
from modelsec.audits.compare import run_compare
from modelsec.audits.dp_audit import run_dp_audit
from modelsec.cli.main import main
from modelsec.outputs.audit import write_audit
from modelsec.outputs.files import OutputFolder
from modelsec.results.audit import AuditResult
from modelsec.store import RunStore, default_store_path

MODEL = Path(__file__).parent / "data" / "golden-digits-mlp.safetensors"  # a committed digits MLP
SMALL = {"eps": (0.1,), "samples": 30, "mia_samples": 40, "preset": "quick", "seed": 2}


def listing(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, hidden ones included, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def numbers(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what differs between two runs of the same audit: ids, dates and durations."""
    d = {k: v for k, v in result.items() if k not in ("run_id", "created_at", "timings")}
    for entry in d["robustness"]["results"] + d["privacy"]["attacks"]:
        entry.pop("seconds", None)
    return d


def test_a_file_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path / "run")
    first = folder.write_text("result", "result.json", "first\n")
    assert first == tmp_path / "run" / "result.json" and first.read_text() == "first\n"

    def crash_halfway(f: BinaryIO) -> None:
        f.write(b"sec")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        folder.write("result", "result.json", crash_halfway)
    assert first.read_text() == "first\n" and listing(tmp_path / "run") == ["result.json"]  # no temporary file
    with pytest.raises(OSError, match="disk full"):
        folder.write("report", "report.html", crash_halfway)
    assert listing(tmp_path / "run") == ["result.json"] and list(folder.files) == ["result"]

    folder.write_text("report", "report.html", "line\r\nend é")  # bytes as given: UTF-8, line ends untouched
    assert (tmp_path / "run" / "report.html").read_bytes() == "line\r\nend é".encode()
    assert list(folder.files) == ["result", "report"]
    plain = tmp_path / "plain"
    plain.write_text("x")  # a file created as `open` creates one: the same permissions (the umask applies)
    assert os.stat(first).st_mode == os.stat(plain).st_mode


def test_workflows_without_an_out_folder_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path
) -> None:
    """An audit, a comparison and a one-run DP audit, called as pure workflows from an empty working folder with a
    temporary folder of their own: afterwards both are still empty and no run store exists."""
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    home_before = listing(isolated_home)
    config = AuditConfig(**SMALL)  # type: ignore[arg-type]

    audit = run_audit(MODEL, config=config)
    assert audit.result.robustness is not None and audit.result.robustness.adversarial_file is None
    assert audit.robustness_run is not None and audit.checkpoint is None and audit.files == {} and not audit.reused
    compared = run_compare(MODEL, [MODEL], config=config)  # reference-model signals: a temporary cache, removed
    assert list(compared.audits) == ["golden-digits-mlp", "golden-digits-mlp-2"]
    assert compared.files == {} and all(m.out_dir is None for m in compared.comparison.models)
    dp = run_dp_audit("standard", data="digits", config={"epochs": 1}, canaries=20)
    assert dp.canaries == 20

    torch_cache = [p for p in listing(tmp) if p.startswith("torchinductor_")]  # torch's own, made on importing dynamo
    assert listing(work) == [] and listing(tmp) == torch_cache
    assert listing(isolated_home) == home_before and not default_store_path().exists()


def test_writing_an_outcome_gives_the_audits_files_and_its_run(tmp_path: Path) -> None:
    outcome = run_audit(MODEL, config=AuditConfig(**SMALL))  # type: ignore[arg-type]
    assert outcome.robustness_run is not None and outcome.result.privacy is not None
    store = RunStore(tmp_path / "runs.sqlite")

    written = write_audit(outcome, tmp_path / "out", store=store)
    out = tmp_path / "out"
    assert listing(out) == ["adversarial.npz", "exposed_records.csv", "report.html", "result.json"]
    assert written.files == {
        "adversarial": out / "adversarial.npz",
        "result": out / "result.json",
        "report": out / "report.html",
        "exposed": out / "exposed_records.csv",
    }
    # the result as written names its arrays; the outcome it came from is unchanged
    assert written.result.robustness is not None and written.result.robustness.adversarial_file == "adversarial.npz"
    assert outcome.result.robustness is not None and outcome.result.robustness.adversarial_file is None
    assert AuditResult.load(out / "result.json").to_dict() == written.result.to_dict()
    saved = np.load(out / "adversarial.npz", allow_pickle=False)
    arrays = outcome.robustness_run.npz_arrays()
    assert sorted(saved.files) == sorted(arrays) and all(np.array_equal(saved[k], arrays[k]) for k in arrays)
    assert len((out / "exposed_records.csv").read_text().splitlines()) == 1 + len(
        outcome.result.privacy.exposed_records
    )
    stored = store.get(written.result.run_id)
    assert stored.result is not None and stored.result.to_dict() == written.result.to_dict()
    assert sorted(a.name for a in stored.artifacts) == sorted(written.files)
    assert all(store.verify_artifacts(written.result.run_id).values())

    # no folder and no store: nothing to write
    assert write_audit(outcome, None).files == {} and len(store.list_runs()) == 1


def test_the_cli_and_the_python_api_write_the_same_numbers(tmp_path: Path) -> None:
    main(
        ["audit", "--model", str(MODEL), "--eps", "0.1", "--samples", "30", "--mia-samples", "40", "--preset", "quick",
         "--seed", "2", "--no-store", "--quiet", "--out", str(tmp_path / "cli")]
    )  # fmt: skip
    returned = modelsec.audit(MODEL, out=tmp_path / "api", **SMALL)  # type: ignore[arg-type]
    cli = json.loads((tmp_path / "cli" / "result.json").read_text())
    api = json.loads((tmp_path / "api" / "result.json").read_text())
    assert numbers(cli) == numbers(api) == numbers(returned.to_dict())
    assert listing(tmp_path / "cli") == listing(tmp_path / "api")  # and no checkpoint left in either
