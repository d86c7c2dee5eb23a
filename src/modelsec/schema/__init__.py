"""The JSON Schema of ``result.json`` (``AuditResult.to_dict()``), shipped with the package.

``result.schema.json`` describes :data:`modelsec.results.SCHEMA_VERSION` 1;
``docs/result-schema.md`` explains every field. Validation uses ``jsonschema`` when it is installed
(a dev dependency); without it only the required top-level keys and the schema version are checked.

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
    return resources.files("modelsec.schema").joinpath("result.schema.json").read_text(encoding="utf-8")


def load_result_schema() -> dict[str, Any]:
    """The result schema as a dict (a fresh copy on every call; mutate it freely)."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


def validate_result_dict(d: Any) -> None:
    """Raise ``ValueError`` if ``d`` (a parsed ``result.json``) does not match the result schema.

    The message gives the JSON path and the reason of up to five violations, e.g.
    ``$.robustness.robust_accuracy['0.1']: 1.5 is greater than the maximum of 1``.
    """
    schema = load_result_schema()
    try:
        import jsonschema
    except ImportError:
        _minimal_check(d, schema)
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


def _minimal_check(d: Any, schema: dict[str, Any]) -> None:
    """Without jsonschema: a dict with every required top-level key and a known schema version."""
    if not isinstance(d, dict):
        raise ValueError(f"result does not match the result schema: not an object but {type(d).__name__}")
    missing = [key for key in schema["required"] if key not in d]
    if missing:
        raise ValueError("result does not match the result schema: missing required field(s) " + ", ".join(missing))
    expected = schema["properties"]["schema_version"]["const"]
    if d["schema_version"] != expected:
        raise ValueError(
            f"result does not match the result schema: schema_version is {d['schema_version']!r}, "
            f"this schema describes version {expected}"
        )
