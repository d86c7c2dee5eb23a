"""Reading and writing PyTorch models: safetensors weights, ``torch.export`` programs, trusted ``torch.save`` files.

Security: model files are untrusted data. Safetensors cannot run code. A ``torch.save`` file is a pickle and can;
it is only opened when the user trusts it, and then with ``weights_only=True``. A ``.pt2`` program can run code
through ``torch.export.load`` in several ways (pickled parts it retries with full pickle, symbolic expressions
it evaluates, guards it executes, compiled code); :mod:`modelsec.models.export_safety` closes each of them, with
or without ``--trust-model``.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from modelsec.core.errors import ModelLoadError, UnsafeModelError, printable
from modelsec.models.export_safety import check_export_archive, load_export_program

METADATA_KEY = "modelsec"


def save_safetensors(module: nn.Module, path: str | Path, metadata: dict[str, Any]) -> None:
    """Save ``module``'s state dict as safetensors, with ``metadata`` (JSON) in the file's header."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})


def read_safetensors_metadata(path: str | Path) -> dict[str, Any]:
    """Only the modelsec metadata of a safetensors file (cheap: reads the header)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        return dict(json.loads(header[METADATA_KEY])) if METADATA_KEY in header else {}
    except (SafetensorError, OSError, ValueError):
        return {}


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a safetensors file and the modelsec metadata in its header (``{}`` if none)."""
    try:
        tensors = load_file(str(path), device="cpu")
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read safetensors file {str(path)!r}: {printable(e)}") from None
    meta: dict[str, Any] = {}
    if METADATA_KEY in header:
        try:
            meta = json.loads(header[METADATA_KEY])
        except json.JSONDecodeError:
            raise ModelLoadError(f"corrupt modelsec metadata in {str(path)!r}") from None
    return tensors, meta


def load_state_dict_into(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly, turning key and shape mismatches into a message that names the fix."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs architecture {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if wrong:
            parts.append(f"wrong shapes {wrong[:3]}")
        raise ModelLoadError(
            f"the weights in {source!r} do not fit the architecture ({'; '.join(parts)}); check --arch and --data"
        )
    module.load_state_dict(state, strict=True)


def read_trusted_pickle(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``torch.save`` file, loaded with ``weights_only=True`` (only after --trust-model)."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeModelError(
            f"{str(path)!r} holds objects that the safe loader (weights_only=True) refuses, so it was not "
            f"loaded even with --trust-model ({printable(str(e).strip().splitlines()[0] if str(e).strip() else e)}); "
            "save a state_dict or safetensors"
        ) from None
    except (RuntimeError, OSError, EOFError) as e:
        raise ModelLoadError(f"cannot read {str(path)!r}: {printable(e)}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{str(path)!r} does not hold a state dict (name -> tensor)")
    return obj


class ExportedModule(nn.Module):
    """A ``torch.export`` program as a module. Programs exported with a fixed batch size are fed in chunks of
    that size (the last chunk padded), so any number of inputs works and gradients still flow."""

    def __init__(self, program: torch.export.ExportedProgram, graph_module: nn.Module | None = None) -> None:
        super().__init__()
        self.graph_module = program.module() if graph_module is None else graph_module
        args = program.example_inputs[0] if program.example_inputs else ()
        example = args[0] if args else None
        self.example_shape = tuple(example.shape) if isinstance(example, torch.Tensor) else None
        self.fixed_batch: int | None = None
        if self.example_shape is not None:
            probe = torch.zeros((self.example_shape[0] + 1, *self.example_shape[1:]))
            try:
                self.graph_module(probe)
            except Exception:
                self.fixed_batch = self.example_shape[0]

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode  # the exported graph's behaviour is fixed at export time
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_fixed_batches(self.graph_module, x, self.fixed_batch)


def in_fixed_batches(graph: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int | None) -> torch.Tensor:
    """``graph(x)`` for a graph that only takes batches of ``size`` inputs (``None``: any size): ``x`` is fed in
    chunks of that size, the last one padded with zeros and its padding's outputs dropped; gradients still flow."""
    if size is None or x.shape[0] == size:
        return graph(x)
    outs = []
    for i in range(0, x.shape[0], size):
        chunk = x[i : i + size]
        n = chunk.shape[0]
        if n < size:
            chunk = torch.cat([chunk, chunk.new_zeros((size - n, *chunk.shape[1:]))])
        outs.append(graph(chunk)[:n])
    return torch.cat(outs)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"cannot read model file {str(path)!r}: {printable(e.strerror or e)}") from None


def check_exported(path: str | Path) -> None:
    """Refuse a ``torch.export`` archive that could run code or is malformed, without loading it
    (:func:`modelsec.models.export_safety.check_export_archive`)."""
    check_export_archive(_read(Path(path)), repr(str(path)))


def load_exported(path: str | Path) -> ExportedModule:
    """Load a ``torch.export`` program (``.pt2``) so that nothing in the file can run code
    (:func:`modelsec.models.export_safety.load_export_program`; ``--trust-model`` changes nothing here)."""
    p = Path(path)
    data = _read(p)  # read once: what is checked is what torch loads
    program, graph_module = load_export_program(data, repr(str(p)))
    return ExportedModule(program, graph_module)
