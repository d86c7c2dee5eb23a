"""Loading ``torch.export`` programs (``.pt2``) without running anything the file brings.

Threat model: the file is written by an attacker. ``torch.export.load`` (torch 2.13) can run code from it in five
ways, each reachable without ``--trust-model``:

1. **Pickles.** Sample inputs are read with ``torch.load``, retried with ``weights_only=False`` when the safe loader
   refuses them (``torch._export.serde.serialize.deserialize_torch_artifact``); weight and constant payloads marked
   ``use_pickle`` are read with ``weights_only=False`` whatever their name; custom objects go through
   ``torch._C._pickle_load_obj`` and opaque objects through ``pickle.loads``
   (``torch.export.pt2_archive._package``).
2. **Symbolic shapes.** Every ``expr_str`` of the program is parsed with ``sympy.sympify``, which ``eval``\\ s the
   string as Python.
3. **Guards.** ``guards_code`` strings become the body of a function that ``exec`` builds when
   ``ExportedProgram.module()`` runs, called on every forward pass (``torch.export._unlift``).
4. **Native code.** An archive with ``data/aotinductor/`` holds compiled libraries that the loader extracts and
   loads.
5. **Graph targets.** A node may name any ``torch.*``, ``_operator.*`` or ``math.*`` callable; torch's verifier
   refuses most, and an operator such as ``aten.from_file`` reads and writes files.

Two layers, both always on, with or without ``--trust-model`` (it does not apply to ``.pt2`` files):

- :func:`check_export_archive` reads the zip before torch does: safe member names (no ``..``, no absolute paths,
  no duplicates, one top folder), no AOTInductor code, no custom or opaque objects, every pickled part readable
  with ``weights_only=True``, every symbolic expression, guard and graph target inside a small grammar.
- :func:`load_export_program` runs ``torch.export.load`` and ``module()`` under :func:`_no_code_execution`, which
  for their duration (one load at a time, behind a lock; restored afterwards, even on error) makes every
  ``torch.load`` a ``weights_only=True`` load, refuses ``pickle.load``/``pickle.loads``, custom-object unpickling
  and AOTInductor loading, checks every string ``sympy.sympify``, guard and graph target gets, and silences
  torch's export loggers. A failure becomes a :class:`~modelsec.core.errors.ModelLoadError` (an
  :class:`~modelsec.core.errors.UnsafeModelError` for a refusal) naming the part of the archive and the reason.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import keyword
import logging
import pickle
import re
import threading
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from modelsec.core.errors import ModelLoadError, UnsafeModelError, printable

_LOCK = threading.Lock()

_PICKLED_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin")
_TARGET_PREFIXES = ("torch.ops.aten.", "torch.ops.prims.")
_HIGHER_ORDER = frozenset(
    # control flow and wrappers over subgraphs of the same program; not the ones that call code from elsewhere
    # (flat_apply, inductor_compiled_code, invoke_leaf_function, call_torchbind, *_call_delegate, ...)
    f"torch.ops.higher_order.{name}"
    for name in (
        "cond", "while_loop", "while_loop_stack_output", "map_impl", "scan", "associative_scan", "wrap",
        "wrap_with_set_grad_enabled", "wrap_with_autocast", "wrap_activation_checkpoint", "tag_activation_checkpoint",
        "invoke_subgraph", "out_dtype", "with_effects", "auto_functionalized", "auto_functionalized_v2",
        "flex_attention", "flex_attention_backward", "run_with_rng_state", "run_and_save_rng_state",
        "graphsafe_run_with_rng_state", "hints_wrapper", "_export_tracepoint", "invoke_quant", "invoke_quant_packed",
    )
)  # fmt: skip
_REFUSED_OPERATORS = frozenset({"torch.ops.aten.from_file"})  # reads (and with shared=True writes) a file
_SAFE_CALLABLES = frozenset(
    {
        # what torch's verifier allows as plain callables, and what pre-dispatch programs record
        *(f"_operator.{name}" for name in ("getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow")),
        *(f"_operator.{name}" for name in ("neg", "pos", "abs", "eq", "ne", "lt", "le", "gt", "ge", "not_")),
        *(f"_operator.{name}" for name in ("and_", "or_", "xor", "invert", "lshift", "rshift")),
        *(f"math.{name}" for name in ("ceil", "floor", "trunc", "sqrt")),
        *(f"torch.{name}" for name in ("sym_max", "sym_min", "sym_not", "sym_float", "sym_int", "sym_ite")),
        *(f"torch.{name}" for name in ("sym_sqrt", "sym_sum", "_sym_sqrt")),
        "torch._C._set_grad_enabled",
        "torch.amp.autocast_mode._enter_autocast",
        "torch.amp.autocast_mode._exit_autocast",
    }
)
_GUARD_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_GUARD_FUNCTIONS = frozenset({"Max", "Min", "Abs", "FloorDiv", "Mod", "PythonMod", "CleanDiv", "CeilDiv"})
_MAX_EXPRESSION = 10_000
_SYM_TOKEN = re.compile(
    r"(?P<space>\s+)"
    r"|(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<string>'(?:[A-Za-z0-9_]*|[0-9.eE+-]*)')"
    r"|(?P<name>[A-Za-z][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|//|==|!=|<=|>=|[-+*/%(),=<>&|~^])"
)


# -- what may appear in a program ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _sympy_constructors() -> frozenset[str]:
    """Names a symbolic expression may call: sympy's expression classes and torch's shape functions."""
    import sympy
    import torch.utils._sympy.functions as shape_functions
    import torch.utils._sympy.numbers as shape_numbers

    names = set()
    for module in (sympy, shape_functions, shape_numbers):
        for name in dir(module):
            value = getattr(module, name)
            if not name.startswith("_") and isinstance(value, type) and issubclass(value, sympy.Basic):
                names.add(name)
    return frozenset(names)


def check_symbolic_expression(text: str) -> None:
    """Raise ``ValueError`` unless ``text`` is a plain symbolic expression as ``sympy.srepr`` writes them
    (``Max(Integer(1), Add(Symbol('s77', positive=True, integer=True), Integer(-1)))``, or infix ``2*s0 - 1``).

    ``sympy.sympify`` evaluates its string as Python; this grammar leaves it nothing but arithmetic: numbers,
    names without double underscores, quoted names and numbers, operators, keyword arguments, and calls of
    sympy's expression classes (or torch's shape functions) only, never of anything else or of a result.
    """
    if len(text) > _MAX_EXPRESSION:
        raise ValueError(f"a symbolic expression of {len(text)} characters")
    previous: tuple[str, str] | None = None
    position = 0
    while position < len(text):
        match = _SYM_TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"character {text[position]!r} in symbolic expression {printable(repr(text), 120)}")
        position = match.end()
        kind, value = match.lastgroup or "", match.group()
        if kind == "space":
            continue
        if kind in ("name", "string") and "__" in value:
            raise ValueError(f"a double underscore in symbolic expression {printable(repr(text), 120)}")
        if kind == "name" and keyword.iskeyword(value) and value not in ("True", "False", "None"):
            raise ValueError(f"the Python keyword {value!r} in symbolic expression {printable(repr(text), 120)}")
        if value == "(" and previous is not None:
            before_kind, before = previous
            if before_kind in ("number", "string") or before == ")":
                raise ValueError(f"a call of a result in symbolic expression {printable(repr(text), 120)}")
            if before_kind == "name" and before not in _sympy_constructors():
                raise ValueError(f"a call of {before!r} in symbolic expression {printable(repr(text), 120)}")
        previous = (kind, value)


def check_guard(code: str) -> None:
    """Raise ``ValueError`` unless ``code`` is a shape guard such as ``L['x'].size()[0] <= 4096``: comparisons
    and arithmetic over numbers, the sizes and strides of the inputs (``L[...]``) and a few shape functions."""
    if len(code) > _MAX_EXPRESSION:
        raise ValueError(f"a guard of {len(code)} characters")
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        raise ValueError(f"guard {printable(repr(code), 120)} is not an expression") from None
    allowed = (
        ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.BinOp,
        ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.Compare, ast.Eq, ast.NotEq,
        ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Constant, ast.Name, ast.Subscript, ast.Attribute, ast.Call, ast.Load,
    )  # fmt: skip
    for node in ast.walk(tree):
        if not isinstance(node, allowed):
            raise ValueError(f"{type(node).__name__} in guard {printable(repr(code), 120)}")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str)):
            raise ValueError(f"constant {node.value!r} in guard {printable(repr(code), 120)}")
        if isinstance(node, ast.Name) and node.id != "L" and node.id not in _GUARD_FUNCTIONS:
            raise ValueError(f"name {node.id!r} in guard {printable(repr(code), 120)}")
        if isinstance(node, ast.Attribute) and node.attr not in _GUARD_METHODS:
            raise ValueError(f"attribute {node.attr!r} in guard {printable(repr(code), 120)}")
        if isinstance(node, ast.Call):
            func = node.func
            method = isinstance(func, ast.Attribute) and func.attr in _GUARD_METHODS
            if not (method or (isinstance(func, ast.Name) and func.id in _GUARD_FUNCTIONS)) or node.keywords:
                raise ValueError(f"a call in guard {printable(repr(code), 120)} that is not a shape query")


def check_graph_target(target: str) -> None:
    """Raise ``ValueError`` unless a graph node's ``target`` is an ATen / prims operator (not ``aten.from_file``),
    a higher-order operator over the program's own subgraphs (``cond``, ``while_loop``, ``wrap``, ...), or one of the
    plain callables torch's verifier and pre-dispatch programs use (``_operator.getitem``, ``torch.sym_max``,
    ``torch._C._set_grad_enabled``, ...)."""
    if target in _SAFE_CALLABLES or target in _HIGHER_ORDER:
        return
    refused = any(target == op or target.startswith(op + ".") for op in _REFUSED_OPERATORS)
    if target.startswith(_TARGET_PREFIXES) and re.fullmatch(r"[A-Za-z0-9_.]+", target) and not refused:
        return
    raise ValueError(f"graph target {printable(repr(target), 120)}, which is not an operator modelsec runs")


# -- the archive, before torch reads it ---------------------------------------------------------------------------


def check_export_archive(data: bytes, where: str) -> None:
    """Refuse a ``.pt2`` archive (its bytes; ``where`` names it in messages) that could run code when
    ``torch.export.load`` reads it, or that is malformed; see the module docstring for what is checked."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ModelLoadError(f"{where} is not a readable torch.export archive ({printable(e)})") from None
    names = [info.filename for info in infos]
    for name in names:
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or ".." in parts or re.search(r"[\x00-\x1f\x7f]", name):
            raise UnsafeModelError(
                f"{where}: refused: the archive member {printable(repr(name))} has an unsafe name (absolute, "
                "'..' or control characters), which torch.export.save never writes; the file was not loaded (with or "
                "without --trust-model)"
            )
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise UnsafeModelError(
            f"{where}: refused: the archive holds two members named {printable(repr(twice[0]))}, and which one a "
            "reader sees depends on the reader; the file was not loaded (with or without --trust-model)"
        )
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) != 1 or any("/" not in name for name in names):
        raise ModelLoadError(f"{where}: a torch.export archive keeps every member in one top folder; this one does not")
    top = tops.pop() + "/"
    members = {name[len(top) :]: name for name in names}

    def read(part: str) -> bytes:
        try:
            return archive.read(members[part])
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as e:
            raise ModelLoadError(f"{where}: the part {part} cannot be read ({printable(e)})") from None

    native = sorted(p for p in members if p.startswith("data/aotinductor/"))
    if native:
        raise UnsafeModelError(
            f"{where}: refused: the part {printable(native[0])} is AOTInductor compiled code, native code that "
            "would run when loaded (modelsec loads exported graphs only); the file was not loaded (with or without "
            "--trust-model)"
        )
    pickled = {p for p in members if p.startswith("data/sample_inputs/") or p.endswith(_PICKLED_SUFFIXES)}
    for part in sorted(members):
        if part.endswith(".json") and (part.startswith(("data/weights/", "data/constants/"))):
            pickled |= _payloads(part, _json(read(part), part, where), where)
        elif part.startswith("models/") and part.endswith(".json"):
            _check_program(part, _json(read(part), part, where), where)
    for part in sorted(pickled):
        if part not in members:
            continue  # named by a config but absent: torch reports it
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the safe unpickler's notes on pickle protocols
                torch.load(io.BytesIO(read(part)), map_location="cpu", weights_only=True)
        except Exception as e:  # any failure of the safe loader: torch would fall back to full unpickling
            raise UnsafeModelError(
                f"{where}: refused: the pickled part {printable(part)} cannot be read with weights_only=True "
                f"({_reason(e)}); torch.export.load would unpickle it in full, which can run code, so the file "
                "was not loaded (with or without --trust-model)"
            ) from None


def _json(raw: bytes, part: str, where: str) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{where}: the part {printable(part)} is not valid JSON ({printable(e)})") from None


def _payloads(part: str, config: Any, where: str) -> set[str]:
    """The pickled payloads a weights / constants config names; custom and opaque objects are refused."""
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise ModelLoadError(f"{where}: the part {printable(part)} is not a payload config")
    folder = part.rsplit("/", 1)[0] + "/"
    pickled = set()
    for fqn, meta in entries.items():
        name = meta.get("path_name") if isinstance(meta, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
            raise UnsafeModelError(
                f"{where}: refused: {printable(part)} names the payload of {printable(repr(fqn))} "
                f"{printable(repr(name))}, which is not a plain file name; the file was not loaded (with or without "
                "--trust-model)"
            )
        if name.startswith(("custom_obj_", "opaque_obj_")):
            raise UnsafeModelError(
                f"{where}: refused: the constant {printable(repr(fqn))} ({printable(folder + name)}) is a custom "
                "(TorchScript) or opaque object, which torch.export.load unpickles beyond weights_only=True (an "
                "opaque object with plain pickle, which can run code), so the file was not loaded (with or without "
                "--trust-model)"
            )
        if meta.get("use_pickle"):
            pickled.add(folder + name)
    return pickled


def _check_program(part: str, program: Any, where: str) -> None:
    """Every symbolic expression, guard and graph target of a serialized program, inside the grammars above."""

    def refuse(reason: str) -> UnsafeModelError:
        return UnsafeModelError(
            f"{where}: refused: {printable(part)} holds {reason}; torch.export.load would evaluate or run it as "
            "code, so the file was not loaded (with or without --trust-model)"
        )

    guards = program.get("guards_code", []) if isinstance(program, dict) else []
    for guard in guards if isinstance(guards, list) else [guards]:
        try:
            check_guard(guard if isinstance(guard, str) else repr(guard))
        except ValueError as e:
            raise refuse(str(e)) from None
    stack: list[Any] = [program]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                try:
                    if key == "expr_str" and isinstance(value, str):
                        check_symbolic_expression(value)
                    elif isinstance(value, str) and (key == "as_operator" or (key == "target" and "inputs" in item)):
                        check_graph_target(value)  # a graph node's target, or an operator passed as an argument
                except ValueError as e:
                    raise refuse(str(e)) from None
                stack.append(value)


# -- torch.export.load under guard --------------------------------------------------------------------------------


@dataclass
class _LoadLog:
    """What happened during one guarded load: the refusals, and the records torch logged."""

    refused: list[str] = field(default_factory=list)
    records: list[logging.LogRecord] = field(default_factory=list)

    def refuse(self, what: str) -> UnsafeModelError:
        self.refused.append(what)
        return UnsafeModelError(f"refused: {what}")


class _Capture(logging.Handler):
    def __init__(self, log: _LoadLog) -> None:
        super().__init__(logging.DEBUG)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.records.append(record)


@contextlib.contextmanager
def _no_code_execution() -> Iterator[_LoadLog]:
    """For the duration of the block, nothing torch reads from an archive can run code (see the module
    docstring); one block at a time (a lock), everything restored on leaving it, even on error."""
    import sympy
    import torch._export.serde.serialize as serde
    import torch.export._unlift as unlift
    import torch.serialization
    from torch.export.pt2_archive import _package

    log = _LoadLog()
    original_load = torch.serialization.load
    original_sympify = sympy.sympify
    original_guards = unlift._convert_guards_code_to_fn
    original_node = serde.GraphModuleDeserializer.deserialize_node

    def weights_only_load(f: Any, map_location: Any = None, pickle_module: Any = None, **kwargs: Any) -> Any:
        kwargs.pop("weights_only", None)
        try:
            return original_load(f, map_location=map_location, weights_only=True, **kwargs)
        except pickle.UnpicklingError as e:
            raise log.refuse(f"a pickled part needs more than weights_only=True ({_reason(e)})") from None

    def refusing(what: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise log.refuse(what)

        return refuse

    def checked_sympify(a: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(a, str):
            try:
                check_symbolic_expression(a)
            except ValueError as e:
                raise log.refuse(str(e)) from None
        return original_sympify(a, *args, **kwargs)

    def checked_guards(guards_code: list[str], *args: Any, **kwargs: Any) -> Any:
        for guard in guards_code:
            try:
                check_guard(guard)
            except ValueError as e:
                raise log.refuse(str(e)) from None
        return original_guards(guards_code, *args, **kwargs)

    def checked_node(self: Any, serialized_node: Any, target: Any) -> Any:
        try:
            check_graph_target(str(serialized_node.target))
        except ValueError as e:
            raise log.refuse(str(e)) from None
        return original_node(self, serialized_node, target)

    patches: list[tuple[Any, str, Any]] = [
        (torch, "load", weights_only_load),
        (torch.serialization, "load", weights_only_load),
        (pickle, "load", refusing("pickle.load (full unpickling)")),
        (pickle, "loads", refusing("pickle.loads of an opaque object (full unpickling)")),
        (torch._C, "_pickle_load_obj", refusing("unpickling a custom object (full unpickling)")),
        (_package, "_load_aoti", refusing("loading AOTInductor compiled code")),
        (sympy, "sympify", checked_sympify),
        (unlift, "_convert_guards_code_to_fn", checked_guards),
        (serde.GraphModuleDeserializer, "deserialize_node", checked_node),
    ]
    capture = _Capture(log)
    with _LOCK:
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
        # torch gives many of its loggers their own stderr handler: each one writes to ours instead
        loggers = [
            logger
            for name, logger in list(logging.root.manager.loggerDict.items())
            if (name == "torch" or name.startswith("torch.")) and isinstance(logger, logging.Logger)
            and logger.handlers
        ]  # fmt: skip
        handlers = [(logger, list(logger.handlers)) for logger in loggers]
        try:
            for owner, name, value in patches:
                setattr(owner, name, value)
            for logger in loggers:
                logger.handlers = [capture]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield log
        finally:
            for owner, name, value in reversed(saved):
                setattr(owner, name, value)
            for logger, kept in handlers:
                logger.handlers = kept


def load_export_program(data: bytes, where: str) -> tuple[torch.export.ExportedProgram, torch.nn.Module]:
    """The program in a ``.pt2`` archive (its bytes) and its module, loaded after :func:`check_export_archive`
    and under :func:`_no_code_execution`. ``where`` names the file in messages."""
    check_export_archive(data, where)
    with _no_code_execution() as log:
        try:
            program = torch.export.load(io.BytesIO(data))
            module = program.module()
        except UnsafeModelError as e:
            raise UnsafeModelError(f"{where}: {e}; the file was not loaded (with or without --trust-model)") from None
        except Exception as e:
            if log.refused:  # a refusal that torch caught and turned into another error
                raise UnsafeModelError(
                    f"{where}: refused: {log.refused[0]}; the file was not loaded (with or without --trust-model)"
                ) from None
            raise ModelLoadError(f"cannot load the torch.export program {where}: {_cause(e, log)}") from None
        if log.refused:  # refused, yet torch went on: never use what it made
            raise UnsafeModelError(
                f"{where}: refused: {log.refused[0]}; the file was not loaded (with or without --trust-model)"
            )
    return program, module


def _reason(error: BaseException) -> str:
    """The informative part of a (weights-only) loading error: what follows torch's "WeightsUnpickler error:"
    when it is there (the rest is advice about overrides that do not apply here), else the first line."""
    text = str(error).strip()
    found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Please use|Check the documentation|$)", text, re.S)
    detail = found.group(1) if found else (text.splitlines()[0] if text else "")
    return printable(f"{type(error).__name__}: {detail}" if detail else type(error).__name__, 200)


def _cause(error: BaseException, log: _LoadLog) -> str:
    """What went wrong, in one line: torch's own error, or the first one it logged (before its generic "check
    the warnings above")."""
    cause: BaseException = error
    for record in log.records:
        if record.exc_info and record.exc_info[1] is not None:
            cause = record.exc_info[1]
            break
    text = str(cause).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(cause).__name__}: {printable(first, 200)}" if first else type(cause).__name__
