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
    KERAS = "keras"
    KERAS_H5 = "keras-h5"
    ONNX = "onnx"
    SKOPS = "skops"

    @property
    def uses_pickle(self) -> bool:
        return self in (ModelFormat.TORCH_PICKLE, ModelFormat.PICKLE)


_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(_MAX_SAFETENSORS_HEADER, size - 8) and head[8:9] == b"{"


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# the field tags of ONNX's ModelProto (field number << 3 | wire type): a file starts with ir_version (field 1,
# varint), then usually producer_name, producer_version, domain, model_version, doc_string, graph, opset_import
_ONNX_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0x7A}


def _looks_like_onnx(head: bytes) -> bool:
    """A protobuf ``ModelProto``: tag ``0x08`` (``ir_version``), a small varint, then another ModelProto field."""
    if len(head) < 3 or head[0] != 0x08:
        return False
    i = 1
    while i < len(head) and head[i] & 0x80:  # the varint's continuation bytes
        i += 1
    return i + 1 < len(head) and head[1] != 0 and head[i + 1] in _ONNX_NEXT_TAGS


def detect_format(path: str | Path) -> ModelFormat:
    """The format of the model file at ``path``; :class:`ModelLoadError` when unreadable or unknown."""
    p = Path(path)
    if p.is_dir() and (p / "saved_model.pb").is_file():
        raise ModelLoadError(
            f"{str(p)!r} is a TensorFlow SavedModel folder, which modelsec does not load (it would need TensorFlow, "
            "and its graph can run arbitrary ops). Convert it where it was made: if it is a Keras model, "
            "keras.models.load_model(...) then model.save('model.keras') (Keras 2: tf.keras), and audit "
            "model.keras; otherwise convert it to ONNX with: python -m tf2onnx.convert --saved-model "
            f"{str(p)!r} --output model.onnx"
        )
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
        if "config.json" in names and "metadata.json" in names:
            return ModelFormat.KERAS
        if "schema.json" in names:
            return ModelFormat.SKOPS
        raise ModelLoadError(
            f"{str(p)!r} is a zip archive but none of: a torch.export program, a torch.save file, a Keras 3 "
            ".keras archive, a skops file"
        )
    if head[:1] == b"\x80" or head[:1] in (b"(", b"c", b"}", b"]"):
        return ModelFormat.PICKLE
    if head.startswith(HDF5_SIGNATURE):
        return ModelFormat.KERAS_H5
    if _looks_like_onnx(head):
        return ModelFormat.ONNX
    if head.lstrip()[:1] == b"{":
        try:
            json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
        else:
            raise ModelLoadError(f"{str(p)!r} is a JSON file, not model weights")
    raise ModelLoadError(
        f"unrecognised model format in {str(p)!r}; supported: safetensors (with --arch), "
        "torch.export programs (.pt2), Keras 3 (.keras), ONNX (.onnx), scikit-learn (.skops), "
        "and with --trust-model torch.save files"
    )
