"""What a model says about itself (:class:`ModelInfo`) and the checks of it, shared by both
model files: our ``.safetensors`` checkpoints (:mod:`engine.checkpoint`) and exported ``.onnx``
models (:mod:`engine.onnx_predictor`). No torch, no onnxruntime: plain metadata.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from . import __version__
from .errors import UserError

__all__ = ["FORMAT_VERSION", "ARCHITECTURE", "ModelInfo", "MetadataError", "check_info", "check_model_file"]

FORMAT_VERSION = 1
ARCHITECTURE = "HRMNet"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
TILE_MULTIPLE = 32  # the model downsamples by 32
MAX_TILE_SIZE = 8192  # px; one 8192² tile is already 1.6 GB of model input
RASTER_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
SCALING_KEYS = ("dtype", "scale", "mean", "std")


def _default_scaling() -> dict:
    return {"dtype": "uint8", "scale": [1 / 255.0] * 3, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


@dataclass
class ModelInfo:
    """What a checkpoint says about itself.

    Attributes:
        format_version: version of this metadata layout.
        architecture: network name (``HRMNet``).
        bands: input band names of one date, in order (the model sees before then after).
        scaling: radiometric scaling per band: ``normalised = (raw * scale - mean) / std``,
            valid for rasters of data type ``dtype`` (``uint8`` for the authors' model).
        tile_size: tile edge in pixels the model was trained at.
        overlap: default tile overlap in pixels for detection.
        gsd: ground sampling distance trained at, metres per pixel (None if unknown).
        threshold: decision threshold on the change probability.
        training: summary of the training run (data, steps, metrics, ...).
        engine_version: engine version that wrote the file.
        review_threshold: hard-region (review) score above which a region holding no
            change is a "look here" area (0..1 exclusive; ``train`` measures it on the
            validation split, :mod:`engine.train.review_threshold`; 0.3 otherwise).
    """

    format_version: int = FORMAT_VERSION
    architecture: str = ARCHITECTURE
    bands: list = field(default_factory=lambda: ["red", "green", "blue"])
    scaling: dict = field(default_factory=_default_scaling)
    tile_size: int = 512
    overlap: int = 128
    gsd: Optional[float] = None
    threshold: float = 0.5
    training: dict = field(default_factory=dict)
    engine_version: str = __version__
    review_threshold: float = 0.3

    def to_metadata(self) -> dict[str, str]:
        """String metadata for safetensors (each field JSON-encoded)."""
        return {k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str = "") -> "ModelInfo":
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for k, v in (meta or {}).items():
            if k in known:
                try:
                    values[k] = json.loads(v)
                except ValueError as exc:
                    raise MetadataError(source, k, f"metadata {k} = {_shown(v)}: not valid JSON") from exc
        info = cls(**values)
        check_info(info, source)
        return info

    def set(self, key: str, value: str) -> None:
        """Set one field from a ``key=value`` string (value parsed as JSON when it can be)."""
        known = {f.name for f in fields(self)}
        top = key.split(".")[0]
        if top not in known:
            raise UserError(f"--set {key}: unknown metadata field (known: {', '.join(sorted(known))})")
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        if "." in key:  # nested, e.g. training.data=LEVIR-CD+
            target = getattr(self, top)
            if not isinstance(target, dict):
                raise UserError(f"--set {key}: {top} is not a mapping")
            target[key.split(".", 1)[1]] = parsed
        else:
            setattr(self, key, parsed)


class MetadataError(UserError):
    """A checkpoint metadata field of the wrong type or out of range.

    Attributes:
        field: the top-level field (``threshold``, ``scaling``, ...).
        problem: the message without the file, e.g. ``"metadata threshold = 7: must be
            between 0 and 1"``.
    """

    def __init__(self, source: str, field: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}" if source else problem)
        self.field = field
        self.problem = problem


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _metadata_problems(info: "ModelInfo"):
    """Yield (field, shown name, value, problem) for each bad field, in field order."""
    v = info.format_version
    if not _is_int(v) or v < 1:
        yield "format_version", "format_version", v, "must be a whole number, 1 or more"
    elif v > FORMAT_VERSION:
        yield "format_version", "format_version", v, f"written by a newer engine (this one reads format {FORMAT_VERSION})"
    if info.architecture != ARCHITECTURE:
        yield "architecture", "architecture", info.architecture, f"not supported (expected {ARCHITECTURE!r})"
    bands = info.bands
    if not isinstance(bands, list) or len(bands) not in (1, 3) or \
            not all(isinstance(b, str) and b.strip() for b in bands):
        yield "bands", "bands", bands, 'must be a list of 1 or 3 band names, e.g. ["red", "green", "blue"]'
        bands = ["red", "green", "blue"]
    yield from _scaling_problems(info.scaling, len(bands))
    t = info.tile_size
    if not _is_int(t) or t < TILE_MULTIPLE or t % TILE_MULTIPLE or t > MAX_TILE_SIZE:
        yield "tile_size", "tile_size", t, f"must be a whole multiple of {TILE_MULTIPLE} from {TILE_MULTIPLE} to {MAX_TILE_SIZE} (px)"
    o = info.overlap
    if not _is_int(o) or o < 0 or (_is_int(t) and t > 0 and 2 * o >= t):
        limit = f" ({t // 2})" if _is_int(t) and t > 0 else ""
        yield "overlap", "overlap", o, f"must be a whole number of px, at least 0 and less than half the tile_size{limit}"
    if info.gsd is not None and (not _is_number(info.gsd) or info.gsd <= 0):
        yield "gsd", "gsd", info.gsd, "must be a positive number of metres per pixel (or null when unknown)"
    th = info.threshold
    if not _is_number(th) or not 0 < th < 1:
        yield "threshold", "threshold", th, "must be a number between 0 and 1 (exclusive)"
    if not isinstance(info.training, dict):
        yield "training", "training", info.training, "must be a mapping (JSON object)"
    if not isinstance(info.engine_version, str):
        yield "engine_version", "engine_version", info.engine_version, "must be a string"
    rt = info.review_threshold
    if not _is_number(rt) or not 0 < rt < 1:
        yield "review_threshold", "review_threshold", rt, "must be a number between 0 and 1 (exclusive)"


def _scaling_problems(scaling: Any, n_bands: int):
    if not isinstance(scaling, dict):
        yield "scaling", "scaling", scaling, f"must be a mapping with keys {', '.join(SCALING_KEYS)}"
        return
    for key in scaling:
        if key not in SCALING_KEYS:
            yield "scaling", f"scaling.{key}", scaling[key], f"unknown key (known: {', '.join(SCALING_KEYS)})"
    if "dtype" in scaling and scaling["dtype"] not in RASTER_DTYPES:
        yield "scaling", "scaling.dtype", scaling["dtype"], f"must be one of {', '.join(RASTER_DTYPES)}"
    lengths = "1 finite number (bands has 1 name)" if n_bands == 1 else \
        f"1 or {n_bands} finite numbers (one per band)"
    for key, positive in (("scale", True), ("mean", False), ("std", True)):
        if key not in scaling:
            continue
        values = scaling[key]
        if not isinstance(values, list) or len(values) not in {1, n_bands} or not all(map(_is_number, values)):
            yield "scaling", f"scaling.{key}", values, f"must be a list of {lengths}"
        elif positive and not all(x > 0 for x in values):
            yield "scaling", f"scaling.{key}", values, "must be above 0"


def check_info(info: "ModelInfo", source: str = "") -> None:
    """Raise :class:`MetadataError` (``"SOURCE: metadata FIELD = VALUE: problem"``) for the
    first field of the wrong type or out of range.

    Checked when a checkpoint is read (:meth:`ModelInfo.from_metadata`) and before one
    is written (:func:`save_checkpoint`): threshold and review_threshold in (0, 1); tile_size a multiple of 32
    (32..8192); 0 <= overlap < tile_size / 2; gsd > 0 or null; 1 or 3 band names;
    scaling's dtype a raster data type and its scale/mean/std lists of 1 value or one per
    band (scale and std above 0).
    """
    first = next(_metadata_problems(info), None)
    if first is not None:
        field_name, shown, value, problem = first
        raise MetadataError(source, field_name, f"metadata {shown} = {_shown(value)}: {problem}")


def check_model_file(path: str | os.PathLike, kind: str) -> Path:
    """``path`` as a :class:`Path`; :class:`UserError` when it is missing, not a file or
    empty (``kind``: what it should be, for the message: "a checkpoint", "an ONNX model")."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: model file not found")
    if not p.is_file():
        raise UserError(f"{p}: not a file")
    if os.path.getsize(p) == 0:
        raise UserError(f"{p}: empty file, not {kind}")
    return p
