"""Typed records from parsed JSON: one ``from_dict`` for every (nested, frozen) dataclass modelsec reads back.

A result file, a comparison, a model file's header and its provenance are JSON objects written from dataclasses
(``dataclasses.asdict`` or a record's own ``to_dict``). :func:`from_dict` turns such an object back into the
dataclass, following the fields' type hints: a field whose type is a dataclass is built from its object, lists,
tuples and dicts element by element, ``X | None`` from ``null`` or an ``X``. Keys the dataclass does not know are
ignored, so a file written by a later version (which only adds fields) still reads.

Two modes. The default trusts the structure (a result already checked against its JSON schema): values are taken
as they are wherever they do not fit a hint. ``strict=True`` checks every value against its hint (an ``int`` is
accepted for a ``float``, a ``bool`` never for a number) and raises :class:`RecordError` naming the field, for
input nobody checked before (a model file's header).

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Split:
...     source: str
...     seed: int = 0
...     shape: tuple[int, ...] = ()
>>> from_dict(Split, {"source": "digits", "shape": [8, 8], "colour": "red"})
Split(source='digits', seed=0, shape=(8, 8))
>>> from_dict(Split, {"source": "digits", "shape": [8, "8"]}, strict=True)
Traceback (most recent call last):
...
modelsec.core.records.RecordError: shape[1] must be an integer, got '8'
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class RecordError(ValueError):
    """A JSON value that does not fit the record it should hold; the message names the field (``a.b[2].c``)."""


def from_dict(cls: type[T], data: Any, *, strict: bool = False) -> T:
    """The dataclass ``cls`` built from the parsed JSON object ``data`` (see the module's docstring).

    Raises :class:`RecordError` when ``data`` is not an object, lacks a field without a default, or (``strict``)
    holds a value of another type than its field's.
    """
    built: T = _build(cls, data, "", strict)
    return built


def _build(hint: Any, value: Any, where: str, strict: bool) -> Any:
    if hint is Any:
        return copy.deepcopy(value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _dataclass(hint, value, where, strict)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or isinstance(hint, types.UnionType):
        return _union(args, value, where, strict)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return _mismatch(f"{len(args)} values", value, where, strict)
            pairs = enumerate(zip(args, value, strict=True))
            return tuple(_build(a, v, f"{where}[{i}]", strict) for i, (a, v) in pairs)
        item = args[0] if args else Any
        items = [_build(item, v, f"{where}[{i}]", strict) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict and isinstance(value, Mapping):
        key, item = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            if strict and key is str and not isinstance(k, str):
                raise RecordError(f"{where} must have string keys, got {k!r}")
            out[k] = _build(item, v, f"{where}.{k}" if where else str(k), strict)
        return out
    if origin in (list, tuple, dict):
        return _mismatch("an object" if origin is dict else "a list", value, where, strict)
    if hint is type(None):
        return value if value is None else _mismatch("null", value, where, strict)
    if isinstance(hint, type):
        return _scalar(hint, value, where, strict)
    raise TypeError(f"from_dict cannot build {hint!r}")  # a record's field type this helper does not know: a bug


def _dataclass(cls: type, value: Any, where: str, strict: bool) -> Any:
    if not isinstance(value, Mapping):
        raise RecordError(f"{where or cls.__name__} must be an object, got {_show(value)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in value and f.init:
            values[f.name] = _build(hints[f.name], value[f.name], f"{where}.{f.name}" if where else f.name, strict)
        elif f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecordError(f"{where or cls.__name__} lacks its field {f.name!r}")
    return cls(**values)


def _union(args: tuple[Any, ...], value: Any, where: str, strict: bool) -> Any:
    if value is None and type(None) in args:
        return None
    arms = [a for a in args if a is not type(None)]
    problems = []
    for arm in arms:
        try:
            return _build(arm, value, where, True)
        except RecordError as e:
            problems.append(e)
    if not strict:  # the arm of the value's shape, built as well as it goes
        shaped = next((arm for arm in arms if _shaped(arm, value)), None)
        return value if shaped is None else _build(shaped, value, where, False)
    raise problems[0] if len(problems) == 1 else RecordError(f"{where} cannot be {_show(value)}")


def _shaped(hint: Any, value: Any) -> bool:
    """Whether ``value`` has the JSON shape of ``hint`` (an object for a dataclass or dict, a list for a list or
    tuple), whatever it holds."""
    if dataclasses.is_dataclass(hint) or typing.get_origin(hint) is dict:
        return isinstance(value, Mapping)
    return typing.get_origin(hint) in (list, tuple) and isinstance(value, (list, tuple))


def _scalar(cls: type, value: Any, where: str, strict: bool) -> Any:
    if cls is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return value if ok else _mismatch("a number", value, where, strict)
    if cls is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return value if ok else _mismatch("an integer", value, where, strict)
    if isinstance(value, cls):
        return value
    return _mismatch(f"a {cls.__name__}", value, where, strict)


def _mismatch(expected: str, value: Any, where: str, strict: bool) -> Any:
    if strict:
        raise RecordError(f"{where or 'the value'} must be {expected}, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"
