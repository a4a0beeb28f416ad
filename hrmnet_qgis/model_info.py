"""What a checkpoint says about itself, read without torch (plain Python, no QGIS).

A ``.safetensors`` file starts with an 8-byte little-endian header length and a JSON
header whose ``__metadata__`` holds the engine's ModelInfo fields, each JSON-encoded
(see ``engine/checkpoint.py``). Reading it costs one small read, so the dialogs can
show a model's defaults (tile size, overlap, threshold) and purpose as soon as it is
chosen. The authors' ``.pth`` files carry no such metadata: None.

An exported ``.onnx`` model (``python -m engine export``) holds the same fields, each
JSON-encoded, in the ONNX ``metadata_props``. They are read here from the protobuf
itself (:func:`read_onnx_metadata`): a few field headers, the graph (the weights) skipped
with one seek, so no onnx package and no engine process is needed in QGIS.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO, Optional

__all__ = ["read_model_info", "read_onnx_metadata", "demo_model", "is_demonstration", "model_summary"]

#: A header larger than this is not one the engine wrote.
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: ONNX ModelProto's ``metadata_props`` field (repeated StringStringEntryProto: key = 1, value = 2).
_METADATA_PROPS = 14


def _varint(f: BinaryIO) -> Optional[int]:
    """A protobuf varint read from ``f`` (None at the end of the file)."""
    value, shift = 0, 0
    while True:
        b = f.read(1)
        if not b:
            if shift:
                raise ValueError("truncated varint")
            return None
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _entry(data: bytes) -> tuple[str, str]:
    """(key, value) of a serialised StringStringEntryProto."""
    import io

    fields, f = {}, io.BytesIO(data)
    while (tag := _varint(f)) is not None:
        if tag & 7 != 2:
            raise ValueError("unexpected wire type in a metadata entry")
        fields[tag >> 3] = f.read(_varint(f) or 0).decode("utf-8")
    return fields.get(1, ""), fields.get(2, "")


def read_onnx_metadata(path: str) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as strings (key -> value), read from the protobuf
    without the onnx package; other fields (the graph with its weights) are skipped by seeking.
    Raises OSError/ValueError when the file is not a readable protobuf."""
    size, meta = os.path.getsize(path), {}
    with open(path, "rb") as f:
        while (tag := _varint(f)) is not None:
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                _varint(f)
            elif wire in (1, 5):
                f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
            elif wire == 2:
                length = _varint(f) or 0
                if f.tell() + length > size:
                    raise ValueError("field runs past the end of the file")
                if field == _METADATA_PROPS:
                    key, value = _entry(f.read(length))
                    meta[key] = value
                else:
                    f.seek(length, os.SEEK_CUR)
            else:
                raise ValueError(f"wire type {wire}: not an ONNX model")
    return meta


def _decoded(meta: dict) -> Optional[dict[str, Any]]:
    if not isinstance(meta, dict) or "tile_size" not in meta:
        return None
    info: dict[str, Any] = {}
    for key, value in meta.items():
        try:
            info[key] = json.loads(value)
        except (TypeError, ValueError):
            info[key] = value
    return info


def read_model_info(path: str) -> Optional[dict[str, Any]]:
    """The model's metadata fields (``tile_size``, ``overlap``, ``threshold``, ``gsd``, ``bands``,
    ``training``, …) decoded, or None when ``path`` is neither a safetensors file nor an exported
    ``.onnx`` with engine metadata (missing, unreadable, a ``.pth``)."""
    if str(path).lower().endswith(".onnx"):
        try:
            return _decoded(read_onnx_metadata(path))
        except (OSError, ValueError, UnicodeDecodeError):
            return None
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if not 0 < size <= MAX_HEADER_BYTES:
                return None
            header = json.loads(f.read(size).decode("utf-8"))
    except (OSError, ValueError, struct.error, UnicodeDecodeError):
        return None
    return _decoded(header.get("__metadata__") if isinstance(header, dict) else None)


def demo_model(root: Optional[Path] = None, light: Optional[bool] = None) -> str:
    """The bundled demonstration model when it is present, else '': the int8 ONNX model
    ``hrmnet_demo_int8.onnx`` (the one the plugin ZIP ships; it runs on either engine), else
    (a source checkout without it) ``hrmnet_demo.onnx`` with a light engine (``light``; default:
    the kind "Set up engine" stored) or the checkpoint with a full one."""
    from .runner import EngineError, engine_root

    try:
        base = Path(root) if root is not None else engine_root()
    except EngineError:
        return ""
    if light is None:
        light = _engine_is_light()
    names = ["hrmnet_demo_int8.onnx"] + (["hrmnet_demo.onnx"] if light else ["hrmnet_demo.safetensors"])
    for name in names:
        path = base / "engine" / "demo" / name
        if path.is_file():
            return str(path)
    return ""


def _engine_is_light() -> bool:
    """Whether "Set up engine" made a light engine (the stored kind; False without QGIS settings)."""
    try:
        from . import settings

        return settings.get(settings.ENGINE_KIND) == "light"
    except Exception:  # noqa: BLE001 - no QGIS / settings storage: the full engine's default
        return False


def is_demonstration(info: Optional[dict]) -> bool:
    """True when the metadata marks a demonstration model (as ``engine.model_fit`` decides)."""
    training = (info or {}).get("training") or {}
    return bool(training.get("demo")) or "demonstration" in str(training.get("purpose") or "").lower()


def model_summary(info: Optional[dict]) -> str:
    """One line: bands, GSD trained at, tile size, overlap, threshold (or that none is known)."""
    if not info:
        return "no metadata (an authors' .pth): the engine's defaults apply"
    gsd = info.get("gsd")
    bands = ",".join(str(b) for b in info.get("bands") or []) or "?"
    return (f"bands {bands}, trained at {f'{gsd:g} m/pixel' if gsd else 'an unknown resolution'}, "
            f"tile size {info.get('tile_size')}, overlap {info.get('overlap')}, threshold {info.get('threshold')}")
