"""Does the model fit the imagery? What a checkpoint says about itself, and warnings.

Pure functions (no files, no torch): :func:`describe_model` turns a checkpoint's
:class:`~engine.checkpoint.ModelInfo` into log lines (architecture, bands, GSD it was
trained at, purpose, training summary); :func:`fit_warnings` compares it with the
raster's ground sampling distance. :func:`report` does both for a detection run and
sends them to its :class:`~engine.events.Events`, so the CLI and the QGIS plugin show the
same lines.
"""
from __future__ import annotations

import math
from typing import Any, Optional

__all__ = ["GSD_RATIO_LIMIT", "is_demonstration", "describe_model", "fit_warnings", "raster_gsd_m", "report"]

#: A raster whose GSD differs from the model's by more than this factor gets a warning.
GSD_RATIO_LIMIT = 2.0
_EARTH_RADIUS_M = 6_371_008.8


def is_demonstration(info: Any) -> bool:
    """True when the checkpoint says it is a demonstration model (``training.purpose``
    mentions "demonstration", or ``training.demo`` is true)."""
    training = getattr(info, "training", None) or {}
    purpose = str(training.get("purpose") or "")
    return bool(training.get("demo")) or "demonstration" in purpose.lower()


def describe_model(info: Any, source: str = "model") -> list[str]:
    """Log lines about the checkpoint ``info`` (a ModelInfo) read from ``source``.

    Example: ``["model.safetensors: HRMNet, bands red,green,blue (uint8), trained at
    0.5 m/pixel, tiles 256 px (overlap 64), threshold 0.5", "purpose: ...",
    "training: 600 steps on /data, best validation F1 0.930 (step 600)"]``.
    """
    gsd = getattr(info, "gsd", None)
    dtype = (getattr(info, "scaling", None) or {}).get("dtype")
    lines = [
        f"{source}: {info.architecture}, bands {','.join(str(b) for b in info.bands)}"
        + (f" ({dtype})" if dtype else "")
        + (f", trained at {gsd:g} m/pixel" if gsd else ", ground sampling distance it was trained at: unknown")
        + f", tiles {info.tile_size} px (overlap {info.overlap}), threshold {info.threshold:g}"
    ]
    training = getattr(info, "training", None) or {}
    if training.get("purpose"):
        lines.append(f"purpose: {training['purpose']}")
    summary = _training_summary(training)
    if summary:
        lines.append(f"training: {summary}")
    return lines


def _training_summary(training: dict) -> str:
    parts = []
    steps = training.get("step") or training.get("steps")
    if steps:
        parts.append(f"{steps} steps" + (f" on {training['data']}" if training.get("data") else ""))
    best = training.get("best_val") or {}
    if isinstance(best.get("f1"), (int, float)):
        at = f" (step {training['best_step']})" if training.get("best_step") else ""
        parts.append(f"best validation F1 {best['f1']:.3f}{at}")
    test = training.get("test") or {}
    if isinstance(test.get("f1"), (int, float)):
        parts.append(f"test F1 {test['f1']:.3f}")
    return ", ".join(parts)


def fit_warnings(info: Any, raster_gsd: Optional[float], source: str = "model",
                 raster: str = "raster") -> list[str]:
    """Warnings when the model does not fit the imagery (empty list: nothing to say).

    Args:
        info: the checkpoint's ModelInfo (``gsd`` in m/pixel or None; ``training``).
        raster_gsd: the raster's ground sampling distance in m/pixel, or None (no CRS).
        source, raster: names used in the messages (the checkpoint's and the raster's paths).

    A demonstration model is always reported; a GSD ratio above :data:`GSD_RATIO_LIMIT`
    (either way) is reported when both GSDs are known.
    """
    warnings = []
    if is_demonstration(info):
        purpose = str((info.training or {}).get("purpose") or "a demonstration model")
        warnings.append(f"{source}: this is a demonstration model ({purpose}); expect poor or empty "
                        "results on other imagery")
    model_gsd = getattr(info, "gsd", None)
    if model_gsd and raster_gsd and model_gsd > 0 and raster_gsd > 0:
        ratio = max(raster_gsd / model_gsd, model_gsd / raster_gsd)
        if ratio > GSD_RATIO_LIMIT:
            coarser = "coarser" if raster_gsd > model_gsd else "finer"
            warnings.append(f"{raster}: {raster_gsd:.3g} m/pixel is {ratio:.3g}x {coarser} than the "
                            f"{model_gsd:g} m/pixel {source} was trained at; results may be poor "
                            "(resample the imagery or use a model trained at this resolution)")
    return warnings


def raster_gsd_m(transform: Any, crs: Any, height: int) -> Optional[float]:
    """Ground sampling distance in metres of a grid (square root of the pixel area at the
    middle row), or None without a CRS. ``transform`` is an affine (``a`` = pixel width,
    ``e`` = pixel height, ``f`` = top edge); ``crs`` has ``is_geographic`` and
    ``linear_units_factor`` like rasterio's/pyproj's CRS."""
    if crs is None:
        return None
    w, h = abs(transform.a), abs(transform.e)
    if getattr(crs, "is_geographic", False):
        lat = math.radians(transform.f + transform.e * height / 2.0)
        area = math.radians(w) * _EARTH_RADIUS_M * math.cos(lat) * math.radians(h) * _EARTH_RADIUS_M
        return math.sqrt(abs(area)) if area else None
    try:
        factor = float(crs.linear_units_factor[1])
    except Exception:  # noqa: BLE001 - unknown units: assume metres
        factor = 1.0
    return math.sqrt(w * h) * factor


def report(info: Any, pair: Any, events: Any, source: str = "model") -> list[str]:
    """Log the model's description and warn when it does not fit ``pair`` (a RasterPair:
    ``transform``, ``crs``, ``height``, ``before.path``); returns the warnings."""
    for line in describe_model(info, source):
        events.log(line)
    gsd = raster_gsd_m(pair.transform, pair.crs, pair.height)
    raster = str(getattr(getattr(pair, "before", None), "path", "raster"))
    warnings = fit_warnings(info, gsd, source, raster)
    for message in warnings:
        events.warn(message)
    return warnings
