"""The policy gate (issue 17): the policy file's format and checks, each rule passing and failing on exact values,
the outcome in result.json, the JUnit file, the report's policy section, and ``modelsec audit --policy`` exit codes.

The rules are evaluated on :func:`tests.report_fixtures.make_audit_result` (no model runs), whose numbers are known
exactly: worst-case robust accuracy 34.2% at eps 0.03 and 0.2% at 0.1 (Clopper-Pearson intervals on n = 1000),
one unresolved sanity flag, and two membership attacks on binormal ROCs (LiRA the stronger). The command line runs
one small digits audit per exit code.
"""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from modelsec.audits.gate import (
    Gate,
    MaxAuc,
    MaxEpsilonLowerBound,
    MaxTprAtFpr,
    MinRobustAccuracy,
    RequireResolvedChecks,
    check_gate_config,
    evaluate_gate,
    load_gate,
    parse_gate,
)
from modelsec.core.errors import ConfigError
from modelsec.outputs.junit import junit_xml, write_junit
from modelsec.report import render_markdown
from modelsec.report.html import render_html
from modelsec.results.audit import AuditResult, eps_key
from modelsec.results.gate import GateOutcome, RuleOutcome
from modelsec.results.schema import validate_result_dict
from tests.cli_runner import assert_user_error, modelsec
from tests.report_fixtures import make_audit_result
from tests.test_report_browser import CHROMEDRIVER, CHROMIUM
from tests.test_report_browser import driver as driver  # the headless Chromium fixture

ISSUE_EXAMPLE = """\
[robustness]
min_robust_accuracy = { eps = 0.1, value = 0.5 }
[privacy]
max_tpr_at_fpr = { fpr = 0.001, value = 0.01 }
"""

RESULT = make_audit_result()


def _only(rule: object, result: AuditResult = RESULT) -> RuleOutcome:
    outcome = evaluate_gate(Gate((rule,)), result)  # type: ignore[arg-type]
    assert outcome.passed == outcome.rules[0].passed
    return outcome.rules[0]


def _attack(name: str):  # type: ignore[no-untyped-def]
    assert RESULT.privacy is not None
    return next(a for a in RESULT.privacy.attacks if a.attack == name)


# -- the format -----------------------------------------------------------------------------------------------------


def test_the_issue_example_parses_as_written() -> None:
    gate = parse_gate(ISSUE_EXAMPLE, source="policy.toml")
    assert gate == Gate((MinRobustAccuracy(0.1, 0.5, "point"), MaxTprAtFpr(0.001, 0.01, "point")), "policy.toml")
    assert gate.eps == [0.1]


def test_every_rule_and_lists_of_tables_parse(tmp_path: Path) -> None:
    text = """
[robustness]
require_resolved_checks = true
[[robustness.min_robust_accuracy]]
eps = 0.03
value = 0.3
bound = "lower"
[[robustness.min_robust_accuracy]]
eps = 0.1
value = 0
[privacy]
max_tpr_at_fpr = [{ fpr = 0.001, value = 0.01 }, { fpr = 0.01, value = 0.05, bound = "upper" }]
max_auc = { value = 0.6, bound = "upper" }
max_epsilon_lower_bound = { value = 1 }
"""
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    gate = load_gate(path)
    assert gate.rules == (
        RequireResolvedChecks(),
        MinRobustAccuracy(0.03, 0.3, "lower"),
        MinRobustAccuracy(0.1, 0.0, "point"),
        MaxTprAtFpr(0.001, 0.01, "point"),
        MaxTprAtFpr(0.01, 0.05, "upper"),
        MaxAuc(0.6, "upper"),
        MaxEpsilonLowerBound(1.0),
    )
    assert gate.source == str(path)
    assert all(isinstance(r.value, float) for r in gate.rules if not isinstance(r, RequireResolvedChecks))


def test_require_resolved_checks_false_is_no_rule() -> None:
    assert parse_gate("[robustness]\nrequire_resolved_checks = false\n[privacy]\nmax_auc = { value = 0.6 }").rules == (
        MaxAuc(0.6),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[robustnes]\nx = 1", "unknown section [robustnes] (known: robustness, privacy, dp)"),
        ("[robustness]\nmin_accuracy = { eps = 0.1, value = 0.5 }", "unknown key robustness.min_accuracy"),
        ("[robustness]\nmin_robust_accuracy = { eps = 0.1, value = 0.5, bond = 'lower' }", "unknown key bond"),
        ("[robustness]\nmin_robust_accuracy = { value = 0.5 }", "robustness.min_robust_accuracy: missing key eps"),
        ("[robustness]\nmin_robust_accuracy = { eps = 0.1 }", "missing key value"),
        ("[robustness]\nmin_robust_accuracy = { eps = 0.1, value = 'high' }", "value must be a number, got a string"),
        ("[robustness]\nmin_robust_accuracy = { eps = true, value = 0.5 }", "eps must be a number, got a boolean"),
        ("[robustness]\nmin_robust_accuracy = { eps = 0.1, value = 1.5 }", "value must be in [0, 1], got 1.5"),
        ("[robustness]\nmin_robust_accuracy = { eps = 0, value = 0.5 }", "eps must be in (0, inf], got 0"),
        ("[robustness]\nmin_robust_accuracy = 0.5", "min_robust_accuracy must be a table"),
        ("[robustness]\nmin_robust_accuracy = { eps = 0.1, value = 0.5, bound = 'upper' }", "'point' or 'lower'"),
        ("[robustness]\nrequire_resolved_checks = 'yes'", "require_resolved_checks must be true or false"),
        ("[privacy]\nmax_tpr_at_fpr = { fpr = 0.001 }", "privacy.max_tpr_at_fpr: missing key value"),
        ("[privacy]\nmax_tpr_at_fpr = [{ fpr = 0.001, value = 0.01 }, { fpr = 2, value = 0.1 }]", "[1].fpr must be"),
        ("[privacy]\nmax_auc = { value = 0.6, bound = 'lower' }", "max_auc.bound must be 'point' or 'upper'"),
        ("[privacy]\nmax_auc = [{ value = 0.6 }]", "privacy.max_auc must be a table"),
        ("[privacy]\nmax_epsilon_lower_bound = { value = -1 }", "value must be in [0, inf], got -1"),
        ("[privacy]\nmax_epsilon_lower_bound = { value = 1, bound = 'upper' }", "unknown key bound"),
        ("robustness = 1", "robustness must be a table"),
        ("[robustness]\n", "has no rules"),
        ("[robustness\n", "is not valid TOML"),
    ],
)
def test_bad_policy_files_are_config_errors_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_gate(text, source="p.toml")
    assert message in str(e.value)
    assert str(e.value).startswith("policy file p.toml")


def test_an_unreadable_policy_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_gate(tmp_path / "missing.toml")


# -- each rule, passing and failing -----------------------------------------------------------------------------------


def test_min_robust_accuracy_point_and_lower_bound() -> None:
    assert RESULT.robustness is not None
    ci = RESULT.robustness.robust_ci[eps_key(0.03)]
    passed = _only(MinRobustAccuracy(0.03, 0.342))
    assert passed.passed and passed.measured == 0.342 and passed.interval == ci and passed.threshold == 0.342
    assert passed.comparison == ">=" and passed.bound == "point" and passed.attack is None
    assert passed.message == "worst-case robust accuracy at eps=0.03: 34.2% [31.3%, 37.2%], required >= 34.2%"
    assert not _only(MinRobustAccuracy(0.03, 0.343)).passed
    assert not _only(MinRobustAccuracy(0.03, 0.342, "lower")).passed  # the interval's low end is below
    lower = _only(MinRobustAccuracy(0.03, ci.low, "lower"))
    assert lower.passed and lower.compared == ci.low and "(lower bound 31.3%)" in lower.message
    assert not _only(MinRobustAccuracy(0.1, 0.5)).passed  # the issue's rule: 0.2% at eps 0.1


def test_require_resolved_checks() -> None:
    failed = _only(RequireResolvedChecks())
    assert not failed.passed and failed.measured == 1.0 and failed.threshold == 0.0 and failed.interval is None
    assert failed.message == "unresolved sanity flags: 1 (nonzero-gradients), required none"
    assert RESULT.robustness is not None
    flags = [dataclasses.replace(f, resolved=True) for f in RESULT.robustness.flags]
    resolved = dataclasses.replace(RESULT, robustness=dataclasses.replace(RESULT.robustness, flags=flags))
    assert _only(RequireResolvedChecks(), resolved).passed


def test_max_tpr_at_fpr_takes_the_strongest_attack() -> None:
    lira = _attack("lira")
    tpr, ci = lira.tpr_at_fpr["0.001"], lira.tpr_ci["0.001"]
    assert tpr > _attack("loss-threshold").tpr_at_fpr["0.001"]
    passed = _only(MaxTprAtFpr(0.001, tpr))
    assert passed.passed and passed.attack == "lira" and passed.measured == tpr and passed.interval == ci
    assert passed.comparison == "<="
    assert passed.message.startswith("TPR at 0.1% FPR of lira: 1.8% [")
    assert not _only(MaxTprAtFpr(0.001, tpr - 1e-9)).passed
    assert not _only(MaxTprAtFpr(0.001, tpr, "upper")).passed
    assert _only(MaxTprAtFpr(0.001, ci.high, "upper")).passed
    assert not _only(MaxTprAtFpr(0.001, 0.01)).passed  # the issue's rule


def test_max_auc() -> None:
    lira = _attack("lira")
    assert _only(MaxAuc(lira.auc)).passed and _only(MaxAuc(lira.auc)).attack == "lira"
    assert not _only(MaxAuc(0.75)).passed
    assert not _only(MaxAuc(lira.auc, "upper")).passed
    upper = _only(MaxAuc(lira.auc_ci.high, "upper"))
    assert upper.passed and upper.compared == lira.auc_ci.high


def test_max_epsilon_lower_bound() -> None:
    assert RESULT.privacy is not None
    largest = max(float(a.epsilon_lower_bound or 0.0) for a in RESULT.privacy.attacks)
    passed = _only(MaxEpsilonLowerBound(largest))
    assert passed.passed and passed.measured == largest and passed.interval is None
    assert not _only(MaxEpsilonLowerBound(largest - 1e-6)).passed


def test_the_outcome_passes_only_when_every_rule_passes() -> None:
    outcome = evaluate_gate(Gate((MinRobustAccuracy(0.03, 0.3), MaxAuc(0.9)), "p.toml"), RESULT)
    assert outcome.passed and outcome.failed == [] and outcome.policy == "p.toml"
    outcome = evaluate_gate(parse_gate(ISSUE_EXAMPLE), RESULT)
    assert not outcome.passed and [r.rule for r in outcome.failed] == [
        "robustness.min_robust_accuracy(eps=0.1)",
        "privacy.max_tpr_at_fpr(fpr=0.001)",
    ]


# -- rules the result cannot answer -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "result", "message"),
    [
        (MinRobustAccuracy(0.2, 0.5), RESULT, "did not run eps=0.2 (it ran: 0.03, 0.1)"),
        (MinRobustAccuracy(0.1, 0.5), make_audit_result(robustness=None), "no robustness part"),
        (RequireResolvedChecks(), make_audit_result(robustness=None), "no robustness part"),
        (MaxTprAtFpr(0.001, 0.01), make_audit_result(privacy=None), "no privacy (membership inference) part"),
        (MaxAuc(0.6), make_audit_result(privacy=None), "no privacy"),
        (MaxEpsilonLowerBound(1.0), make_audit_result(privacy=None), "no privacy"),
        (MaxTprAtFpr(0.05, 0.01), RESULT, "no TPR at fpr=0.05 (it has: 0.001, 0.01, 0.1)"),
    ],
)
def test_a_rule_the_result_cannot_answer_is_a_config_error(rule: object, result: AuditResult, message: str) -> None:
    with pytest.raises(ConfigError, match="policy rule") as e:
        evaluate_gate(Gate((rule,)), result)  # type: ignore[arg-type]
    assert message in str(e.value)


def test_the_eps_is_checked_against_the_audits_settings_before_it_runs() -> None:
    gate = parse_gate(ISSUE_EXAMPLE)
    check_gate_config(gate, (0.03, 0.1))
    with pytest.raises(ConfigError, match=r"does not run eps=0.1 \(--eps 0.03,0.3\)"):
        check_gate_config(gate, (0.03, 0.3))


# -- the result, JUnit and the report -----------------------------------------------------------------------------


def _gated() -> AuditResult:
    return dataclasses.replace(
        RESULT, gate=evaluate_gate(parse_gate(ISSUE_EXAMPLE + "max_auc = { value = 0.9 }"), RESULT)
    )


def test_the_outcome_round_trips_through_result_json() -> None:
    gated = _gated()
    d = json.loads(gated.to_json())
    validate_result_dict(d)
    assert d["gate"]["passed"] is False and len(d["gate"]["rules"]) == 3
    assert d["gate"]["rules"][0]["interval"]["method"] == "clopper-pearson"
    assert AuditResult.from_dict(d) == gated
    assert "gate" not in RESULT.to_dict()  # a result without a policy: the same file as before the field
    bad = json.loads(gated.to_json())
    bad["gate"]["rules"][0]["bound"] = "middle"
    with pytest.raises(ValueError):
        validate_result_dict(bad)


def test_junit_file_parses_back(tmp_path: Path) -> None:
    gate = _gated().gate
    assert gate is not None
    path = write_junit(gate, tmp_path / "ci" / "policy.xml")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "modelsec policy"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "2", "0")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [r.rule for r in gate.rules]
    failures = [c.find("failure") for c in cases]
    assert [f is not None for f in failures] == [True, True, False]
    assert failures[0] is not None
    assert failures[0].get("message") == gate.rules[0].message
    assert "[0.0%, 0.7%], required >= 50.0%" in (failures[0].get("message") or "")
    assert suite.find("properties") is None  # a gate built in code: no policy file to name
    named = junit_xml(GateOutcome("p.toml", True, []))
    assert ET.fromstring(named).find("testsuite/properties/property").get("value") == "p.toml"  # type: ignore[union-attr]


def test_the_report_shows_the_policy_at_the_top() -> None:
    gated = _gated()
    html = render_html(gated)
    assert html.index('id="policy"') < html.index('id="robustness"')
    assert 'Policy: <span class="badge badge-error">failed</span>' in html
    assert html.count('badge badge-error">FAIL</span>') == 2 and html.count('badge badge-passed">PASS</span>') == 1
    assert "required &gt;= 50.0%" in html
    md = render_markdown(gated)
    assert md.index("## Policy: ❌ failed (2 of 3 rules)") < md.index("## Adversarial robustness")
    assert "| `robustness.min_robust_accuracy(eps=0.1)` | ❌ **FAIL** |" in md
    assert "| `privacy.max_auc` | ✅ PASS |" in md
    assert 'id="policy"' not in render_html(RESULT) and "## Policy" not in render_markdown(RESULT)


@pytest.mark.browser
@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()), reason="needs chromium and chromium-driver")
def test_the_policy_section_renders_in_chromium(driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    gated = _gated()
    page = tmp_path / "report.html"
    page.write_text(render_html(gated), encoding="utf-8")
    driver.get(page.as_uri())
    policy = driver.find_element(By.ID, "policy")
    assert policy.is_displayed() and policy.text.startswith("Policy: FAILED\n3 rules, 2 failed")
    rows = policy.find_elements(By.CSS_SELECTOR, "#policy-table tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == ["FAIL", "FAIL", "PASS"]
    assert "[0.0%, 0.7%], required >= 50.0%" in rows[0].text
    top = driver.execute_script("return arguments[0].getBoundingClientRect().top;", policy)
    robustness = driver.execute_script("return document.getElementById('robustness').getBoundingClientRect().top;")
    assert top < robustness
    assert [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"] == []


# -- the command line ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelsec.defenses.training import TrainingConfig, train_and_save

    path = tmp_path_factory.mktemp("model") / "digits.safetensors"
    train_and_save(data="digits", arch="mlp", out=path, config=TrainingConfig(epochs=8, batch_size=64, seed=0))
    return path


def _audit(model: Path, out: Path, *args: str):  # type: ignore[no-untyped-def]
    return modelsec(
        "audit", "--model", str(model), "--data", "digits", "--eps", "0.1", "--samples", "24", "--mia-samples", "60",
        "--attacks", "fgsm", "--out", str(out), "--no-store", *args,
    )  # fmt: skip


def test_cli_exit_code_0_when_the_policy_passes(digits_model: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[robustness]\nmin_robust_accuracy = { eps = 0.1, value = 0.0 }\n[privacy]\nmax_auc = { value = 1.0 }\n"
    )
    proc = _audit(digits_model, tmp_path / "o", "--policy", str(policy), "--junit", str(tmp_path / "j.xml"))
    assert proc.returncode == 0, proc.stderr
    assert "PASS robustness.min_robust_accuracy(eps=0.1): worst-case robust accuracy at eps=0.1: " in proc.stdout
    assert "PASS privacy.max_auc: AUC of " in proc.stdout
    result = AuditResult.load(tmp_path / "o" / "result.json")
    assert result.gate is not None and result.gate.passed and result.gate.policy == str(policy)
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("2", "0")


def test_cli_exit_code_4_when_a_rule_fails_and_the_files_are_written(digits_model: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    # the lower end of a Clopper-Pearson interval on 24 samples is below 1 whatever the audit measures
    policy.write_text("[robustness]\nmin_robust_accuracy = { eps = 0.1, value = 1.0, bound = 'lower' }\n")
    out = tmp_path / "o"
    proc = _audit(digits_model, out, "--policy", str(policy), "--quiet")
    assert proc.returncode == 4, proc.stderr
    assert "FAIL robustness.min_robust_accuracy(eps=0.1)" in proc.stdout and "required >= 100.0%" in proc.stdout
    assert "policy FAILED: 1 of 1 rules failed" in proc.stderr and "Traceback" not in proc.stderr
    result = AuditResult.load(out / "result.json")
    assert result.gate is not None and not result.gate.passed
    assert result.robustness is not None and result.gate.rules[0].measured == result.robustness.robust_accuracy["0.1"]
    assert 'id="policy"' in (out / "report.html").read_text(encoding="utf-8")
    assert (out / "adversarial.npz").exists() and not (out / "audit.ckpt").exists()


def test_cli_policy_errors_exit_2_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "o"
    bad = tmp_path / "bad.toml"
    bad.write_text("[robustness]\nmin_robust_accuracy = { eps = 0.1, valu = 0.5 }\n")
    assert_user_error(
        modelsec("audit", "--data", "digits", "--policy", str(bad), "--out", str(out)), "unknown key valu"
    )
    good = tmp_path / "good.toml"
    good.write_text(ISSUE_EXAMPLE)
    proc = modelsec("audit", "--data", "digits", "--eps", "0.03", "--policy", str(good), "--out", str(out))
    assert_user_error(proc, "does not run eps=0.1")
    assert_user_error(
        modelsec("audit", "--data", "digits", "--junit", str(tmp_path / "j.xml")), "--junit needs --policy"
    )
    missing = tmp_path / "missing.toml"
    assert_user_error(modelsec("audit", "--data", "digits", "--policy", str(missing)), "cannot read the file")
    assert not out.exists()


def test_the_readme_policy_file_parses() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Use in CI") :]
    text = section[section.index("```toml\n") + 8 : section.index("```", section.index("```toml\n") + 8)]
    gate = parse_gate(text, source="policy.toml")
    assert [r.name for r in gate.rules] == [
        "robustness.min_robust_accuracy(eps=0.1)",
        "robustness.require_resolved_checks",
        "privacy.max_tpr_at_fpr(fpr=0.001)",
        "privacy.max_tpr_at_fpr(fpr=0.01)",
        "privacy.max_auc",
        "privacy.max_epsilon_lower_bound",
        "dp.max_claimed_epsilon",
    ]
    assert len(evaluate_gate(gate, RESULT).rules) == 7
    assert text.count("\n") == 10  # the issue's "ten-line policy file"


def test_a_tie_goes_to_the_attack_with_the_higher_auc() -> None:
    assert RESULT.privacy is not None
    attacks = [dataclasses.replace(a, tpr_at_fpr={**a.tpr_at_fpr, "0.001": 0.0}) for a in RESULT.privacy.attacks]
    tied = dataclasses.replace(RESULT, privacy=dataclasses.replace(RESULT.privacy, attacks=attacks))
    assert _only(MaxTprAtFpr(0.001, 0.0), tied).attack == "lira"  # listed second, AUC 0.760 > 0.611
    assert _only(MaxTprAtFpr(0.001, 0.0), tied).passed


def test_the_python_api_takes_a_policy(digits_model: Path, tmp_path: Path) -> None:
    """``modelsec.audit(..., policy=FILE)``: the same gate as ``--policy``, read before any work, its outcome in the
    result and in ``result.json``; a rule on an eps the audit does not run is refused before the audit."""
    import modelsec as api

    policy = tmp_path / "policy.toml"
    policy.write_text("[robustness]\nmin_robust_accuracy = { eps = 0.1, value = 1.0, bound = 'lower' }\n")
    result = api.audit(
        str(digits_model), "digits", eps=(0.1,), samples=24, mia_samples=60, attacks=("fgsm",),
        out=tmp_path / "o", policy=policy,
    )  # fmt: skip
    assert result.gate is not None and not result.gate.passed  # the lower end on 24 samples is below 1
    assert AuditResult.load(tmp_path / "o" / "result.json").gate == result.gate
    with pytest.raises(ConfigError, match="eps"):
        api.audit(str(digits_model), "digits", eps=(0.03,), samples=24, out=tmp_path / "p", policy=policy)
    assert not (tmp_path / "p" / "result.json").exists()


def test_the_ci_workflow_uses_only_options_that_exist() -> None:
    """docs/ci.md's workflow: every option of its ``modelsec audit`` command is one the CLI has, and its policy and
    JUnit files are the ones the later steps read."""
    import re

    from click.testing import CliRunner

    from modelsec.cli.main import cli

    root = Path(__file__).parent.parent
    text = (root / "docs" / "ci.md").read_text(encoding="utf-8")
    readme = (root / "README.md").read_text(encoding="utf-8")
    readme = readme[readme.index("## Use in CI") : readme.index("## Python API")]
    readme = readme[readme.index("```yaml") :]
    shown = CliRunner().invoke(cli, ["audit", "--help"], terminal_width=200)
    assert shown.exit_code == 0
    known = set(re.findall(r"(--[a-z][a-z-]*)", shown.output))
    commands = []
    for doc in (text, readme):  # the workflow, and its core steps in the README's "Use in CI"
        command = re.search(r"modelsec audit (--model .*?--out audit)", doc, re.S)
        assert command is not None
        commands.append(command.group(1))
        used = set(re.findall(r"(--[a-z][a-z-]*)", command.group(1)))
        assert {"--policy", "--junit", "--reference-models", "--members"} <= used <= known, used - known
        assert 'modelsec runs show "$run_id" >> "$GITHUB_STEP_SUMMARY"' in doc
    assert commands[0] == commands[1]
    assert "--junit audit/policy.xml" in text and "report_paths: audit/policy.xml" in text


def test_a_notebook_shows_the_policy() -> None:
    """In Jupyter (``_repr_html_``) a gated result shows the policy's outcome and each rule above the tables; an
    audit without a policy shows no policy section."""
    import html

    gated = _gated()
    assert gated.gate is not None
    fragment = gated._repr_html_()
    assert "Policy: failed (" in fragment or "Policy: passed" in fragment
    for rule in gated.gate.rules:
        assert html.escape(rule.rule) in fragment and html.escape(rule.message) in fragment
    assert fragment.index("Policy:") < fragment.index("<h4>Robustness</h4>")
    assert "Policy:" not in RESULT._repr_html_()


@pytest.fixture(scope="module")
def digits_result(digits_model: Path, tmp_path_factory: pytest.TempPathFactory) -> AuditResult:
    """The digits MLP's audit (robustness at eps 0.1 and membership inference), through the command line."""
    out = tmp_path_factory.mktemp("digits-audit")
    proc = _audit(digits_model, out)
    assert proc.returncode == 0, proc.stderr
    return AuditResult.load(out / "result.json")


@pytest.mark.parametrize(
    ("make", "direction"),
    [
        (lambda v: MinRobustAccuracy(0.1, v), +1),
        (lambda v: MinRobustAccuracy(0.1, v, "lower"), +1),
        (lambda v: MaxTprAtFpr(0.001, v, "upper"), -1),
        (lambda v: MaxTprAtFpr(0.01, v, "upper"), -1),
        (lambda v: MaxAuc(v), -1),
        (lambda v: MaxAuc(v, "upper"), -1),
    ],
    ids=["min-robust", "min-robust-lower", "tpr-0.1%-upper", "tpr-1%-upper", "auc", "auc-upper"],
)
def test_each_rule_passes_and_fails_on_the_digits_mlp(digits_result: AuditResult, make: Any, direction: int) -> None:
    """The policy matrix on a real audit: each rule passes at exactly the value it compares (the comparisons are
    inclusive) and fails a hair beyond it, whatever the audit measured."""
    compared = _only(make(0.5), digits_result).compared
    assert compared is not None and 0.0 < compared < 1.0  # an interval's end, an AUC: strictly inside (0, 1)
    at = _only(make(compared), digits_result)
    assert at.passed and at.measured is not None
    beyond = _only(make(compared + direction * 1e-6), digits_result)
    assert not beyond.passed


def test_the_other_rules_on_the_digits_mlp(digits_result: AuditResult) -> None:
    """The epsilon lower bound passes at its value; the sanity-check rule follows the audit's flags (and fails once
    a flag is unresolved); the DP-claim rule fails on a model that claims none."""
    assert digits_result.privacy is not None and digits_result.robustness is not None
    bound = max(a.epsilon_lower_bound or 0.0 for a in digits_result.privacy.attacks)
    assert _only(MaxEpsilonLowerBound(bound), digits_result).passed
    assert not _only(MaxEpsilonLowerBound(bound - 1e-6), digits_result).passed or bound == 0.0
    unresolved = [f for f in digits_result.robustness.flags if not f.resolved]
    assert _only(RequireResolvedChecks(), digits_result).passed == (not unresolved)
    flag = make_audit_result().robustness.flags[0]  # type: ignore[union-attr]
    flagged = dataclasses.replace(
        digits_result,
        robustness=dataclasses.replace(digits_result.robustness, flags=[dataclasses.replace(flag, resolved=False)]),
    )
    assert not _only(RequireResolvedChecks(), flagged).passed
    from modelsec.audits.gate import MaxClaimedEpsilon

    claim = _only(MaxClaimedEpsilon(1e6), digits_result)
    assert not claim.passed and claim.measured is None and digits_result.model.dp_epsilon is None
