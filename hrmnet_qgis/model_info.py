"""What a checkpoint says about itself, read without torch (plain Python, no QGIS).

A ``.safetensors`` file starts with an 8-byte little-endian header length and a JSON
header whose ``__metadata__`` holds the engine's ModelInfo fields, each JSON-encoded
(see ``engine/checkpoint.py``). Reading it costs one small read, so the dialogs can
show a model's defaults (tile size, overlap, threshold) and purpose as soon as it is
chosen. The authors' ``.pth`` files carry no such metadata: None.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Optional

__all__ = ["read_model_info", "demo_model", "is_demonstration", "model_summary"]

#: A header larger than this is not one the engine wrote.
MAX_HEADER_BYTES = 16 * 1024 * 1024


def read_model_info(path: str) -> Optional[dict[str, Any]]:
    """The checkpoint's metadata fields (``tile_size``, ``overlap``, ``threshold``, ``gsd``,
    ``bands``, ``training``, …) decoded, or None when ``path`` is not a safetensors file
    with engine metadata (missing, unreadable, a ``.pth``)."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if not 0 < size <= MAX_HEADER_BYTES:
                return None
            header = json.loads(f.read(size).decode("utf-8"))
    except (OSError, ValueError, struct.error, UnicodeDecodeError):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or "tile_size" not in meta:
        return None
    info: dict[str, Any] = {}
    for key, value in meta.items():
        try:
            info[key] = json.loads(value)
        except (TypeError, ValueError):
            info[key] = value
    return info


def demo_model(root: Optional[Path] = None) -> str:
    """The bundled demonstration checkpoint when it is present (a source checkout, or
    copied into the installed plugin's ``engine/demo``), else ''."""
    from .runner import EngineError, engine_root

    try:
        base = Path(root) if root is not None else engine_root()
    except EngineError:
        return ""
    path = base / "engine" / "demo" / "hrmnet_demo.safetensors"
    return str(path) if path.is_file() else ""


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
