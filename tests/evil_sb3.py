"""Hostile Stable-Baselines3 ``.zip`` archives for the policy reader's tests: a real archive saved by SB3, rewritten
so that unpickling a part of it would create a canary file, or so that its members try to escape, repeat or
explode. Used by test_rl_files.py."""

from __future__ import annotations

import base64
import io
import json
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tests.evil_archives import CreatesFile


def rewrite_sb3(
    source: Path,
    target: Path,
    replace: dict[str, Callable[[bytes], bytes]] | None = None,
    add: dict[str, bytes] | None = None,
    *,
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """Copy the SB3 archive ``source`` to ``target``, passing each member named by a key of ``replace`` through its
    function and adding the members of ``add`` (names as given: they may be hostile)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", compression=compression) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename in (replace or {}):
                data = (replace or {})[info.filename](data)
            zout.writestr(info.filename, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return target


def edit_data(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    """A ``replace`` function for the ``data`` member: ``change`` edits the parsed JSON in place."""

    def edit(raw: bytes) -> bytes:
        data = json.loads(raw)
        change(data)
        return json.dumps(data).encode()

    return edit


def canary_pickle(canary: Path) -> str:
    """A ``":serialized:"`` value (base64 pickle, as SB3 writes cloudpickled entries) whose unpickling creates
    ``canary``."""
    return base64.b64encode(pickle.dumps(CreatesFile(canary))).decode()


def serialized_entry(source: Path, target: Path, key: str, canary: Path) -> Path:
    """The archive whose ``data[key]`` ``":serialized:"`` value creates ``canary`` when unpickled (its readable keys
    unchanged): SB3's own loader unpickles it, modelsec's reader must not."""

    def change(data: dict[str, Any]) -> None:
        data[key][":serialized:"] = canary_pickle(canary)

    return rewrite_sb3(source, target, {"data": edit_data(change)})


def weights_pickle(source: Path, target: Path, canary: Path) -> Path:
    """The archive whose ``policy.pth`` is a ``torch.save`` file holding an object whose unpickling creates
    ``canary`` beside the weights: ``weights_only=True`` must refuse it."""

    def change(raw: bytes) -> bytes:
        state = torch.load(io.BytesIO(raw), weights_only=True)
        buffer = io.BytesIO()
        torch.save({**state, "evil": CreatesFile(canary)}, buffer)
        return buffer.getvalue()

    return rewrite_sb3(source, target, {"policy.pth": change})


def replaced_weights(source: Path, target: Path, state: dict[str, torch.Tensor]) -> Path:
    """The archive with ``state`` as its ``policy.pth`` (the rest unchanged)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return rewrite_sb3(source, target, {"policy.pth": lambda _: buffer.getvalue()})


def duplicate_member(source: Path, target: Path) -> Path:
    """The archive with a second ``policy.pth``."""
    with zipfile.ZipFile(source) as zin:
        second = zin.read("policy.pth")
    with_copy = rewrite_sb3(source, target)
    with zipfile.ZipFile(with_copy, "a") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        z.writestr("policy.pth", second)
    return target
