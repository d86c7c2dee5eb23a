"""Command-line options generated from the config dataclasses' fields, by the convention of
:mod:`modelsec.core.options`: ``--l2-norm-clip`` for ``l2_norm_clip``, its type and default from the annotation and
the field, choices and ranges from ``Annotated`` markers, its help from the ``Args:`` entry of the class docstring.

A command that takes such options is a :class:`ConfigCommand`; :func:`config_options` adds the options of a group of
configs to it and hands the command the values given, converted and keyed by field name, in one ``dict`` argument.
The options are built when the command is first parsed, not when the CLI is imported (the configs import torch), so
``modelsec --help``, ``list`` and ``runs`` stay fast; and they are built from the registries as they are then, so a
newly registered defense's options appear without touching the CLI.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import click

from modelsec.core.errors import ConfigError
from modelsec.core.options import OneOf, Within


def parse_floats(value: str, option: str) -> tuple[float, ...]:
    """Comma-separated numbers (``--eps 0.03,0.1``); a ConfigError naming ``option`` otherwise."""
    try:
        out = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated numbers, got {value!r}") from None
    if not out:
        raise ConfigError(f"{option} is empty")
    return out


def parse_names(value: str) -> tuple[str, ...]:
    """A comma-separated list of names."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


_ENTRY = re.compile(r"(\w+(?:,\s*\w+)*):\s*(.*)")
_ROLE = re.compile(r":\w+:`(~?)([^`<]+?)\s*(?:<[^>]*>)?`")


def field_docs(cls: type) -> dict[str, str]:
    """Each field's entry in the ``Args:`` sections of ``cls``'s docstring and its bases' (the most derived first),
    as plain text.

    >>> @dataclass
    ... class Example:
    ...     '''One example.
    ...
    ...     Args:
    ...         low, high: the range, in ``bounds`` units (see :class:`~modelsec.core.options.Within`);
    ...             inclusive.
    ...     '''
    >>> field_docs(Example)["high"]
    'the range, in bounds units (see Within); inclusive.'
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for names, text in _args_section(klass.__dict__.get("__doc__") or ""):
            docs.update(dict.fromkeys(names, text))
    return docs


def _args_section(doc: str) -> list[tuple[list[str], str]]:
    """The entries of a Google-style ``Args:`` section: (names, text)."""
    lines = inspect.cleandoc(doc).splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Args:"), None)
    if start is None:
        return []
    section, entry = _indent(lines[start]), None
    entries: list[tuple[list[str], list[str]]] = []
    for line in filter(str.strip, lines[start + 1 :]):
        if _indent(line) <= section:
            break
        match = _ENTRY.fullmatch(line.strip())
        if match and (entry is None or _indent(line) <= entry):
            entry = _indent(line)
            entries.append(([n.strip() for n in match[1].split(",")], [match[2]]))
        else:
            entries[-1][1].append(line.strip())
    return [(names, _plain(" ".join(text))) for names, text in entries]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _plain(text: str) -> str:
    """Sphinx roles and literals as plain text: ``:class:`~a.B``` -> ``B``, ````x```` -> ``x``."""
    text = _ROLE.sub(lambda m: m[2].rsplit(".", 1)[-1] if m[1] else m[2], text)
    return text.replace("``", "")


class FieldOption(click.Option):
    """An option that sets the config field ``field``: ``to_field`` turns its parsed value into the field's."""

    def __init__(self, decls: list[str], *, field: str, to_field: Callable[[Any], Any], **attrs: Any) -> None:
        super().__init__(decls, **attrs)
        self.field = field
        self.to_field = to_field


@dataclass(frozen=True)
class _Field:
    """One config's field: the config's label, the field, its annotation and its documentation."""

    label: str
    field: dataclasses.Field[Any]
    hint: Any
    doc: str

    def kind(self) -> tuple[type, bool, object]:
        """What one value is (``int``, ``float``, ``str`` or ``bool``), whether the field is a tuple of them, and
        its ``Annotated`` marker (or None)."""
        hint, marker = self.hint, None
        if typing.get_origin(hint) is typing.Annotated:
            hint, marker = typing.get_args(hint)[:2]
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            (hint,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
        many = typing.get_origin(hint) is tuple
        one = typing.get_args(hint)[0] if many else hint
        if one not in (int, float, str, bool):
            raise TypeError(f"no command-line option for the field {self.field.name}: {self.hint!r}")
        return one, many, marker


def field_options(
    configs: Mapping[str, type], *, unset: bool = False, exclude: Collection[str] = ()
) -> list[FieldOption]:
    """One option per field of the dataclasses ``configs`` (by label: a defense's name, or ``""`` for a lone
    config), but those in ``exclude``.

    With ``unset``, every option is unset by default (the config's own default applies; a ``bool`` field is a
    ``--x/--no-x`` pair), and its help names the configs it belongs to where not all have it. Otherwise the
    option's default is the field's (every config must agree), and a ``bool`` field that is on by default is an
    ``--no-x`` flag. A field must have the same type and marker in every config (a bug otherwise).
    """
    owners: dict[str, list[_Field]] = {}
    for label, cls in configs.items():
        hints, docs = typing.get_type_hints(cls, include_extras=True), field_docs(cls)
        for f in dataclasses.fields(cls):
            if f.name not in exclude:
                if f.name not in docs:
                    raise TypeError(f"{cls.__name__}.{f.name} has no entry in the Args: section of its docstring")
                owners.setdefault(f.name, []).append(_Field(label, f, hints[f.name], docs[f.name]))
    return [_option(name, fields, len(configs), unset) for name, fields in owners.items()]


def _option(name: str, owners: list[_Field], configs: int, unset: bool) -> FieldOption:
    if len({o.kind() for o in owners}) > 1 or (not unset and len({repr(o.field.default) for o in owners}) > 1):
        raise TypeError(f"the fields {name!r} of {[o.label for o in owners]} differ in type or default")
    (kind, many, marker), dashed = owners[0].kind(), "--" + name.replace("_", "-")
    default: Any = None if unset else owners[0].field.default
    attrs: dict[str, Any] = {"help": _help(owners, configs)}
    if kind is bool:
        if unset:
            return FieldOption([f"{dashed}/--no-{dashed[2:]}", name], field=name, to_field=bool, default=None, **attrs)
        if default:
            attrs["help"] = f"Turn off (on by default): {owners[0].doc}"
            return FieldOption([f"--no-{dashed[2:]}"], field=name, to_field=lambda v: not v, is_flag=True, **attrs)
        return FieldOption([dashed], field=name, to_field=bool, is_flag=True, **attrs)
    to_field: Callable[[Any], Any] = lambda value: value  # noqa: E731
    attrs["type"] = {int: click.INT, float: click.FLOAT, str: click.STRING}[kind]
    if many:  # a tuple, given comma-separated
        attrs["type"], attrs["help"] = click.STRING, attrs["help"] + " Comma-separated."
        to_field = (lambda value: parse_floats(value, dashed)) if kind is float else parse_names
        default = None if default is None else ",".join(f"{v:g}" if kind is float else v for v in default)
    if isinstance(marker, OneOf):
        attrs["type"] = click.Choice(list(marker.choices))
    elif isinstance(marker, Within):
        attrs["type"] = click.IntRange(marker.low, marker.high)
    if default is not None:
        attrs["show_default"] = True
    return FieldOption([dashed, name], field=name, to_field=to_field, default=default, **attrs)


def _help(owners: list[_Field], configs: int) -> str:
    """The field's documentation; where the configs document it differently, or not all have it, each text
    prefixed by the configs it is for (the most common one unprefixed when all have the field)."""
    by_text: dict[str, list[str]] = {}
    for o in owners:
        by_text.setdefault(o.doc, []).append(o.label)
    groups = sorted(by_text.items(), key=lambda item: -len(item[1]))
    everyone = len(owners) == configs
    parts = [
        t[:1].upper() + t[1:] if everyone and i == 0 else f"{', '.join(labels)}: {t}"
        for i, (t, labels) in enumerate(groups)
    ]
    return " ".join(parts)


class _Block(click.Option):
    """Where :func:`config_options` puts its options among the command's own; :class:`ConfigCommand` expands it."""

    def __init__(self, decls: list[str], *, build: Callable[[], list[FieldOption]], **attrs: Any) -> None:
        super().__init__(decls, expose_value=False, hidden=True, **attrs)
        self.build = build


def config_options(build: Callable[[], list[FieldOption]], into: str) -> Callable[[Any], Any]:
    """Decorator of a :class:`ConfigCommand`'s function: the options ``build()`` returns (built when the command
    is parsed) go here, among the command's own options, and their values reach the function as the ``dict``
    argument ``into``: the options given, by field name, converted to the field's type."""
    return click.option(f"--{into}", into, cls=_Block, build=build)


class ConfigCommand(click.Command):
    """A command with options generated by :func:`config_options`."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = [p for param in self.params for p in (param.build() if isinstance(param, _Block) else [param])]
        opts = [opt for param in params for opt in param.opts + param.secondary_opts]
        if len(opts) != len(set(opts)):
            raise TypeError(f"{self.name}: a config field shadows one of the command's options: {sorted(opts)}")
        help_option = self.get_help_option(ctx)
        return [*params, help_option] if help_option is not None else params

    def invoke(self, ctx: click.Context) -> Any:
        for block in (param for param in self.params if isinstance(param, _Block)):
            given = {option: ctx.params.pop(option.name) for option in block.build() if option.name}
            ctx.params[block.name] = {o.field: o.to_field(v) for o, v in given.items() if v is not None}
        return super().invoke(ctx)
