"""Bands, radiometric scaling and nodata: raw pixels of one date -> the model's input.

Every choice is an affine map ``v = raw * gain + offset`` per band, optionally clipped to
[0, 1], followed by the checkpoint's ``(v - mean) / std``:

- ``checkpoint``: the raster's data type is the checkpoint's ``scaling.dtype``
  (``uint8`` for the authors' model): ``v = raw * scale``.
- ``8-bit``: an 8-bit raster with a checkpoint scaled for another type: ``v = raw / 255``.
- ``stretch``: 16-bit or float bands the checkpoint has no scaling for: per-band 2-98 %
  percentile stretch, ``v = clip((raw - p2) / (p98 - p2), 0, 1)``, with the percentiles
  taken from a sample of windows spread over the processed area of that date.

One band is replicated to the three the model expects. Pixels that are nodata (nodata
value, internal mask, alpha, NaN) in either date are set to 0 in both dates after
normalisation, so the network sees no difference there; they are reported as "no
change" and written as nodata.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from rasterio.windows import Window

from ..errors import UserError

__all__ = [
    "Radiometry",
    "select_bands",
    "choose_radiometry",
    "sample_windows",
    "percentiles",
    "needs_stretch",
    "normalize",
    "model_input",
]

LOW_PCT, HIGH_PCT = 2.0, 98.0


def select_bands(path: str, count: int, requested: Optional[Sequence[int]], option: str,
                 colorinterp: Sequence[str] = ()) -> tuple[int, ...]:
    """The 1-based band indices to read for one date (1 or 3 of them).

    Default: 1,2,3 when the raster has three or more bands (ignoring alpha), else band 1.
    Raises :class:`UserError` naming ``path`` for an index out of range or a count other
    than 1 or 3.
    """
    if requested is None or len(requested) == 0:
        data = [i + 1 for i in range(count) if not (i < len(colorinterp) and colorinterp[i] == "alpha")]
        return tuple(data[:3]) if len(data) >= 3 else (data[0] if data else 1,)
    bands = tuple(int(b) for b in requested)
    if len(bands) not in (1, 3):
        raise UserError(f"{option} {','.join(map(str, bands))}: give 1 or 3 band indices (1-based)")
    for b in bands:
        if b < 1 or b > count:
            raise UserError(f"{path}: band {b} out of range ({option}; the raster has {count} band{'s' if count != 1 else ''})")
    return bands


@dataclass
class Radiometry:
    """How one date's raw values become model input (per band of the 3 fed to the model).

    Attributes:
        mode: ``checkpoint``, ``8-bit`` or ``stretch``.
        dtype: the raster's data type.
        gain, offset: ``v = raw * gain + offset`` (3 values each).
        clip: whether ``v`` is clipped to [0, 1] (stretch).
        mean, std: the checkpoint's normalisation (3 values each).
        low, high: the stretch percentiles in raw units (stretch only).
    """

    mode: str
    dtype: str
    gain: np.ndarray
    offset: np.ndarray
    clip: bool
    mean: np.ndarray
    std: np.ndarray
    low: Optional[list] = None
    high: Optional[list] = None
    _a: np.ndarray = field(init=False, repr=False)
    _b: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # fold v*gain+offset and (v-mean)/std into one multiply-add when there is no clip
        self._a = (self.gain / self.std).astype(np.float32)[:, None, None]
        self._b = ((self.offset - self.mean) / self.std).astype(np.float32)[:, None, None]

    def describe(self) -> dict:
        """For the log and the JSON ``start`` event."""
        d = {"mode": self.mode, "dtype": self.dtype}
        if self.mode == "stretch":
            d.update(low=[round(float(v), 6) for v in self.low], high=[round(float(v), 6) for v in self.high])
        return d


def _triple(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=np.float64).ravel()
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3:
        raise UserError(f"model metadata: scaling.{name} must have 1 or 3 values, has {arr.size}")
    return arr


def choose_radiometry(dtype: str, scaling: dict, low: Optional[Sequence[float]] = None,
                      high: Optional[Sequence[float]] = None) -> Radiometry:
    """Pick the scaling of one date from its data type and the checkpoint's ``scaling``.

    ``low``/``high`` (raw units, 1 or 3 values) are required only when the result is a
    stretch; call :func:`needs_stretch` first to know whether to sample them.
    """
    mean = _triple(scaling.get("mean", [0.485, 0.456, 0.406]), "mean")
    std = _triple(scaling.get("std", [0.229, 0.224, 0.225]), "std")
    if dtype == scaling.get("dtype", "uint8"):
        gain = _triple(scaling.get("scale", [1 / 255.0]), "scale")
        return Radiometry("checkpoint", dtype, gain, np.zeros(3), False, mean, std)
    if dtype == "uint8":
        return Radiometry("8-bit", dtype, np.full(3, 1 / 255.0), np.zeros(3), False, mean, std)
    if low is None or high is None:
        raise ValueError("a stretch needs low/high percentiles")
    lo, hi = _triple(low, "low"), _triple(high, "high")
    span = np.where(hi > lo, hi - lo, 1.0)
    return Radiometry("stretch", dtype, 1.0 / span, -lo / span, True, mean, std, low=list(lo), high=list(hi))


def needs_stretch(dtype: str, scaling: dict) -> bool:
    """True when :func:`choose_radiometry` will need sampled percentiles."""
    return dtype != scaling.get("dtype", "uint8") and dtype != "uint8"


def sample_windows(width: int, height: int, size: int = 256, count: int = 16) -> list[Window]:
    """Up to ``count`` windows of ``size`` px spread evenly over a ``width`` x ``height``
    area (a sqrt(count) x sqrt(count) grid; the whole area when it is small)."""
    n = max(1, int(round(count ** 0.5)))
    sw, sh = min(size, width), min(size, height)
    xs = sorted({int(round(x)) for x in np.linspace(0, width - sw, n)})
    ys = sorted({int(round(y)) for y in np.linspace(0, height - sh, n)})
    return [Window(x, y, sw, sh) for y in ys for x in xs]


def percentiles(samples: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[list, list]:
    """Per-band 2 % and 98 % percentiles of the valid pixels of ``samples``.

    Args:
        samples: (raw (bands, h, w), valid (h, w) bool) pairs.

    Returns:
        (low, high), one value per band; (0, 1) for a band without a valid pixel.
    """
    bands = samples[0][0].shape[0]
    low, high = [], []
    for b in range(bands):
        vals = [raw[b][valid & np.isfinite(raw[b])] for raw, valid in samples]
        v = np.concatenate(vals) if vals else np.empty(0)
        if v.size == 0:
            low.append(0.0), high.append(1.0)
            continue
        lo, hi = np.percentile(v.astype(np.float64), [LOW_PCT, HIGH_PCT])
        low.append(float(lo)), high.append(float(hi))
    return low, high


def normalize(raw: np.ndarray, rad: Radiometry) -> np.ndarray:
    """Raw pixels (3, h, w) of one date -> normalised float32 (3, h, w) model input."""
    x = raw.astype(np.float32, copy=False)
    if rad.clip:
        v = x * rad.gain.astype(np.float32)[:, None, None] + rad.offset.astype(np.float32)[:, None, None]
        np.clip(v, 0.0, 1.0, out=v)
        return (v - rad.mean.astype(np.float32)[:, None, None]) / rad.std.astype(np.float32)[:, None, None]
    return x * rad._a + rad._b


def model_input(before: np.ndarray, after: np.ndarray, valid: np.ndarray, rad_before: Radiometry,
                rad_after: Radiometry, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The 6-channel input (before RGB, after RGB) of one tile, float32 (6, h, w).

    Args:
        before, after: raw pixels (3, h, w) (one band already replicated to three).
        valid: (h, w) bool, True where both dates have data; elsewhere both dates are 0.
        out: optional (6, h, w) float32 array to write into.
    """
    if out is None:
        out = np.empty((6,) + valid.shape, dtype=np.float32)
    out[:3] = normalize(before, rad_before)
    out[3:] = normalize(after, rad_after)
    if not valid.all():
        out[:, ~valid] = 0.0
    if rad_before.dtype.startswith("float") or rad_after.dtype.startswith("float"):
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out
