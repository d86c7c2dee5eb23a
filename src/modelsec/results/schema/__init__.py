"""The JSON Schema of ``result.json`` (``AuditResult.to_dict()``), shipped with the package.

``result.schema.json`` describes :data:`modelsec.results.SCHEMA_VERSION` 1;
``docs/result-schema.md`` explains every field. Validation uses ``jsonschema`` when it is installed
(a dev dependency); without it the essentials are checked: the schema version, the required top-level fields and
their types, and the required fields of ``model``, ``data`` and ``verdict``.

>>> validate_result_dict({"schema_version": 1})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: result does not match the result schema: ...
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["load_result_schema", "validate_result_dict"]

_MAX_REPORTED = 5


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files("modelsec.results.schema").joinpath("result.schema.json").read_text(encoding="utf-8")


def load_result_schema() -> dict[str, Any]:
    """The result schema as a dict (a fresh copy on every call; mutate it freely)."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


def validate_result_dict(d: Any) -> None:
    """Raise ``ValueError`` if ``d`` (a parsed ``result.json``) does not match the result schema.

    The message gives the JSON path and the reason of up to five violations, e.g.
    ``$.robustness.robust_accuracy['0.1']: 1.5 is greater than the maximum of 1``. The essentials (the schema
    version first, then the top-level sections) are checked in any case, with or without ``jsonschema``.
    """
    schema = load_result_schema()
    _essentials(d, schema)
    try:
        import jsonschema
    except ImportError:
        return
    validator = jsonschema.Draft202012Validator(schema)
    # best_match descends into the sub-errors of a combinator to the one that names the real field.
    found = (jsonschema.exceptions.best_match([e]) for e in validator.iter_errors(d))
    errors = sorted(found, key=lambda e: (e.json_path, e.message))
    if not errors:
        return
    lines = [f"{e.json_path}: {e.message}" for e in errors[:_MAX_REPORTED]]
    if len(errors) > _MAX_REPORTED:
        lines.append(f"... and {len(errors) - _MAX_REPORTED} more")
    raise ValueError("result does not match the result schema: " + "; ".join(lines))


# JSON types of the top-level fields, as the schema declares them (checked without jsonschema too).
_TOP_LEVEL_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "created_at": (str,),
    "model": (dict,),
    "data": (dict,),
    "robustness": (dict, type(None)),
    "privacy": (dict, type(None)),
    "verdict": (dict,),
    "settings": (dict,),
    "seed": (int,),
    "versions": (dict,),
    "timings": (dict,),
}
_JSON_NAMES = {str: "a string", dict: "an object", int: "an integer", type(None): "null"}


def _essentials(d: Any, schema: dict[str, Any]) -> None:
    """What every reader needs, checked without jsonschema: an object, the schema version this modelsec reads,
    the required top-level fields with their types, and the required fields of ``model``, ``data`` and
    ``verdict``."""

    def fail(problem: str) -> ValueError:
        return ValueError(f"result does not match the result schema: {problem}")

    if not isinstance(d, dict):
        raise fail(f"not an object but {type(d).__name__}")
    expected = schema["properties"]["schema_version"]["const"]
    if "schema_version" not in d:
        raise fail(f"missing required field schema_version (this modelsec reads schema version {expected})")
    version = d["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise fail(
            f"schema_version must be the integer {expected} (this modelsec reads schema version {expected}), "
            f"got {version!r}"
        )
    if version > expected:
        raise fail(f"schema_version {version} is newer than this modelsec reads (version {expected}); upgrade modelsec")
    if version != expected:
        raise fail(f"schema_version {version} is not a version this modelsec reads (version {expected})")
    missing = [key for key in schema["required"] if key not in d]
    if missing:
        raise fail("missing required field(s) " + ", ".join(missing))
    for key, types in _TOP_LEVEL_TYPES.items():
        value = d[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join(_JSON_NAMES[t] for t in types)
            raise fail(f"{key} must be {wanted}, got {_json_type(value)}")
    for section in ("model", "data", "verdict"):
        absent = [key for key in schema["$defs"][section].get("required", []) if key not in d[section]]
        if absent:
            raise fail(f"{section} lacks required field(s) " + ", ".join(absent))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
