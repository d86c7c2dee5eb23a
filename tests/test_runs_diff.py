"""``modelsec runs diff A B`` (issue 17): two audits side by side, and what changed significantly.

The pure diff (:func:`modelsec.audits.diff.diff_runs`) runs on hand-built run folders whose ``adversarial.npz``
differ by a known number of flipped records (the builders of ``tests/test_gate_baseline.py``), so McNemar's ``b``,
``c`` and two-sided p-value are known exactly; runs that do not pair get no test and say why. The command line runs
on those folders and on two small digits audits (FGSM and PGD, the flips counted from their two files).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from modelsec.audits.diff import diff_runs, load_run
from modelsec.core.errors import ConfigError
from modelsec.results.audit import AuditResult
from modelsec.stats.intervals import Interval
from modelsec.stats.mcnemar import mcnemar_exact
from modelsec.store import RunStore
from tests.cli_runner import assert_user_error, modelsec
from tests.report_fixtures import make_audit_result
from tests.test_gate_baseline import BASE, N, _arrays, _audit, _flipped, digits_model  # noqa: F401 (a fixture)


def _folder(folder: Path, flags: np.ndarray, *, seed: int = 0, result: AuditResult | None = None) -> Path:
    """A run folder as ``modelsec audit`` writes it: ``result`` (the fixture's by default) in result.json, naming
    the adversarial.npz beside it whose flags at eps 0.1 are ``flags`` (every record robust at 0.03)."""
    folder.mkdir(parents=True)
    np.savez_compressed(folder / "adversarial.npz", **_arrays(flags, seed=seed))  # type: ignore[arg-type]
    (result or make_audit_result()).save(folder / "result.json")
    return folder / "result.json"


def _diff(tmp_path: Path, b: int, c: int, significance: float = 0.05):  # type: ignore[no-untyped-def]
    a_run = load_run(_folder(tmp_path / "a", BASE))
    b_run = load_run(_folder(tmp_path / "b", _flipped(b, c)))
    return diff_runs(a_run, b_run, significance=significance)


# -- the pure diff --------------------------------------------------------------------------------------------------


def test_flipped_records_give_the_exact_mcnemar_test(tmp_path: Path) -> None:
    d = _diff(tmp_path, 10, 2)
    assert [r.eps for r in d.robustness] == [0.03, 0.1]
    at_003, at_01 = d.robustness
    assert (at_01.records, at_01.b, at_01.c) == (N, 10, 2)
    assert at_01.p_value == 2 * 79 / 4096  # two-sided: twice P(X >= 10), X ~ Bin(12, 1/2)
    assert at_01.significant and at_01.note is None
    assert (at_003.b, at_003.c, at_003.p_value, at_003.significant) == (0, 0, 1.0, False)  # all robust in both
    result = make_audit_result()
    assert result.robustness is not None
    assert at_01.robust_accuracy_a == at_01.robust_accuracy_b == result.robustness.robust_accuracy["0.1"]
    assert at_01.ci_a == result.robustness.robust_ci["0.1"]
    assert d.changed and not d.clean_changed and not d.notes
    assert d.clean_accuracy_a == d.clean_accuracy_b == result.robustness.clean_accuracy


def test_the_significance_decides(tmp_path: Path) -> None:
    d = _diff(tmp_path, 10, 2, significance=0.01)
    assert d.robustness[1].p_value == 2 * 79 / 4096 and not d.robustness[1].significant
    assert not d.changed and d.significance == 0.01
    with pytest.raises(ConfigError, match="significance"):
        diff_runs(load_run(tmp_path / "a"), load_run(tmp_path / "b"), significance=0.0)


def test_the_test_has_no_direction(tmp_path: Path) -> None:
    forward = _diff(tmp_path / "f", 2, 10).robustness[1]
    backward = diff_runs(load_run(tmp_path / "f" / "b"), load_run(tmp_path / "f" / "a")).robustness[1]
    assert (forward.b, forward.c, backward.b, backward.c) == (2, 10, 10, 2)
    assert forward.p_value == backward.p_value == mcnemar_exact(10, 2) == 2 * 79 / 4096
    assert _diff(tmp_path / "n", 2, 1).robustness[1].p_value == 1.0  # 2 * P(X <= 1), X ~ Bin(3, 1/2) = 2 * 4/8


def test_runs_on_other_records_get_no_test(tmp_path: Path) -> None:
    a = load_run(_folder(tmp_path / "a", BASE))
    other = load_run(_folder(tmp_path / "o", BASE, seed=1))
    d = diff_runs(a, other)
    assert all(r.p_value is None and r.b is None and not r.significant for r in d.robustness)
    assert all(r.note == "not paired" for r in d.robustness)
    assert d.notes == ["no McNemar test: the two runs attacked other records (their inputs or labels differ)"]
    assert d.robustness[1].robust_accuracy_a is not None  # the numbers are still shown


def test_runs_without_their_flags_get_no_test(tmp_path: Path) -> None:
    a = load_run(_folder(tmp_path / "a", BASE))
    _folder(tmp_path / "gone", BASE)
    (tmp_path / "gone" / "adversarial.npz").unlink()
    d = diff_runs(a, load_run(tmp_path / "gone"))
    assert d.notes and "run B" in d.notes[0] and "adversarial.npz is missing" in d.notes[0]
    assert all(r.p_value is None for r in d.robustness)
    bare = make_audit_result()
    assert bare.robustness is not None
    bare = dataclasses.replace(bare, robustness=dataclasses.replace(bare.robustness, adversarial_file=None))
    bare.save(tmp_path / "bare.json")
    d = diff_runs(load_run(tmp_path / "bare.json"), a)
    assert d.notes[0].startswith("no McNemar test: run A") and d.notes[0].endswith("has no adversarial.npz")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "adversarial.npz").write_bytes(b"not a zip")
    make_audit_result().save(tmp_path / "junk" / "result.json")
    assert "not a readable adversarial.npz" in diff_runs(a, load_run(tmp_path / "junk")).notes[0]


def test_an_eps_one_run_did_not_attack_at(tmp_path: Path) -> None:
    a = load_run(_folder(tmp_path / "a", BASE))
    arrays = _arrays(BASE)
    arrays["eps"] = np.array([0.03])
    del arrays["x_adv_1"], arrays["robust_1"], arrays["pred_adv_1"]
    one = make_audit_result()
    assert one.robustness is not None
    rob = one.robustness
    one = dataclasses.replace(
        one,
        robustness=dataclasses.replace(
            rob, robust_accuracy={"0.03": rob.robust_accuracy["0.03"]}, robust_ci={"0.03": rob.robust_ci["0.03"]}
        ),
    )
    (tmp_path / "one").mkdir()
    np.savez_compressed(tmp_path / "one" / "adversarial.npz", **arrays)  # type: ignore[arg-type]
    one.save(tmp_path / "one" / "result.json")
    d = diff_runs(a, load_run(tmp_path / "one"))
    at_003, at_01 = d.robustness
    assert (at_003.b, at_003.c, at_003.p_value) == (0, 0, 1.0)
    assert at_01.robust_accuracy_b is None and at_01.p_value is None
    assert at_01.note == "not paired: run B did not attack at eps=0.1"


def test_membership_changes_when_the_intervals_do_not_overlap(tmp_path: Path) -> None:
    result = make_audit_result()
    assert result.privacy is not None
    loss, lira = result.privacy.attacks
    leakier = dataclasses.replace(
        lira, auc=lira.auc + 0.05, auc_ci=Interval(lira.auc_ci.low + 0.05, lira.auc_ci.high + 0.05, 0.95, "bootstrap")
    )  # the fixture's interval is +-0.009 wide: shifted by 0.05 they are apart
    nudged = dataclasses.replace(
        loss, auc=loss.auc + 0.01, auc_ci=Interval(loss.auc_ci.low + 0.01, loss.auc_ci.high + 0.01, 0.95, "bootstrap")
    )  # +-0.011: shifted by 0.01 they overlap
    b_result = dataclasses.replace(
        result, run_id="b", privacy=dataclasses.replace(result.privacy, attacks=[nudged, leakier])
    )
    d = diff_runs(load_run(_folder(tmp_path / "a", BASE)), load_run(_folder(tmp_path / "b", BASE, result=b_result)))
    assert [(m.attack, m.changed) for m in d.membership] == [("loss-threshold", False), ("lira", True)]
    m = d.membership[1]
    assert (m.auc_a, m.auc_b) == (lira.auc, leakier.auc)
    assert m.tpr_a == m.tpr_b == lira.tpr_at_fpr["0.001"] and m.tpr_ci_a == lira.tpr_ci["0.001"]
    assert d.changed and not any(r.significant for r in d.robustness)  # nothing flipped
    # an attack only one run ran: shown, never "changed"
    only_a = dataclasses.replace(b_result, run_id="c", privacy=dataclasses.replace(result.privacy, attacks=[loss]))
    d = diff_runs(load_run(tmp_path / "a"), load_run(_folder(tmp_path / "c", BASE, result=only_a)))
    assert [(m.attack, m.auc_b, m.changed) for m in d.membership][1] == ("lira", None, False)


def test_the_diff_round_trips_to_json(tmp_path: Path) -> None:
    d = _diff(tmp_path, 10, 2)
    data = json.loads(json.dumps(d.to_dict()))
    assert data["changed"] is True and data["significance"] == 0.05
    assert data["robustness"][1]["b"] == 10 and data["robustness"][1]["c"] == 2
    assert data["robustness"][1]["ci_a"]["low"] == d.robustness[1].ci_a.low


def test_runs_by_id_in_the_store(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    ids = []
    for name, flags in (("a", BASE), ("b", _flipped(3, 0))):
        result = dataclasses.replace(make_audit_result(), run_id=f"20250114-0930{name}")
        _folder(tmp_path / name, flags, result=result)
        files = {"adversarial": tmp_path / name / "adversarial.npz", "result": tmp_path / name / "result.json"}
        ids.append(store.record_audit(result, out_dir=str(tmp_path / name), artifacts=files))
    d = diff_runs(load_run(ids[0], store), load_run(ids[1], store))
    assert (d.run_id_a, d.run_id_b) == tuple(ids)
    assert (d.robustness[1].b, d.robustness[1].c, d.robustness[1].p_value) == (3, 0, 2 / 8)
    with pytest.raises(ConfigError, match="no run 'nope'"):
        load_run("nope", store)
    with pytest.raises(ConfigError, match="no run store"):
        load_run("20250114")


# -- the command line -----------------------------------------------------------------------------------------------


def test_cli_on_hand_built_runs(tmp_path: Path) -> None:
    _diff(tmp_path, 10, 2)
    proc = modelsec("runs", "diff", str(tmp_path / "a"), str(tmp_path / "b" / "result.json"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    row = next(line for line in lines if line.split()[:1] == ["0.1"])
    assert f" 10  2  {2 * 79 / 4096:.3g}  significant" in row
    assert "no significant change" in next(line for line in lines if line.split()[:1] == ["0.03"])
    assert "lira" in proc.stdout and "conservative, not a test" in proc.stdout
    assert lines[-1] == "changed"
    proc = modelsec("runs", "diff", str(tmp_path / "a"), str(tmp_path / "b"), "--significance", "0.01", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["robustness"][1]["b"], data["robustness"][1]["significant"], data["changed"]) == (10, False, False)


def test_cli_user_errors(tmp_path: Path) -> None:
    _folder(tmp_path / "a", BASE)
    store = tmp_path / "runs.sqlite"
    assert_user_error(modelsec("runs", "diff", str(tmp_path / "a"), "20991231", "--store", str(store)), "20991231")
    assert not store.exists()  # reading never creates a store
    assert_user_error(modelsec("runs", "diff", str(tmp_path / "a"), str(tmp_path / "none.json")), "cannot read")
    proc = modelsec("runs", "diff", str(tmp_path / "a"), str(tmp_path / "a"), "--significance", "0")
    assert proc.returncode == 2 and "significance" in proc.stderr.lower()


def test_cli_on_two_digits_audits(digits_model: Path, tmp_path: Path) -> None:  # noqa: F811 (the fixture)
    for attack in ("fgsm", "pgd"):
        proc = _audit(digits_model, tmp_path / attack, attack)
        assert proc.returncode == 0, proc.stderr
    proc = modelsec("runs", "diff", str(tmp_path / "fgsm"), str(tmp_path / "pgd"), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    before = np.load(tmp_path / "fgsm" / "adversarial.npz")["robust_0"].astype(bool)
    now = np.load(tmp_path / "pgd" / "adversarial.npz")["robust_0"].astype(bool)
    b, c = int((before & ~now).sum()), int((~before & now).sum())
    (row,) = data["robustness"]
    assert (row["eps"], row["records"], row["b"], row["c"]) == (0.1, before.size, b, c)
    assert row["p_value"] == mcnemar_exact(b, c) and row["significant"] == (mcnemar_exact(b, c) < 0.05)
    fgsm, pgd = (AuditResult.load(tmp_path / a / "result.json") for a in ("fgsm", "pgd"))
    assert fgsm.robustness is not None and pgd.robustness is not None
    assert (row["robust_accuracy_a"], row["robust_accuracy_b"]) == (
        fgsm.robustness.robust_accuracy["0.1"],
        pgd.robustness.robust_accuracy["0.1"],
    )
    assert data["clean_accuracy_a"] == data["clean_accuracy_b"] and not data["clean_changed"]  # the same model
    proc = modelsec("runs", "diff", str(tmp_path / "fgsm"), str(tmp_path / "pgd"))
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.split()[:1] == ["0.1"])
    assert f"  {b}  {c}  {mcnemar_exact(b, c):.3g}  " in line
    assert (
        f"{fgsm.robustness.robust_accuracy['0.1']:.1%}" in line
        and f"{pgd.robustness.robust_accuracy['0.1']:.1%}" in line
    )
    assert {m["attack"] for m in data["membership"]} == {
        a.attack for a in (fgsm.privacy.attacks if fgsm.privacy else [])
    }
