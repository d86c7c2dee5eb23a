"""Model file formats, detected by content (magic bytes), never by extension.

| format          | how it is recognised                                  | can run code when loaded              |
| --------------- | ----------------------------------------------------- | ------------------------------------- |
| safetensors     | 8-byte little-endian header length, then a JSON ``{`` | no                                    |
| torch-export    | zip archive holding ``archive_format`` (``.pt2``)     | yes; ``export_safety.py`` prevents it |
| torch-pickle    | zip archive holding ``data.pkl`` (``torch.save``)     | yes (pickle)                          |
| pickle          | raw pickle stream (protocol 2+ starts with ``0x80``)  | yes                                   |
"""

from __future__ import annotations

import enum
import json
import struct
import zipfile
from pathlib import Path

from modelsec.core.errors import ModelLoadError


class ModelFormat(str, enum.Enum):
    SAFETENSORS = "safetensors"
    TORCH_EXPORT = "torch-export"
    TORCH_PICKLE = "torch-pickle"
    PICKLE = "pickle"

    @property
    def uses_pickle(self) -> bool:
        return self in (ModelFormat.TORCH_PICKLE, ModelFormat.PICKLE)


_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(_MAX_SAFETENSORS_HEADER, size - 8) and head[8:9] == b"{"


def detect_format(path: str | Path) -> ModelFormat:
    """The format of the model file at ``path``; :class:`ModelLoadError` when unreadable or unknown."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"model file {str(p)!r} does not exist or is not a file")
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            head = f.read(16)
    except OSError as e:
        raise ModelLoadError(f"cannot read model file {str(p)!r}: {e.strerror}") from None
    if _looks_like_safetensors(head, size):
        return ModelFormat.SAFETENSORS
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            raise ModelLoadError(f"{str(p)!r} looks like a zip archive but is corrupt") from None
        if any(n.endswith("archive_format") for n in names):
            return ModelFormat.TORCH_EXPORT
        if any(n.endswith("data.pkl") for n in names):
            return ModelFormat.TORCH_PICKLE
        raise ModelLoadError(f"{str(p)!r} is a zip archive but neither a torch.export program nor a torch.save file")
    if head[:1] == b"\x80" or head[:1] in (b"(", b"c", b"}", b"]"):
        return ModelFormat.PICKLE
    if head.lstrip()[:1] == b"{":
        try:
            json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
        else:
            raise ModelLoadError(f"{str(p)!r} is a JSON file, not model weights")
    raise ModelLoadError(
        f"unrecognised model format in {str(p)!r}; supported: safetensors (with --arch), "
        "torch.export programs (.pt2), and with --trust-model torch.save files"
    )
