"""The policy gate as JUnit XML (``--junit FILE``), so that CI systems list each rule as a test.

One ``<testsuite name="modelsec policy">`` in a ``<testsuites>`` root, one ``<testcase>`` per rule (its name the
rule's, its class name ``modelsec.policy.<section>``), and for a failed rule a ``<failure>`` whose message is the
rule's one line (measured value, interval, threshold); ``compare --policy`` writes one suite per model. The
layout is the one JUnit's Ant task writes and GitHub Actions, GitLab and Jenkins read.

>>> from modelsec.results.gate import GateOutcome, RuleOutcome
>>> rule = RuleOutcome("privacy.max_auc", 0.7, None, "point", "<=", 0.6, False, "AUC of lira: 0.700, required <= 0.600")
>>> print(junit_xml(GateOutcome("policy.toml", False, [rule])).splitlines()[2])
  <testsuite name="modelsec policy" tests="1" failures="1" errors="0" skipped="0">
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

from modelsec.outputs.files import write_atomically
from modelsec.results.gate import GateOutcome

SUITE = "modelsec policy"


def junit_xml(outcome: GateOutcome | Mapping[str, GateOutcome]) -> str:
    """The JUnit XML document of ``outcome`` (UTF-8 text with its XML declaration): one test suite, or for a
    comparison (``{model name: its gate's outcome}``) one suite per model, named ``modelsec policy: <name>``."""
    suites = {SUITE: outcome} if isinstance(outcome, GateOutcome) else {f"{SUITE}: {k}": v for k, v in outcome.items()}
    tests = sum(len(o.rules) for o in suites.values())
    failures = sum(len(o.failed) for o in suites.values())
    root = ET.Element("testsuites", name="modelsec", tests=str(tests), failures=str(failures))
    for name, gate in suites.items():
        _suite(root, name, gate)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _suite(root: ET.Element, name: str, outcome: GateOutcome) -> None:
    suite = ET.SubElement(
        root, "testsuite", name=name, tests=str(len(outcome.rules)), failures=str(len(outcome.failed)),
        errors="0", skipped="0",
    )  # fmt: skip
    if outcome.policy is not None:
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name="policy", value=outcome.policy)
    for rule in outcome.rules:
        section = rule.rule.split(".", 1)[0]
        case = ET.SubElement(suite, "testcase", name=rule.rule, classname=f"modelsec.policy.{section}")
        if rule.passed:
            ET.SubElement(case, "system-out").text = rule.message
        else:
            failure = ET.SubElement(case, "failure", message=rule.message, type="PolicyRuleFailed")
            failure.text = rule.message


def write_junit(outcome: GateOutcome | Mapping[str, GateOutcome], path: str | Path) -> Path:
    """Write :func:`junit_xml` of ``outcome`` to ``path`` atomically (its folder is created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = junit_xml(outcome).encode("utf-8")
    return write_atomically(out, lambda f: f.write(text))
