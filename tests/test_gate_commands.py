"""The policy gate beyond ``audit`` (issue 17): the DP-claim rule (``[dp] max_claimed_epsilon``), ``audit-dp
--policy`` and ``compare --policy`` (every model gated, the baseline rules against the comparison's baseline
model), their exit codes, JUnit files and report sections.

The rules are checked on exact values (a result whose model records a known claim, a DP audit of a known claim and
bound); the commands run on tiny models: ``audit-dp`` on a stub training of a known claim (as tests/test_dp_audit.py
does), ``compare`` on a digits MLP, an identical copy of it (so every paired record agrees: McNemar's b = c = 0)
and a DP-SGD model (whose claim its file records).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelsec.audits import dp_audit
from modelsec.audits.gate import (
    Gate,
    MaxClaimedEpsilon,
    MaxEpsilonLowerBound,
    check_dp_audit_gate,
    check_gate_config,
    evaluate_gate,
    parse_gate,
)
from modelsec.core.errors import ConfigError
from modelsec.outputs.junit import junit_xml
from modelsec.results.audit import AuditResult
from modelsec.results.comparison import Comparison
from modelsec.results.dp_audit import DPAuditResult, DPClaim
from modelsec.results.schema import validate_result_dict
from tests.report_fixtures import make_audit_result
from tests.test_dp_audit import blobs, oracle, run_cli
from tests.test_gate import digits_model as digits_model  # the digits MLP the gate's CLI tests audit

RESULT = make_audit_result()  # its model records no DP claim


def _claiming(epsilon: float, delta: float = 1e-5) -> AuditResult:
    return dataclasses.replace(RESULT, model=dataclasses.replace(RESULT.model, dp_epsilon=epsilon, dp_delta=delta))


# -- the DP-claim rule ------------------------------------------------------------------------------------------------


def test_max_claimed_epsilon_parses_and_checks_its_value() -> None:
    gate = parse_gate("[dp]\nmax_claimed_epsilon = { value = 8 }\n")
    assert gate.rules == (MaxClaimedEpsilon(8.0),) and gate.rules[0].name == "dp.max_claimed_epsilon"
    with pytest.raises(ConfigError, match=r"dp.max_claimed_epsilon.value must be in \[0, inf\]"):
        parse_gate("[dp]\nmax_claimed_epsilon = { value = -1 }\n")
    with pytest.raises(ConfigError, match=r"unknown key dp\.max_epsilon"):
        parse_gate("[dp]\nmax_epsilon = { value = 1 }\n")


def test_max_claimed_epsilon_on_the_models_claim() -> None:
    at_most = evaluate_gate(Gate((MaxClaimedEpsilon(3.0),)), _claiming(2.5)).rules[0]
    assert at_most.passed and at_most.measured == 2.5 and at_most.threshold == 3.0
    assert at_most.message == "claimed DP epsilon at delta=1e-05: 2.500, required <= 3.000"
    above = evaluate_gate(Gate((MaxClaimedEpsilon(2.0),)), _claiming(2.5)).rules[0]
    assert not above.passed and above.measured == 2.5
    # no claim: nothing bounds the leakage, so the rule fails; "not measured" is null in result.json
    none = evaluate_gate(Gate((MaxClaimedEpsilon(1e9),)), RESULT)
    assert (
        not none.passed and none.rules[0].measured is None and "no differential-privacy claim" in none.rules[0].message
    )
    gated = dataclasses.replace(RESULT, gate=none)
    d = json.loads(gated.to_json())
    validate_result_dict(d)
    assert d["gate"]["rules"][0]["measured"] is None and "dp_epsilon" not in d["model"]
    assert AuditResult.from_dict(d).gate == none


def test_the_models_claim_round_trips_through_result_json() -> None:
    d = json.loads(_claiming(2.5, 1e-6).to_json())
    validate_result_dict(d)
    assert (d["model"]["dp_epsilon"], d["model"]["dp_delta"]) == (2.5, 1e-6)
    back = AuditResult.from_dict(d)
    assert (back.model.dp_epsilon, back.model.dp_delta) == (2.5, 1e-6)


def _dp_result(claim: DPClaim | None) -> DPAuditResult:
    return dp_audit.one_run_audit(oracle(claim), blobs(300, 1), canaries=100, seed=1)


def test_audit_dp_rules_read_the_claim_and_the_canaries_bound() -> None:
    claim = DPClaim(epsilon=0.5, delta=1e-5, accountant="prv")
    result = _dp_result(claim)
    outcome = evaluate_gate(Gate((MaxEpsilonLowerBound(result.lower_bound), MaxClaimedEpsilon(0.4))), result)
    bound, claimed = outcome.rules
    assert bound.passed and bound.measured == result.lower_bound and "canaries" in bound.message
    assert not claimed.passed and claimed.measured == 0.5
    assert not evaluate_gate(Gate((MaxEpsilonLowerBound(result.lower_bound * 0.99),)), result).passed
    unclaimed = evaluate_gate(Gate((MaxClaimedEpsilon(100.0),)), _dp_result(None))
    assert not unclaimed.passed and unclaimed.rules[0].measured is None


def test_audit_dp_refuses_the_rules_it_cannot_answer() -> None:
    check_dp_audit_gate(
        parse_gate("[privacy]\nmax_epsilon_lower_bound = { value = 1 }\n[dp]\nmax_claimed_epsilon = { value = 1 }\n")
    )
    for text, rule in [
        ("[robustness]\nmin_robust_accuracy = { eps = 0.1, value = 0.5 }\n", "robustness.min_robust_accuracy"),
        ("[privacy]\nmax_auc = { value = 0.6 }\n", "privacy.max_auc"),
        ("[robustness]\nmax_clean_accuracy_drop = { significance = 0.05 }\n", "max_clean_accuracy_drop"),
    ]:
        with pytest.raises(ConfigError, match=f"{rule}.*audit-dp does not measure it"):
            check_dp_audit_gate(parse_gate(text))
    with pytest.raises(ConfigError, match="audit-dp measures no robustness"):
        evaluate_gate(parse_gate("[robustness]\nrequire_resolved_checks = true\n"), _dp_result(None))


def test_a_comparisons_baseline_rules_need_no_baseline_run() -> None:
    gate = parse_gate("[robustness]\nmax_robust_accuracy_drop = { eps = 0.1 }\n")
    with pytest.raises(ConfigError, match="give --baseline"):
        check_gate_config(gate, [0.1])
    check_gate_config(gate, [0.1], in_comparison=True)
    with pytest.raises(ConfigError, match=r"does not run eps=0\.1"):
        check_gate_config(gate, [0.03], in_comparison=True)
    assert gate.without_baseline_rules().rules == ()


def test_junit_has_one_suite_per_compared_model() -> None:
    passed = evaluate_gate(Gate((MaxClaimedEpsilon(3.0),)), _claiming(2.5))
    failed = evaluate_gate(Gate((MaxClaimedEpsilon(3.0),)), RESULT)
    root = ET.fromstring(junit_xml({"base": failed, "dp": passed}).split("\n", 1)[1])
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["modelsec policy: base", "modelsec policy: dp"]
    assert suites["modelsec policy: base"].find("testcase/failure") is not None
    assert suites["modelsec policy: dp"].find("testcase/failure") is None


# -- audit-dp --policy ------------------------------------------------------------------------------------------------


def test_audit_dp_policy_exit_codes_junit_and_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = blobs(900, 0)
    npz = tmp_path / "blobs.npz"
    np.savez(npz, x=data.x, y=data.y)
    claim = DPClaim(epsilon=100.0, delta=1e-5, accountant="prv")  # far above any bound 100 canaries can show
    monkeypatch.setattr(dp_audit, "defense_trainer", lambda defense, config, **kwargs: oracle(claim))
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[dp]\nmax_claimed_epsilon = { value = 8.0 }\n[privacy]\nmax_epsilon_lower_bound = { value = 50 }\n"
    )
    out, junit = tmp_path / "dp", tmp_path / "dp.xml"
    common = ["audit-dp", "--data", str(npz), "--canaries", "100", "--out", str(out)]
    code = run_cli(*common, "--policy", str(policy), "--junit", str(junit))
    printed = capsys.readouterr()
    assert code == 4, printed.err  # the claim holds (exit 3 is not due) but it is larger than the policy allows
    assert "FAIL dp.max_claimed_epsilon: claimed DP epsilon at delta=1e-05: 100.000, required <= 8.000" in printed.out
    assert "PASS privacy.max_epsilon_lower_bound" in printed.out and "policy FAILED: 1 of 2" in printed.err
    saved = DPAuditResult.load(out / "dp_audit.json")
    assert saved.passed and saved.gate is not None and not saved.gate.passed
    assert [r.passed for r in saved.gate.rules] == [False, True]
    assert saved.gate.rules[1].measured == saved.lower_bound
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("2", "1")
    html = (out / "dp_audit.html").read_text(encoding="utf-8")
    assert 'id="policy"' in html and html.index('id="policy"') < html.index('id="numbers"')

    policy.write_text("[dp]\nmax_claimed_epsilon = { value = 100.0 }\n")
    assert run_cli(*common, "--policy", str(policy), "-q") == 0
    assert "PASS dp.max_claimed_epsilon" in capsys.readouterr().out

    # a contradicted claim exits 3 before the policy's 4, the policy's outcome still in the files
    claim = DPClaim(epsilon=0.5, delta=1e-5, accountant="prv")  # below what 100 perfect canaries show
    policy.write_text("[dp]\nmax_claimed_epsilon = { value = 0.1 }\n")
    assert run_cli(*common, "--policy", str(policy), "-q") == 3
    printed = capsys.readouterr()
    assert "FAIL dp.max_claimed_epsilon" in printed.out and "EXCEEDS" in printed.err
    contradicted = DPAuditResult.load(out / "dp_audit.json")
    assert not contradicted.passed and contradicted.gate is not None and not contradicted.gate.passed

    # a rule audit-dp cannot answer, --junit without --policy: user errors before any work
    shutil.rmtree(out)
    policy.write_text("[robustness]\nmin_robust_accuracy = { eps = 0.1, value = 0.5 }\n")
    assert run_cli(*common, "--policy", str(policy)) == 2
    assert "audit-dp does not measure it" in capsys.readouterr().err
    assert run_cli(*common, "--junit", str(junit)) == 2
    assert "--junit needs --policy" in capsys.readouterr().err
    assert not out.exists()


# -- compare --policy -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(digits_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A digits MLP, an identical copy of it, and a DP-SGD MLP (its claim recorded in its file)."""
    pytest.importorskip("opacus")
    import modelsec

    folder = tmp_path_factory.mktemp("models")
    base, copy = folder / "base.safetensors", folder / "copy.safetensors"
    for name in (base, copy):
        shutil.copy(digits_model, name)
        shutil.copy(digits_model.with_name("digits.safetensors.json"), name.with_name(f"{name.name}.json"))
    dp = folder / "dp.safetensors"
    config = {"noise_multiplier": 1.0, "batch_size": 64, "epochs": 2, "seed": 0}
    modelsec.harden("dp-sgd", data="digits", arch="mlp", out=dp, config=config)
    return {"base": base, "copy": copy, "dp": dp}


def _compare(models: dict[str, Path], out: Path, *args: str) -> int:
    return run_cli(
        "compare", str(models["base"]), str(models["copy"]), str(models["dp"]), "--data", "digits", "--eps", "0.1",
        "--samples", "24", "--mia-samples", "60", "--attacks", "fgsm", "--out", str(out), "--no-store", "-q", *args,
    )  # fmt: skip


def test_compare_gates_every_model_against_the_comparisons_baseline(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[robustness]\nmin_robust_accuracy = { eps = 0.1, value = 0.0 }\n"
        "max_robust_accuracy_drop = { eps = 0.1 }\nmax_clean_accuracy_drop = { significance = 0.05 }\n"
        "[dp]\nmax_claimed_epsilon = { value = 1000 }\n"
    )
    out, junit = tmp_path / "compare", tmp_path / "compare.xml"
    code = _compare(models, out, "--policy", str(policy), "--junit", str(junit))
    printed = capsys.readouterr()
    assert code == 4, printed.err  # base and copy claim no DP
    assert "policy FAILED for base: 1 of 2 rules failed" in printed.err
    assert "policy FAILED for copy: 1 of 4 rules failed" in printed.err
    assert "policy passed for dp" in printed.out or "policy FAILED for dp" in printed.err

    comparison = Comparison.load(out / "comparison.json")
    assert comparison.gate_passed is False
    gates = {m.name: m.gate for m in comparison.models}
    assert all(g is not None for g in gates.values())
    base, copy, dp = gates["base"], gates["copy"], gates["dp"]
    assert base is not None and copy is not None and dp is not None
    # the baseline is checked against the rules that need no baseline
    assert [r.rule for r in base.rules] == ["robustness.min_robust_accuracy(eps=0.1)", "dp.max_claimed_epsilon"]
    assert [r.passed for r in base.rules] == [True, False]
    # an identical model: every paired record agrees, nothing fell
    drops = {r.rule: r for r in copy.rules if r.baseline is not None}
    assert set(drops) == {"robustness.max_robust_accuracy_drop(eps=0.1)", "robustness.max_clean_accuracy_drop"}
    for rule in drops.values():
        assert rule.passed and rule.baseline is not None and rule.baseline.baseline == "base"
        assert (rule.baseline.b, rule.baseline.c, rule.baseline.p_value, rule.measured) == (0, 0, 1.0, 0.0)
    # the DP model: its file's claim, and its drops measured against the baseline's own numbers
    dp_result = AuditResult.load(out / "dp" / "result.json")
    card = json.loads(models["dp"].with_name("dp.safetensors.json").read_text(encoding="utf-8"))
    assert dp_result.model.dp_epsilon == pytest.approx(card["guarantees"]["details"]["epsilon"])
    claimed = next(r for r in dp.rules if r.rule == "dp.max_claimed_epsilon")
    assert claimed.passed and claimed.measured == dp_result.model.dp_epsilon
    base_result = AuditResult.load(out / "base" / "result.json")
    assert base_result.robustness is not None and dp_result.robustness is not None
    clean = next(r for r in dp.rules if r.rule == "robustness.max_clean_accuracy_drop")
    assert clean.baseline is not None
    assert clean.baseline.baseline_robust_accuracy == pytest.approx(base_result.robustness.clean_accuracy)
    assert clean.baseline.robust_accuracy == pytest.approx(dp_result.robustness.clean_accuracy)
    assert dp_result.gate == dp  # each model's own result.json holds its outcome

    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [(s.get("name"), s.get("tests")) for s in suites] == [
        ("modelsec policy: base", "2"), ("modelsec policy: copy", "4"), ("modelsec policy: dp", "4")
    ]  # fmt: skip
    html = (out / "comparison.html").read_text(encoding="utf-8")
    assert 'id="policy"' in html and html.index('id="policy"') < html.index('id="models"')
    assert "## Policy: ❌ failed" in (out / "comparison.md").read_text(encoding="utf-8")
    assert 'id="policy"' in (out / "copy" / "report.html").read_text(encoding="utf-8")


def test_compare_policy_user_errors_exit_2_before_any_work(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[robustness]\nmin_robust_accuracy = { eps = 0.03, value = 0.5 }\n")
    out = tmp_path / "compare"
    assert _compare(models, out, "--policy", str(policy)) == 2
    assert "does not run eps=0.03" in capsys.readouterr().err
    assert _compare(models, out, "--junit", str(tmp_path / "j.xml")) == 2
    assert "--junit needs --policy" in capsys.readouterr().err
    assert not out.exists()


def test_the_python_compare_takes_a_policy(models: dict[str, Path], tmp_path: Path) -> None:
    import modelsec

    policy = tmp_path / "policy.toml"
    policy.write_text("[dp]\nmax_claimed_epsilon = { value = 1000 }\n")
    comparison: Any = modelsec.compare(
        models["base"], models["dp"], data="digits", eps=(0.1,), samples=24, mia_samples=60, attacks=("fgsm",),
        out=tmp_path / "c", policy=policy,
    )  # fmt: skip
    assert [m.gate.passed for m in comparison.models] == [False, True] and comparison.gate_passed is False


def test_notebooks_show_a_comparisons_and_a_dp_audits_policy() -> None:
    """In Jupyter, a gated comparison shows each model's policy outcome and a gated DP audit its own; ungated, none."""
    import html

    from tests.test_notebook import make_comparison

    result = _dp_result(DPClaim(epsilon=0.5, delta=1e-5, accountant="prv"))
    assert "Policy" not in result._repr_html_()
    result = dataclasses.replace(result, gate=evaluate_gate(Gate((MaxClaimedEpsilon(0.4),)), result))
    fragment = result._repr_html_()
    assert "Policy: failed (1 of 1 rules)" in fragment and html.escape(result.gate.rules[0].message) in fragment  # type: ignore[union-attr]

    comparison = make_comparison()
    assert "Policy" not in comparison._repr_html_()
    failed = evaluate_gate(Gate((MaxClaimedEpsilon(3.0),)), RESULT)
    gated = dataclasses.replace(
        comparison, models=[dataclasses.replace(comparison.models[0], gate=failed), *comparison.models[1:]]
    )
    fragment = gated._repr_html_()
    assert f"Policy, {comparison.models[0].name}: failed (1 of 1 rules)" in fragment
    assert fragment.index("Policy, ") < fragment.index("<table><thead><tr><th>Model</th>")
