"""The baseline rule of the policy gate (issue 17): ``max_robust_accuracy_drop`` compares an audit's per-record
robust flags with a baseline run's by McNemar's exact test.

McNemar's p-values are checked against hand-computed binomial sums and scipy's ``binomtest``; the rule runs on
hand-built ``adversarial.npz`` pairs that differ by a known number of flipped records (no model runs); the command
line runs the digits MLP audit with FGSM as the baseline, then again with FGSM (nothing flips) and with PGD (the
flips counted from the two files).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from modelsec.audits.gate import (
    Gate,
    MaxRobustAccuracyDrop,
    check_gate_config,
    evaluate_gate,
    load_baseline,
    load_paired_records,
    paired_records,
    parse_gate,
)
from modelsec.core.errors import ConfigError
from modelsec.results.audit import AuditResult
from modelsec.results.schema import validate_result_dict
from modelsec.stats.mcnemar import mcnemar_exact
from modelsec.store import RunStore
from tests.cli_runner import assert_user_error, modelsec
from tests.report_fixtures import make_audit_result
from tests.test_gate import digits_model as digits_model  # the digits MLP the gate's CLI tests audit

N = 200  # records per hand-built run
EPS = (0.03, 0.1)


# -- McNemar's exact test -------------------------------------------------------------------------------------------


def test_mcnemar_against_hand_computed_values() -> None:
    # b = 10, c = 2: P(X >= 10), X ~ Bin(12, 1/2) = (C(12,10) + C(12,11) + C(12,12)) / 2^12 = (66 + 12 + 1) / 4096
    assert mcnemar_exact(10, 2, "greater") == 79 / 4096
    assert mcnemar_exact(10, 2) == 2 * 79 / 4096
    assert mcnemar_exact(10, 2, "less") == (4096 - 12 - 1) / 4096  # P(X <= 10) = 1 - P(X = 11) - P(X = 12)
    assert mcnemar_exact(10, 0, "greater") == 1 / 1024
    assert mcnemar_exact(0, 0) == mcnemar_exact(0, 0, "greater") == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(2, 10, "greater") == (4096 - 1 - 12) / 4096  # P(X >= 2) = 1 - P(X = 0) - P(X = 1)


@pytest.mark.parametrize("b", [0, 1, 3, 7, 20, 55])
@pytest.mark.parametrize("c", [0, 2, 9, 40])
def test_mcnemar_matches_scipys_binomtest(b: int, c: int) -> None:
    from scipy.stats import binomtest

    if b + c == 0:
        return
    for alternative in ("two-sided", "greater", "less"):
        expected = binomtest(b, b + c, 0.5, alternative=alternative).pvalue
        assert mcnemar_exact(b, c, alternative) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_mcnemar_refuses_what_is_not_a_count() -> None:
    with pytest.raises(ValueError, match="counts"):
        mcnemar_exact(-1, 2)
    with pytest.raises(TypeError):
        mcnemar_exact(1.5, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alternative"):
        mcnemar_exact(1, 2, "fell")


# -- the rule on hand-built runs ------------------------------------------------------------------------------------


def _arrays(robust_at_01: np.ndarray, *, seed: int = 0) -> dict[str, np.ndarray]:
    """The robustness arrays of an ``adversarial.npz`` over ``N`` fixed records: the flags at eps 0.1 as given,
    every record robust at 0.03."""
    rng = np.random.default_rng(seed)
    x = rng.random((N, 8), dtype=np.float32)
    y = rng.integers(0, 3, N)
    arrays: dict[str, np.ndarray] = {"x": x, "y": y, "pred_clean": y, "eps": np.array(EPS)}
    for i, flags in enumerate((np.ones(N, dtype=bool), robust_at_01)):
        arrays[f"x_adv_{i}"], arrays[f"robust_{i}"], arrays[f"pred_adv_{i}"] = x, flags, y
    return arrays


def _run(folder: Path, robust_at_01: np.ndarray, *, seed: int = 0) -> Path:
    """A run folder as ``modelsec audit`` writes it: result.json naming adversarial.npz beside it."""
    folder.mkdir(parents=True)
    np.savez_compressed(folder / "adversarial.npz", **_arrays(robust_at_01, seed=seed))  # type: ignore[arg-type]
    make_audit_result().save(folder / "result.json")
    return folder / "result.json"


BASE = np.arange(N) < 120  # 60% robust at eps 0.1


def _flipped(b: int, c: int) -> np.ndarray:
    """BASE with ``b`` robust records made non-robust and ``c`` non-robust ones made robust."""
    flags = BASE.copy()
    flags[:b] = False
    flags[120 : 120 + c] = True
    return flags


def _compare(tmp_path: Path, b: int, c: int, rule: MaxRobustAccuracyDrop):  # type: ignore[no-untyped-def]
    baseline = load_baseline(_run(tmp_path / "base", BASE))
    records = paired_records(_arrays(_flipped(b, c)))
    gate = Gate((rule,))
    check_gate_config(gate, EPS, baseline=baseline)
    outcome = evaluate_gate(gate, make_audit_result(), records=records, baseline=baseline)
    assert outcome.passed == outcome.rules[0].passed
    return outcome.rules[0]


def test_nothing_flipped_passes(tmp_path: Path) -> None:
    rule = _compare(tmp_path, 0, 0, MaxRobustAccuracyDrop(0.1))
    assert rule.passed and rule.measured == 0.0
    assert rule.baseline is not None
    assert (rule.baseline.b, rule.baseline.c, rule.baseline.p_value, rule.baseline.records) == (0, 0, 1.0, N)
    assert rule.baseline.robust_accuracy == rule.baseline.baseline_robust_accuracy == 0.6


def test_enough_flipped_records_fail(tmp_path: Path) -> None:
    rule = _compare(tmp_path, 10, 0, MaxRobustAccuracyDrop(0.1, significance=0.05))
    assert not rule.passed
    assert rule.baseline is not None and (rule.baseline.b, rule.baseline.c) == (10, 0)
    assert rule.baseline.p_value == 1 / 1024
    assert rule.measured == pytest.approx(0.05)  # 120 -> 110 of 200
    assert (rule.baseline.baseline_robust_accuracy, rule.baseline.robust_accuracy) == (0.6, 0.55)
    assert "10 records robust only in the baseline, 0 only now, of 200" in rule.message


def test_the_significance_decides_on_the_hand_computed_p_value(tmp_path: Path) -> None:
    failed = _compare(tmp_path / "a", 10, 2, MaxRobustAccuracyDrop(0.1, significance=0.05))
    assert not failed.passed and failed.baseline is not None and failed.baseline.p_value == 79 / 4096
    assert failed.measured == pytest.approx(0.04)
    assert _compare(tmp_path / "b", 10, 2, MaxRobustAccuracyDrop(0.1, significance=0.01)).passed
    assert _compare(tmp_path / "c", 2, 1, MaxRobustAccuracyDrop(0.1)).passed  # p = 0.5: not significant


def test_max_value_is_a_minimum_effect_size(tmp_path: Path) -> None:
    assert _compare(tmp_path / "a", 10, 0, MaxRobustAccuracyDrop(0.1, max_value=0.05)).passed  # a 5% fall: allowed
    assert not _compare(tmp_path / "b", 12, 0, MaxRobustAccuracyDrop(0.1, max_value=0.05)).passed  # 6%


def test_an_improvement_passes(tmp_path: Path) -> None:
    rule = _compare(tmp_path, 0, 30, MaxRobustAccuracyDrop(0.1))
    assert rule.passed and rule.baseline is not None and rule.baseline.p_value == 1.0  # one-sided: only a fall
    assert rule.measured == pytest.approx(-0.15)


def test_other_records_are_refused(tmp_path: Path) -> None:
    baseline = load_baseline(_run(tmp_path / "base", BASE))
    other = paired_records(_arrays(BASE, seed=1))
    with pytest.raises(ConfigError, match="other records"):
        evaluate_gate(Gate((MaxRobustAccuracyDrop(0.1),)), make_audit_result(), records=other, baseline=baseline)
    relabelled = _arrays(BASE)
    relabelled["y"] = (relabelled["y"] + 1) % 3
    with pytest.raises(ConfigError, match="other records"):
        evaluate_gate(
            Gate((MaxRobustAccuracyDrop(0.1),)), make_audit_result(), records=paired_records(relabelled),
            baseline=baseline,
        )  # fmt: skip


def test_a_baseline_rule_without_a_baseline_is_refused_before_any_work() -> None:
    gate = parse_gate("[robustness]\nmax_robust_accuracy_drop = { eps = 0.1, significance = 0.05 }\n")
    assert gate.needs_baseline and gate.eps == [0.1]
    with pytest.raises(ConfigError, match="give --baseline"):
        check_gate_config(gate, EPS)
    with pytest.raises(ConfigError, match="give --baseline"):
        evaluate_gate(gate, make_audit_result())
    with pytest.raises(ConfigError, match=re.escape("does not run eps=0.1")):
        check_gate_config(gate, (0.03,), baseline=_baseline_stub())


def _baseline_stub():  # type: ignore[no-untyped-def]
    from modelsec.audits.gate import Baseline

    return Baseline(make_audit_result(), paired_records(_arrays(BASE)), "stub")


def test_a_baseline_without_the_rules_eps_is_refused(tmp_path: Path) -> None:
    gate = Gate((MaxRobustAccuracyDrop(0.3),))
    with pytest.raises(ConfigError, match=re.escape("the baseline stub did not run eps=0.3")):
        check_gate_config(gate, (0.3,), baseline=_baseline_stub())


def test_missing_or_unreadable_baseline_files(tmp_path: Path) -> None:
    result_json = _run(tmp_path / "base", BASE)
    (tmp_path / "base" / "adversarial.npz").unlink()
    with pytest.raises(ConfigError, match=re.escape("adversarial.npz is missing")):
        load_baseline(result_json)
    no_arrays = make_audit_result()
    assert no_arrays.robustness is not None
    dataclasses.replace(no_arrays, robustness=dataclasses.replace(no_arrays.robustness, adversarial_file=None)).save(
        tmp_path / "bare.json"
    )
    with pytest.raises(ConfigError, match=re.escape("has no adversarial.npz")):
        load_baseline(tmp_path / "bare.json")
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_baseline(tmp_path / "absent.json")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match=re.escape("not a readable adversarial.npz")):
        load_paired_records(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", x=np.zeros((2, 2)), y=np.zeros(2), eps=np.array([0.1]))
    with pytest.raises(ConfigError, match="no array 'robust_0'"):
        load_paired_records(tmp_path / "partial.npz")
    with pytest.raises(ConfigError, match="no run store"):
        load_baseline("20250114-0930", RunStore(tmp_path / "none.sqlite", readonly=True))


def test_a_baseline_by_run_id_in_the_store(tmp_path: Path) -> None:
    result_json = _run(tmp_path / "base", BASE)
    store = RunStore(tmp_path / "runs.sqlite")
    result = AuditResult.load(result_json)
    files = {"adversarial": tmp_path / "base" / "adversarial.npz", "result": result_json}
    run_id = store.record_audit(result, out_dir=str(tmp_path / "base"), artifacts=files)
    baseline = load_baseline(run_id[:12], store)
    from_file = load_baseline(result_json).records
    assert baseline.result == result and baseline.records.records == from_file.records
    assert all(np.array_equal(a, b) for a, b in zip(baseline.records.robust, from_file.robust, strict=True))
    assert load_baseline(tmp_path / "base", store).records.records == from_file.records  # the run's folder
    with pytest.raises(ConfigError, match="--baseline nope"):
        load_baseline("nope", store)


def test_parsing_the_rule() -> None:
    gate = parse_gate(
        "[robustness]\nmax_robust_accuracy_drop = [{ eps = 0.1 }, { eps = 0.03, significance = 0.01, "
        "max_value = 0.02 }]\n"
    )
    assert gate.rules == (MaxRobustAccuracyDrop(0.1, 0.05, 0.0), MaxRobustAccuracyDrop(0.03, 0.01, 0.02))
    for text, message in [
        ("{ eps = 0.1, value = 0.5 }", "unknown key value"),
        ("{ significance = 0.05 }", "missing key eps"),
        ("{ eps = 0.1, significance = 0 }", "significance must be in (0, 1]"),
        ("{ eps = 0.1, max_value = 2 }", "max_value must be in [0, 1]"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
            parse_gate(f"[robustness]\nmax_robust_accuracy_drop = {text}\n")


def test_the_comparison_round_trips_through_result_json(tmp_path: Path) -> None:
    baseline = load_baseline(_run(tmp_path / "base", BASE))
    gate = Gate((MaxRobustAccuracyDrop(0.1),))
    outcome = evaluate_gate(
        gate, make_audit_result(), records=paired_records(_arrays(_flipped(10, 2))), baseline=baseline
    )
    gated = dataclasses.replace(make_audit_result(), gate=outcome)
    d = json.loads(gated.to_json())
    validate_result_dict(d)
    assert d["gate"]["rules"][0]["baseline"]["b"] == 10 and d["gate"]["rules"][0]["baseline"]["c"] == 2
    assert AuditResult.from_dict(d) == gated


# -- the command line -----------------------------------------------------------------------------------------------

POLICY = "[robustness]\nmax_robust_accuracy_drop = { eps = 0.1, significance = 0.05 }\n"


def _audit(model: Path, out: Path, attack: str, *args: str):  # type: ignore[no-untyped-def]
    return modelsec(
        "audit", "--model", str(model), "--data", "digits", "--eps", "0.1", "--samples", "60", "--mia-samples", "60",
        "--attacks", attack, "--out", str(out), "--no-store", "--quiet", *args,
    )  # fmt: skip


def test_cli_baseline_rule(digits_model: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    base = tmp_path / "fgsm"
    proc = _audit(digits_model, base, "fgsm")
    assert proc.returncode == 0, proc.stderr

    # the same audit again: nothing flips
    proc = _audit(
        digits_model, tmp_path / "again", "fgsm", "--policy", str(policy), "--baseline", str(base / "result.json")
    )
    assert proc.returncode == 0, proc.stderr
    assert "PASS robustness.max_robust_accuracy_drop(eps=0.1)" in proc.stdout
    gate = AuditResult.load(tmp_path / "again" / "result.json").gate
    assert gate is not None and gate.rules[0].baseline is not None
    assert (gate.rules[0].baseline.b, gate.rules[0].baseline.c, gate.rules[0].baseline.p_value) == (0, 0, 1.0)

    # PGD breaks more records than FGSM: the flips counted from the two files decide
    proc = _audit(
        digits_model, tmp_path / "pgd", "pgd", "--policy", str(policy), "--baseline", str(base / "result.json")
    )
    before = np.load(base / "adversarial.npz")["robust_0"].astype(bool)
    now = np.load(tmp_path / "pgd" / "adversarial.npz")["robust_0"].astype(bool)
    b, c = int((before & ~now).sum()), int((~before & now).sum())
    assert b > c  # PGD is the stronger attack
    p = mcnemar_exact(b, c, "greater")
    gate = AuditResult.load(tmp_path / "pgd" / "result.json").gate
    assert gate is not None and gate.rules[0].baseline is not None
    assert (gate.rules[0].baseline.b, gate.rules[0].baseline.c, gate.rules[0].baseline.p_value) == (b, c, p)
    assert gate.passed == (p >= 0.05)
    assert proc.returncode == (0 if p >= 0.05 else 4), proc.stderr
    # at significance 1 any fall fails (p < 1 once b >= 1): exit code 4, the files written
    strict = tmp_path / "strict.toml"
    strict.write_text(POLICY.replace("0.05", "1.0"))
    proc = _audit(
        digits_model, tmp_path / "pgd1", "pgd", "--policy", str(strict), "--baseline", str(base / "result.json")
    )
    assert proc.returncode == 4, proc.stderr
    assert "FAIL robustness.max_robust_accuracy_drop(eps=0.1)" in proc.stdout
    assert f"{b} records robust only in the baseline, {c} only now, of {before.size}" in proc.stdout
    assert (tmp_path / "pgd1" / "report.html").exists()


def test_cli_baseline_errors(digits_model: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    out = tmp_path / "o"
    # a baseline rule without --baseline, --baseline without --policy: before any work
    assert_user_error(_audit(digits_model, out, "fgsm", "--policy", str(policy)), "give --baseline")
    assert_user_error(_audit(digits_model, out, "fgsm", "--baseline", "x/result.json"), "--baseline needs --policy")
    assert_user_error(
        _audit(digits_model, out, "fgsm", "--policy", str(policy), "--baseline", str(tmp_path / "none.json")),
        "cannot read the file",
    )
    assert_user_error(
        _audit(digits_model, out, "fgsm", "--policy", str(policy), "--baseline", "20991231-0000"), "no run store"
    )
    assert not out.exists()
    # a baseline whose adversarial.npz is gone: before any work
    base = tmp_path / "base"
    _run(base, BASE)
    (base / "adversarial.npz").unlink()
    proc = _audit(digits_model, out, "fgsm", "--policy", str(policy), "--baseline", str(base / "result.json"))
    assert_user_error(proc, "adversarial.npz is missing")
    assert not out.exists()
    # a baseline on other records (the hand-built one): after the audit, its files written
    _run(tmp_path / "other", BASE)
    proc = _audit(
        digits_model, out, "fgsm", "--policy", str(policy), "--baseline", str(tmp_path / "other" / "result.json")
    )
    assert_user_error(proc, "attacked other records")
    assert (out / "result.json").exists()


def test_the_python_api_takes_a_baseline(digits_model: Path, tmp_path: Path) -> None:
    """``modelsec.audit(..., policy=FILE, baseline=result.json)``: the same rule as ``--baseline``; a baseline
    without a policy, and a baseline rule without a baseline, are refused before any work."""
    import modelsec as api

    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    options = dict(eps=(0.1,), samples=24, mia_samples=60, attacks=("fgsm",))
    api.audit(str(digits_model), "digits", out=tmp_path / "base", **options)  # type: ignore[arg-type]
    result = api.audit(
        str(digits_model), "digits", out=tmp_path / "o", policy=policy, baseline=tmp_path / "base" / "result.json",
        **options,  # type: ignore[arg-type]
    )  # fmt: skip
    assert result.gate is not None and result.gate.passed
    assert result.gate.rules[0].baseline is not None and result.gate.rules[0].baseline.records == 24
    with pytest.raises(ConfigError, match="needs a policy"):
        api.audit(str(digits_model), "digits", out=tmp_path / "p", baseline=tmp_path / "base" / "result.json")
    with pytest.raises(ConfigError, match="give --baseline"):
        api.audit(str(digits_model), "digits", out=tmp_path / "p", policy=policy, **options)  # type: ignore[arg-type]
    assert not (tmp_path / "p").exists()


def test_the_readme_baseline_rule_parses() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Use in CI") : readme.index("## Python API")]
    start = section.index("```toml\n", section.index("--baseline RUN_ID|result.json")) + 8
    gate = parse_gate(section[start : section.index("```", start)])
    assert gate.rules == (MaxRobustAccuracyDrop(0.1, 0.05, 0.02),)


def test_cli_baseline_by_run_id(digits_model: Path, tmp_path: Path) -> None:
    """``--baseline RUN_ID``: looked up in the run store (``--store``), even with ``--no-store``, which only skips
    recording this run."""
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    store = tmp_path / "runs.sqlite"
    proc = modelsec(
        "audit", "--model", str(digits_model), "--data", "digits", "--eps", "0.1", "--samples", "60",
        "--mia-samples", "60", "--attacks", "fgsm", "--out", str(tmp_path / "base"), "--store", str(store), "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run_id = AuditResult.load(tmp_path / "base" / "result.json").run_id
    proc = _audit(
        digits_model, tmp_path / "o", "fgsm", "--policy", str(policy), "--baseline", run_id, "--store", str(store)
    )
    assert proc.returncode == 0, proc.stderr
    gate = AuditResult.load(tmp_path / "o" / "result.json").gate
    assert gate is not None and gate.rules[0].baseline is not None and gate.rules[0].baseline.baseline == run_id


def test_clean_accuracy_drop_is_mcnemar_on_the_clean_predictions(tmp_path: Path) -> None:
    """``[robustness] max_clean_accuracy_drop``: the same one-sided McNemar test on the paired records' clean
    predictions (pred_clean == y), here 12 records correct in the baseline only and none only now: p = P(X >= 12),
    X ~ B(12, 1/2) = 1 / 4096."""
    from modelsec.audits.gate import MaxCleanAccuracyDrop, parse_gate

    (rule,) = parse_gate("[robustness]\nmax_clean_accuracy_drop = { significance = 0.01 }\n").rules
    assert rule == MaxCleanAccuracyDrop(0.01, 0.0)
    assert parse_gate("[robustness]\nmax_clean_accuracy_drop = {}\n").needs_baseline
    baseline = load_baseline(_run(tmp_path / "base", BASE))  # every record classified correctly
    arrays = _arrays(_flipped(0, 0))
    wrong = arrays["y"].copy()
    wrong[:12] = (wrong[:12] + 1) % 3  # 12 records now misclassified
    arrays["pred_clean"] = wrong
    outcome = rule.compare(paired_records(arrays), baseline)
    assert outcome.baseline is not None
    assert (outcome.baseline.b, outcome.baseline.c, outcome.baseline.eps) == (12, 0, 0.0)
    assert outcome.baseline.p_value == pytest.approx(1 / 4096) and not outcome.passed
    assert outcome.measured == pytest.approx(12 / N)
    # the same clean predictions in both runs: nothing fell
    again = rule.compare(paired_records(_arrays(_flipped(0, 0))), load_baseline(_run(tmp_path / "b2", BASE)))
    assert again.passed and again.baseline is not None and again.baseline.b == 0
    with pytest.raises(ConfigError, match="baseline run: give --baseline"):
        check_gate_config(Gate((rule,)), [0.1])
    check_gate_config(Gate((rule,)), [0.1], baseline=baseline)  # the baseline has its clean predictions
    no_clean = {k: v for k, v in arrays.items() if k != "pred_clean"}
    with pytest.raises(ConfigError, match="pred_clean"):
        rule.compare(paired_records(no_clean), baseline)
