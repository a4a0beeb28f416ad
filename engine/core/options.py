"""The request's options, checked before anything is read: :func:`validate_options` gives a
:class:`DetectOptions` or raises the first mistake as a one-line :class:`UserError` named as
on the command line (``--tile-size 100: must be a positive multiple of 32``). No file
access, no model, no torch. Scene (:mod:`engine.detect`) and sheets (:mod:`engine.sheets`)
take the same options.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

from ..errors import UserError

__all__ = ["DetectOptions", "validate_options", "parse_extent", "parse_review_threshold", "PROBABILITY_DTYPES"]

PROBABILITY_DTYPES = ("uint8", "float32")
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DetectOptions:
    """Detection options, checked (see :func:`validate_options`); None = the model's default.

    Attributes:
        bands_before, bands_after: 1-based band indices (1 or 3), or None.
        tile_size, overlap: pixels. batch_size: tiles per forward pass. read_threads: readers.
        device, precision: as :func:`engine.runtime.select_runtime` takes them.
        threshold: change when probability > threshold (0..1 exclusive).
        min_area: m² (>= 0). simplify: metres (>= 0).
        extent: (xmin, ymin, xmax, ymax) in the before's CRS, or None.
        probability_dtype: ``uint8`` or ``float32``.
    """

    bands_before: Optional[tuple] = None
    bands_after: Optional[tuple] = None
    tile_size: Optional[int] = None
    overlap: Optional[int] = None
    batch_size: Optional[int] = None
    read_threads: Optional[int] = None
    device: str = "auto"
    precision: str = "auto"
    threshold: Optional[float] = None
    min_area: float = 0.0
    simplify: float = 0.0
    extent: Optional[tuple] = None
    probability_dtype: str = "uint8"

    def as_dict(self) -> dict:
        """Plain JSON-able values (for a run folder's settings)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _number(value: Any, option: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{option} {value}: expected a number") from None
    if not math.isfinite(v):
        raise UserError(f"{option} {value}: must be a finite number")
    return v


def _integer(value: Any, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str, float)):
        raise UserError(f"{option} {value}: expected a whole number")
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{option} {value}: expected a whole number") from None
    if isinstance(value, float) and v != value:
        raise UserError(f"{option} {value}: expected a whole number")
    return v


def _bands(value: Optional[Sequence[int]], option: str) -> Optional[tuple]:
    if value is None or (not isinstance(value, str) and len(value) == 0):
        return None
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    bands = tuple(_integer(b, option) for b in value)
    if len(bands) not in (1, 3) or any(b < 1 for b in bands):
        raise UserError(f"{option} {','.join(map(str, bands))}: give 1 or 3 band numbers (1-based)")
    return bands


def _device(device: Optional[str]) -> str:
    """auto, cpu, cuda[:N]; with an ONNX model also tensorrt[:N], directml[:N] (checked
    against the model type when it loads)."""
    d = (device or "auto").strip().lower()
    kind, _, index = d.partition(":")
    ok = d in ("auto", "cpu") or (kind in ("cuda", "tensorrt", "directml", "dml") and (not index or index.isdigit()))
    if not ok:
        raise UserError(f"--device {device}: expected auto, cpu, cuda or cuda:N "
                        "(with an ONNX model also tensorrt[:N] or directml[:N])")
    return d


def parse_extent(extent) -> Optional[tuple[float, float, float, float]]:
    """``--extent``: None, or (xmin, ymin, xmax, ymax) from four numbers or "xmin,ymin,xmax,ymax"."""
    if extent is None:
        return None
    if isinstance(extent, str):
        try:
            extent = [float(v) for v in extent.split(",")]
        except ValueError as exc:
            raise UserError(f"--extent {extent}: expected xmin,ymin,xmax,ymax (numbers)") from exc
    ext = tuple(float(v) for v in extent)
    if len(ext) != 4 or not all(math.isfinite(v) for v in ext):
        raise UserError(f"--extent {','.join(map(str, extent))}: expected four numbers xmin,ymin,xmax,ymax")
    if ext[0] >= ext[2] or ext[1] >= ext[3]:
        raise UserError(f"--extent {','.join(f'{v:g}' for v in ext)}: xmin must be < xmax and ymin < ymax")
    return ext  # type: ignore[return-value]


def parse_review_threshold(value) -> Optional[float]:
    """``--review-threshold``: None or a number strictly between 0 and 1."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--review-threshold {value}: expected a number") from None
    if not 0.0 < v < 1.0:
        raise UserError(f"--review-threshold {value}: must be between 0 and 1")
    return v


def validate_options(*, bands_before=None, bands_after=None, tile_size=None, overlap=None, batch_size=None,
                     read_threads=None, device: str = "auto", precision: str = "auto", threshold=None,
                     min_area=0.0, simplify=0.0, extent=None, probability_dtype: str = "uint8") -> DetectOptions:
    """Check every detection option (no file access, no model, no torch) and return them.

    Raises:
        UserError: the first bad option, named as on the command line.
    """
    from ..raster.tiles import MULTIPLE, check_tiling

    if probability_dtype not in PROBABILITY_DTYPES:
        raise UserError(f"--probability-dtype {probability_dtype}: expected uint8 or float32")
    min_area = _number(min_area, "--min-area")
    if min_area < 0:
        raise UserError(f"--min-area {min_area:g}: must be 0 or more (m²)")
    simplify = _number(simplify, "--simplify")
    if simplify < 0:
        raise UserError(f"--simplify {simplify:g}: must be 0 or more (metres)")
    if threshold is not None:
        threshold = _number(threshold, "--threshold")
        if not 0.0 < threshold < 1.0:
            raise UserError(f"--threshold {threshold:g}: must be between 0 and 1")
    if batch_size is not None:
        batch_size = _integer(batch_size, "--batch-size")
        if batch_size < 1:
            raise UserError(f"--batch-size {batch_size}: must be at least 1")
    if read_threads is not None:
        read_threads = _integer(read_threads, "--read-threads")
        if not 1 <= read_threads <= 64:
            raise UserError(f"--read-threads {read_threads}: must be between 1 and 64")
    if tile_size is not None:
        tile_size = _integer(tile_size, "--tile-size")
        if tile_size <= 0 or tile_size % MULTIPLE:
            raise UserError(f"--tile-size {tile_size}: must be a positive multiple of {MULTIPLE}")
    if overlap is not None:
        overlap = _integer(overlap, "--overlap")
        if overlap < 0:
            raise UserError(f"--overlap {overlap}: must be at least 0")
    if tile_size is not None and overlap is not None:
        check_tiling(tile_size, overlap)
    precision = (precision or "auto").strip().lower()
    if precision not in _PRECISIONS:
        raise UserError(f"--precision {precision}: expected one of {', '.join(_PRECISIONS)}")
    return DetectOptions(bands_before=_bands(bands_before, "--bands-before"),
                         bands_after=_bands(bands_after, "--bands-after"), tile_size=tile_size, overlap=overlap,
                         batch_size=batch_size, read_threads=read_threads, device=_device(device),
                         precision=precision, threshold=threshold, min_area=min_area, simplify=simplify,
                         extent=parse_extent(extent), probability_dtype=probability_dtype)
