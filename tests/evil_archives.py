"""Hostile ``.pt2`` archives for the loader's tests: a real ``torch.export.save`` archive rewritten so that what
``torch.export.load`` runs from it would create a canary file (or load native code). Shared by
test_model_safety.py and the fault table (test_faults.py)."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from modelsec.core.seeding import seeded
from modelsec.models.zoo import build_architecture


class CreatesFile:
    """Unpickling this creates ``target``: the canonical malicious pickle."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.target, "w"))


def export_mlp(path: Path, *, dynamic: bool = False, features: int = 64, classes: int = 10) -> Path:
    """A real ``torch.export.save`` archive of a seeded MLP (inputs ``(n, features)``); ``dynamic``: a symbolic batch
    dimension, so the program holds symbolic expressions."""
    with seeded(0):
        module = build_architecture("mlp", (features,), classes).eval()
    shapes = ({0: torch.export.Dim("batch", min=2, max=4096)},) if dynamic else None
    program = torch.export.export(module, (torch.zeros(3, features),), dynamic_shapes=shapes)
    torch.export.save(program, path)
    return path


def rewrite(
    source: Path,
    target: Path,
    replace: dict[str, Callable[[bytes], bytes]] | None = None,
    add: dict[str, bytes] | None = None,
) -> Path:
    """Copy the archive ``source`` to ``target``, passing each member whose name ends with a key of ``replace``
    through its function, and adding the members of ``add`` (names relative to the archive's top folder, or
    absolute names when they contain ``..``)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        top = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            data = zin.read(info.filename)
            for suffix, change in (replace or {}).items():
                if info.filename.endswith(suffix):
                    data = change(data)
            zout.writestr(info, data)
        for name, data in (add or {}).items():
            zout.writestr(name if ".." in name else f"{top}/{name}", data)
    return target


def _json_edit(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def edit(raw: bytes) -> bytes:
        d = json.loads(raw)
        change(d)
        return json.dumps(d).encode()

    return edit


def _torch_saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _pickled_weight(config: dict[str, Any]) -> None:
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True


def _opaque_constant(config: dict[str, Any]) -> None:
    config["config"]["evil"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}


def _custom_constant(config: dict[str, Any]) -> None:
    config["config"]["evil"] = {"path_name": "custom_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}


def _guard(canary: Path) -> Callable[[dict[str, Any]], None]:
    def change(program: dict[str, Any]) -> None:
        program["guards_code"] = [f"__import__('os').system('touch {canary}') == 0"]

    return change


def _symbolic(canary: Path) -> Callable[[bytes], bytes]:
    def change(raw: bytes) -> bytes:
        text = raw.decode()
        expr = "Symbol('s"
        start = text.index(expr)
        end = text.index(")", start) + 1
        return (text[:start] + f"__import__('os').system('touch {canary}')" + text[end:]).encode()

    return change


def _file_writing_node(canary: Path) -> Callable[[dict[str, Any]], None]:
    def change(program: dict[str, Any]) -> None:
        nodes = program["graph_module"]["graph"]["nodes"]
        tensor = nodes[0]["inputs"][0]["arg"]  # the input tensor
        nodes.insert(
            0,
            {
                "target": "torch.save",
                "inputs": [
                    {"name": "obj", "arg": tensor, "kind": 1},
                    {"name": "f", "arg": {"as_string": str(canary)}, "kind": 1},
                ],
                "outputs": [{"as_none": True}],
                "metadata": {},
                "is_hop_single_tensor_return": None,
                "name": "evil",
            },
        )

    return change


EVIL_KINDS = (
    "sample-inputs-pickle",
    "sample-inputs-torch-save",
    "pickled-weight",
    "legacy-weights-file",
    "opaque-constant",
    "custom-object-constant",
    "symbolic-expression",
    "guard-code",
    "graph-target",
    "aotinductor",
)
"""Every way an archive tries to run something (see :mod:`modelsec.models.export_safety`). With plain
``torch.export.load`` + ``module()`` + one forward pass (torch 2.13), the archives in :data:`RUN_BY_PLAIN_TORCH`
create the canary; the others are refused by torch too, or fail, but for another reason than modelsec's."""

RUN_BY_PLAIN_TORCH = (
    "sample-inputs-pickle",
    "sample-inputs-torch-save",
    "pickled-weight",
    "legacy-weights-file",
    "opaque-constant",
    "symbolic-expression",
    "guard-code",
)

EVIL_PARTS = {
    "sample-inputs-pickle": "data/sample_inputs/model.pt",
    "sample-inputs-torch-save": "data/sample_inputs/model.pt",
    "pickled-weight": "data/weights/weight_0",
    "legacy-weights-file": "data/weights/model.pt",
    "opaque-constant": "data/constants/opaque_obj_0",
    "custom-object-constant": "data/constants/custom_obj_0",
    "symbolic-expression": "symbolic expression",
    "guard-code": "guard",
    "graph-target": "graph target 'torch.save'",
    "aotinductor": "data/aotinductor/",
}
"""What modelsec's refusal names, per kind."""


def evil_archive(kind: str, good: Path, good_dynamic: Path, target: Path, canary: Path) -> Path:
    """The archive ``kind`` of :data:`EVIL_KINDS` written to ``target``, built from ``good`` (a static export)
    or ``good_dynamic`` (with symbolic shapes); what it runs would create ``canary``."""
    payload = pickle.dumps(CreatesFile(canary))
    saved = _torch_saved(CreatesFile(canary))
    program = "models/model.json"
    if kind == "sample-inputs-pickle":
        return rewrite(good, target, {"data/sample_inputs/model.pt": lambda _: payload})
    if kind == "sample-inputs-torch-save":
        return rewrite(good, target, {"data/sample_inputs/model.pt": lambda _: saved})
    if kind == "pickled-weight":
        return rewrite(
            good,
            target,
            {
                "data/weights/model_weights_config.json": _json_edit(_pickled_weight),
                "data/weights/weight_0": lambda _: saved,
            },
        )
    if kind == "legacy-weights-file":
        return rewrite(good, target, add={"data/weights/model.pt": saved})
    if kind == "opaque-constant":
        edit = _json_edit(_opaque_constant)
        return rewrite(good, target, {"model_constants_config.json": edit}, {"data/constants/opaque_obj_0": payload})
    if kind == "custom-object-constant":
        edit = _json_edit(_custom_constant)
        return rewrite(good, target, {"model_constants_config.json": edit}, {"data/constants/custom_obj_0": payload})
    if kind == "symbolic-expression":
        return rewrite(good_dynamic, target, {program: _symbolic(canary)})
    if kind == "guard-code":
        return rewrite(good, target, {program: _json_edit(_guard(canary))})
    if kind == "graph-target":
        return rewrite(good, target, {program: _json_edit(_file_writing_node(canary))})
    if kind == "aotinductor":
        return rewrite(good, target, add={"data/aotinductor/model/model.so": b"\x7fELF" + b"\0" * 60})
    raise ValueError(f"unknown kind {kind!r}")
