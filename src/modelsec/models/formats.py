"""Model file formats, detected by content (magic bytes), never by extension.

| format          | how it is recognised                                  | can run code when loaded              |
| --------------- | ----------------------------------------------------- | ------------------------------------- |
| safetensors     | 8-byte little-endian header length, then a JSON ``{`` | no                                    |
| torch-export    | zip archive holding ``archive_format`` (``.pt2``)     | yes; ``export_safety.py`` prevents it |
| torch-pickle    | zip archive holding ``data.pkl`` (``torch.save``)     | yes (pickle)                          |
| pickle          | raw pickle stream (protocol 2+ starts with ``0x80``)  | yes                                   |
| compressed-     | a zlib, gzip, bz2, xz or lzma stream: what            | yes (pickle)                          |
| pickle          | ``joblib.dump(..., compress=...)`` writes             |                                       |
"""

from __future__ import annotations

import bz2
import enum
import io
import json
import lzma
import pickletools
import struct
import zipfile
import zlib
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
    COMPRESSED_PICKLE = "compressed-pickle"

    @property
    def uses_pickle(self) -> bool:
        return self in (ModelFormat.TORCH_PICKLE, ModelFormat.PICKLE, ModelFormat.COMPRESSED_PICKLE)


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


def _looks_compressed(head: bytes) -> bool:
    """The header of a zlib (RFC 1950: deflate, and a check sum that makes the first two bytes a multiple of 31),
    gzip, bz2, xz or legacy lzma stream: the compressors ``joblib.dump(compress=...)`` offers."""
    zlib = len(head) >= 2 and head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0
    return (
        zlib
        or head.startswith(b"\x1f\x8b")  # gzip
        or (head.startswith(b"BZh") and head[3:4].isdigit())  # bz2
        or head.startswith(b"\xfd7zXZ\x00")  # xz
        or head.startswith(b"]\x00\x00")  # lzma-alone, as joblib writes it
    )


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
        if "data" in names and "policy.pth" in names:
            raise ModelLoadError(
                f"{str(p)!r} is a Stable-Baselines3 policy (an RL agent), not a classifier: audit it with "
                "modelsec audit-policy --policy FILE --env ENV_ID"
            )
        raise ModelLoadError(
            f"{str(p)!r} is a zip archive but none of: a torch.export program, a torch.save file, a Keras 3 "
            ".keras archive, a skops file"
        )
    if _looks_compressed(head) and not _looks_like_onnx(head):  # before pickle: lzma's header starts with ``]``
        return ModelFormat.COMPRESSED_PICKLE
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
        "and with --trust-model torch.save files and pickled (joblib) scikit-learn estimators"
    )


_UNICODE_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def _stream_head(path: Path, fmt: ModelFormat, size: int) -> bytes:
    """The first ``size`` bytes of a (raw or compressed) pickle stream; a compressed one is decompressed only that
    far, so a decompression bomb costs nothing."""
    with path.open("rb") as f:
        data = f.read(size if fmt is ModelFormat.PICKLE else 1 << 20)
    if fmt is ModelFormat.PICKLE:
        return data
    try:
        if data.startswith(b"BZh"):
            return bz2.BZ2Decompressor().decompress(data, max_length=size)
        if data.startswith(b"\xfd7zXZ") or data.startswith(b"]\x00\x00"):
            return lzma.LZMADecompressor().decompress(data, max_length=size)
        return zlib.decompressobj(zlib.MAX_WBITS | 32).decompress(data, size)  # zlib or gzip, by the header
    except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error):
        return b""


def pickled_class(path: str | Path, fmt: ModelFormat, *, head: int = 1 << 16) -> str | None:
    """The module-qualified name (``"sklearn.linear_model._logistic.LogisticRegression"``) of the first class or
    function that a raw or compressed pickle stream references: for what ``pickle.dump`` (protocol 2 or later) and
    ``joblib.dump`` write of an object, the class of that top-level object. Read from the opcodes alone
    (:mod:`pickletools`): nothing is unpickled, and a compressed stream is decompressed only as far as ``head``
    bytes. ``None`` when the first ``head`` bytes reference none.

    It says what a file claims to hold, not that the file is harmless: later opcodes may reference anything."""
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(_stream_head(Path(path), fmt, head))):
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                return ".".join(arg.split(" ", 1))
            if op.name == "STACK_GLOBAL":
                return f"{strings[-2]}.{strings[-1]}" if len(strings) >= 2 else None
            if op.name in _UNICODE_OPS and isinstance(arg, (str, bytes)):
                strings.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
    except (ValueError, EOFError, UnicodeDecodeError):  # a truncated or corrupt stream
        return None
    return None
