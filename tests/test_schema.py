"""The documented result schema: the fixture validates, violations are caught, JSON round-trips."""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelsec.core.errors import DataError
from modelsec.results.audit import SCHEMA_VERSION, AuditResult
from modelsec.results.schema import load_result_schema, validate_result_dict
from tests.store_fixtures import make_result


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = load_result_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_requires_every_top_level_field() -> None:
    assert set(load_result_schema()["required"]) == set(make_result().to_dict())


def test_load_returns_a_fresh_copy() -> None:
    load_result_schema()["required"].clear()
    assert load_result_schema()["required"]


def test_fixture_result_validates() -> None:
    assert validate_result_dict(json.loads(make_result().to_json())) is None  # raises ValueError when invalid


def test_result_without_robustness_and_privacy_validates() -> None:
    assert validate_result_dict(make_result(robustness=None, privacy=None).to_dict()) is None


def test_extra_fields_are_allowed() -> None:
    d = make_result().to_dict()
    d["added_in_a_later_minor_version"] = {"x": 1}
    d["model"]["new_field"] = "ok"
    assert validate_result_dict(d) is None


@pytest.mark.parametrize("field", ["run_id", "model", "verdict", "robustness", "timings"])
def test_missing_required_field_fails(field: str) -> None:
    d = make_result().to_dict()
    del d[field]
    with pytest.raises(ValueError, match=field):
        validate_result_dict(d)


def test_robust_accuracy_above_one_fails() -> None:
    d = make_result().to_dict()
    d["robustness"]["robust_accuracy"]["0.1"] = 1.5
    with pytest.raises(ValueError, match="robust_accuracy"):
        validate_result_dict(d)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["robustness"]["robust_accuracy"].update({"eps=0.1": 0.5}),
        lambda d: d["privacy"]["attacks"][0]["tpr_at_fpr"].update({"0.001": -0.1}),
        lambda d: d["privacy"]["attacks"][0]["auc_ci"].pop("method"),
        lambda d: d["verdict"].update({"level": "great"}),
        lambda d: d["model"].update({"sha256": "not-a-hash"}),
        lambda d: d["data"].update({"bounds": [0.0]}),
        lambda d: d.update({"schema_version": 2}),
        lambda d: d.update({"seed": "1234"}),
        lambda d: d["robustness"]["flags"][0].update({"resolved": "yes"}),
        lambda d: d["robustness"]["skipped"][0].pop("reason"),
        lambda d: d["robustness"]["min_norm"][0]["quantiles"].update({"q10": 0.1}),
        lambda d: d["robustness"].update({"preset": 3}),
        lambda d: d["robustness"].update({"prediction": None}),
        lambda d: d["data"].update({"class_names": "T-shirt"}),
        lambda d: d["privacy"]["attacks"][0].update({"epsilon_lower_bound": -0.1}),
        lambda d: d["privacy"]["attacks"][0]["epsilon_evidence"].update({"rule": "tpr"}),
        lambda d: d["privacy"]["attacks"][0].update({"balanced_accuracy": 1.2}),
        lambda d: d["privacy"]["exposed_records"][0].update({"rank": 0}),
        lambda d: d["privacy"]["exposed_records"][0].pop("score"),
        lambda d: d["privacy"].update({"compute": [1]}),
    ],
    ids=[
        "eps-key",
        "negative-tpr",
        "interval-method",
        "verdict-level",
        "sha256",
        "bounds",
        "version",
        "seed-type",
        "flag-resolved",
        "skipped-reason",
        "min-norm-quantile-key",
        "preset-type",
        "prediction-type",
        "class-names",
        "negative-epsilon",
        "epsilon-rule",
        "balanced-accuracy",
        "exposed-rank",
        "exposed-score",
        "compute-type",
    ],
)
def test_other_violations_fail(mutate: Callable[[dict[str, Any]], object]) -> None:
    d = copy.deepcopy(make_result().to_dict())
    mutate(d)
    with pytest.raises(ValueError):
        validate_result_dict(d)


def test_fallback_without_jsonschema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # makes `import jsonschema` fail
    d = make_result().to_dict()
    validate_result_dict(d)
    d["robustness"]["robust_accuracy"]["0.1"] = 1.5  # not caught by the minimal check
    validate_result_dict(d)
    del d["verdict"]
    with pytest.raises(ValueError, match="verdict"):
        validate_result_dict(d)
    with pytest.raises(ValueError, match="schema_version"):
        validate_result_dict(make_result(schema_version=2).to_dict())
    with pytest.raises(ValueError):
        validate_result_dict([1, 2])


def test_json_round_trip() -> None:
    r = make_result()
    back = AuditResult.from_dict(json.loads(r.to_json()))
    assert back == r
    assert back.to_dict() == r.to_dict()
    none = make_result(robustness=None, privacy=None)
    assert AuditResult.from_dict(json.loads(none.to_json())) == none


def test_fixture_has_the_fields_added_within_version_1() -> None:
    d = make_result().to_dict()
    rob = d["robustness"]
    assert rob["preset"] and rob["skipped"] and rob["min_norm"] and d["data"]["class_names"]
    assert {f["resolved"] for f in rob["flags"]} == {True, False} and all(f["remedy"] for f in rob["flags"])


def test_version_1_file_without_the_added_fields_loads_with_defaults() -> None:
    d = copy.deepcopy(make_result().to_dict())
    for key in ("preset", "skipped", "min_norm", "prediction"):
        del d["robustness"][key]
    for flag in d["robustness"]["flags"]:
        del flag["remedy"], flag["resolved"]
    del d["data"]["class_names"]
    validate_result_dict(d)
    r = AuditResult.from_dict(d)
    assert r.robustness is not None and r.robustness.preset is None
    assert r.robustness.skipped == [] and r.robustness.min_norm == []
    assert r.robustness.prediction == "argmax of one forward pass"
    assert all(f.remedy is None and not f.resolved for f in r.robustness.flags)
    assert r.data.class_names is None


def test_fixture_has_the_privacy_fields_added_within_version_1() -> None:
    priv = make_result().to_dict()["privacy"]
    for a in priv["attacks"]:
        assert a["balanced_accuracy"] == (1 + a["advantage"]) / 2 and a["epsilon_lower_bound"] > 0
        assert a["epsilon_evidence"]["thresholds"] == 6 and set(a["tpr_at_fpr"]) == {"0.001", "0.01", "0.1"}
    assert priv["exposed_records"][0]["rank"] == 1 and priv["compute"]["reference_models"] == 8


def test_version_1_file_without_the_added_privacy_fields_loads_with_defaults() -> None:
    d = copy.deepcopy(make_result().to_dict())
    for a in d["privacy"]["attacks"]:
        for key in ("balanced_accuracy", "epsilon_lower_bound", "epsilon_evidence"):
            del a[key]
        del a["tpr_at_fpr"]["0.1"], a["tpr_ci"]["0.1"]
    del d["privacy"]["exposed_records"], d["privacy"]["compute"]
    validate_result_dict(d)
    r = AuditResult.from_dict(d)
    assert r.privacy is not None and r.privacy.exposed_records == [] and r.privacy.compute == {}
    for a in r.privacy.attacks:
        assert a.balanced_accuracy == (1 + a.advantage) / 2  # derived
        assert a.epsilon_lower_bound is None and a.epsilon_evidence is None


def test_min_norm_with_nothing_found_validates() -> None:
    d = copy.deepcopy(make_result().to_dict())
    d["robustness"]["min_norm"][0].update({"found": 0, "median": None, "mean": None, "quantiles": {}})
    validate_result_dict(d)
    assert AuditResult.from_dict(d).to_dict() == d


DOC = Path(__file__).resolve().parents[1] / "docs" / "result-schema.md"


def _doc_example() -> dict[str, Any]:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1
    example: dict[str, Any] = json.loads(blocks[0])
    return example


def test_documented_example_validates_and_loads() -> None:
    example = _doc_example()
    validate_result_dict(example)
    assert AuditResult.from_dict(example).to_dict() == example


def _property_names(node: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(node, dict):
        names.update(node.get("properties", {}))
        for value in node.values():
            names |= _property_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _property_names(value)
    return names


def test_every_schema_field_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = sorted(n for n in _property_names(load_result_schema()) if f"`{n}`" not in text)
    assert missing == []


def test_zero_epsilon_bound_without_evidence_validates() -> None:
    d = copy.deepcopy(make_result().to_dict())
    d["privacy"]["attacks"][0].update({"epsilon_lower_bound": 0.0, "epsilon_evidence": None})
    validate_result_dict(d)
    assert AuditResult.from_dict(d).to_dict() == d


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(verdict=None), "verdict must be an object, got null"),
        (lambda d: d.update(model=None), "model must be an object, got null"),
        (lambda d: d.update(robustness=[1]), "robustness must be an object or null, got an array"),
        (lambda d: d.update(seed=True), "seed must be an integer, got a boolean"),
        (lambda d: d.update(schema_version=-5), "schema_version -5 is not a version this modelsec reads (version 1)"),
        (lambda d: d.update(schema_version="1"), "schema_version must be the integer 1"),
        (lambda d: d.update(schema_version=True), "schema_version must be the integer 1"),
        (lambda d: d.update(schema_version=2), "newer than this modelsec reads (version 1); upgrade modelsec"),
        (lambda d: d.pop("schema_version"), "missing required field schema_version"),
        (lambda d: d["verdict"].pop("headline"), "verdict lacks required field(s) headline"),
    ],
)
@pytest.mark.parametrize("with_jsonschema", [True, False])
def test_loading_refuses_what_is_not_a_result(
    change: Callable[[dict[str, Any]], object], message: str, with_jsonschema: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The essentials are checked on loading with or without jsonschema, and named in a DataError (exit 2)."""
    if not with_jsonschema:
        monkeypatch.setitem(sys.modules, "jsonschema", None)
    d = copy.deepcopy(make_result().to_dict())
    change(d)
    with pytest.raises(DataError, match=re.escape(message)):
        AuditResult.from_dict(d)


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"result\.json is not a modelsec result\.json: not JSON"):
        AuditResult.load(path)
    path.write_text(json.dumps({**make_result().to_dict(), "verdict": None}), encoding="utf-8")
    with pytest.raises(DataError, match=r"result\.json is not a modelsec result this version reads: .*verdict"):
        AuditResult.load(path)
    with pytest.raises(DataError, match="cannot read the file"):
        AuditResult.load(tmp_path / "missing.json")
    path.write_text(make_result().to_json(), encoding="utf-8")
    assert AuditResult.load(path) == make_result()
