"""GeoTIFF outputs on the processed area's grid, written strip by strip.

- probability: ``uint8`` storing ``round(p * 254)`` with 255 = nodata (``p = v / 254``),
  or ``float32`` storing ``p`` with nodata -1;
- mask: ``uint8`` 1 = change (``p > threshold``), 0 = no change, 255 = nodata.

Both are tiled (256 px blocks), DEFLATE-compressed GeoTIFFs with overviews (average for
the probability, nearest for the mask). Files are written in a private staging folder
beside their targets (see :func:`temporary_path`); the caller renames them when
everything has succeeded and removes them otherwise. A failed write (disk full, ...)
raises a one-line :class:`~engine.errors.UserError` naming the user's output.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

__all__ = [
    "PROB_NODATA_U8",
    "PROB_NODATA_F32",
    "MASK_NODATA",
    "encode_probability",
    "decode_probability",
    "threshold_mask",
    "temporary_path",
    "GeoTiffStripWriter",
    "build_overviews",
]

PROB_NODATA_U8 = 255
PROB_NODATA_F32 = -1.0
MASK_NODATA = 255
BLOCK = 256


def encode_probability(prob: np.ndarray, valid: np.ndarray, dtype: str = "uint8") -> np.ndarray:
    """Probabilities (rows, cols) float in [0, 1] -> stored values (see module docstring)."""
    if dtype == "uint8":
        tmp = np.multiply(prob, np.float32(254.0), dtype=np.float32)  # one temporary, reused in place
        np.clip(tmp, 0.0, 254.0, out=tmp)
        np.rint(tmp, out=tmp)
        out = tmp.astype(np.uint8)
        out[~valid] = PROB_NODATA_U8
        return out
    if dtype == "float32":
        out = np.clip(prob, 0.0, 1.0).astype(np.float32)
        out[~valid] = PROB_NODATA_F32
        return out
    raise ValueError(f"probability dtype {dtype!r}: expected uint8 or float32")


def decode_probability(stored: np.ndarray) -> np.ndarray:
    """Stored probability values -> float32 probabilities, NaN at nodata."""
    if stored.dtype == np.uint8:
        out = stored.astype(np.float32) / 254.0
        out[stored == PROB_NODATA_U8] = np.nan
        return out
    out = stored.astype(np.float32)
    out[stored < 0] = np.nan
    return out


def threshold_mask(prob: np.ndarray, valid: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 mask (rows, cols): 1 where ``prob > threshold``, 0 elsewhere, 255 at nodata."""
    out = (prob > threshold).astype(np.uint8)
    out[~valid] = MASK_NODATA
    return out


def temporary_path(target: str | os.PathLike, tag: str = "") -> Path:
    """Where to write ``target`` for now: ``TAG.EXT`` in this run's private staging folder
    beside it (created exclusively with an unpredictable name, see
    :func:`engine.outputs.temporary`), so the drivers see the same extension."""
    from ..outputs import temporary

    return temporary(target, tag or "tmp")


@contextlib.contextmanager
def _writing(path: Optional[Path]) -> Iterator[None]:
    """GDAL/OS failures while writing ``path`` -> one line naming the user's output."""
    try:
        yield
    except (rasterio.errors.RasterioError, CPLE_BaseError, OSError) as exc:
        from ..outputs import write_error

        raise write_error(path, exc) from None


_LIBTIFF_QUIET: list = []


def _quiet_libtiff() -> None:
    """Drop libtiff's own stderr messages ("_tiffSeekProc: No space left on device."),
    which bypass GDAL's error handling: the failure still raises, and is reported in one
    line. Linux only (finds the loaded libtiff in /proc/self/maps); best effort, once."""
    if _LIBTIFF_QUIET:
        return
    _LIBTIFF_QUIET.append(True)
    try:
        import ctypes

        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "libtiff" in line and "/" in line}
        for path in libs:
            lib = ctypes.CDLL(path)
            lib.TIFFSetErrorHandler.restype = lib.TIFFSetWarningHandler.restype = ctypes.c_void_p
            lib.TIFFSetErrorHandler(None)
            lib.TIFFSetWarningHandler(None)
    except (OSError, AttributeError):
        pass


def _verify(path: Path) -> None:
    """Reopen a finished file: GDAL reports some failed writes (a full disk while
    flushing) only by leaving a broken file."""
    try:
        with rasterio.open(path):
            pass
    except (rasterio.errors.RasterioError, CPLE_BaseError, TypeError, OSError) as exc:
        from ..outputs import write_error

        raise write_error(path, exc) from None


def _profile(width: int, height: int, transform: Optional[Affine], crs, dtype: str, nodata: float) -> dict:
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype=dtype,
        nodata=nodata,
        compress="deflate",
        predictor=2 if dtype == "uint8" else 3,
        zlevel=6,
        BIGTIFF="IF_SAFER",
        num_threads=2,
    )
    if width >= BLOCK and height >= BLOCK:
        profile.update(tiled=True, blockxsize=BLOCK, blockysize=BLOCK)
    else:
        profile.update(tiled=False, blockysize=min(height, 16))
    if crs is not None:
        profile["crs"] = crs
    if transform is not None and not transform.is_identity:
        profile["transform"] = transform
    return profile


def build_overviews(path: str | os.PathLike, resampling: Resampling, min_size: int = BLOCK) -> list[int]:
    """Add internal overviews (factors 2, 4, 8, ... while the level is >= ``min_size``
    px on its longer side); returns the factors."""
    _verify(Path(path))
    with _writing(Path(path)), rasterio.open(path, "r+") as ds:
        longest = max(ds.width, ds.height)
        factors = []
        f = 2
        while longest / f >= min_size:
            factors.append(f)
            f *= 2
        if factors:
            ds.build_overviews(factors, resampling)
            ds.update_tags(ns="rio_overview", resampling=resampling.name)
    return factors


class GeoTiffStripWriter:
    """Writes the probability and/or mask rows of the processed area as they are finished.

    Args:
        width, height: raster size in pixels.
        transform, crs: georeferencing (None/identity for pixel space).
        prob_path, mask_path: where to write (temporary names), either may be None.
        prob_dtype: ``uint8`` or ``float32``.
        review_path: where to write the hard-region score (encoded like the probability,
            in ``prob_dtype``), or None.
        threshold: change when probability > threshold.
        tags: metadata written to both files.
    """

    def __init__(self, width: int, height: int, transform: Optional[Affine], crs, *,
                 prob_path: Optional[str | os.PathLike] = None, mask_path: Optional[str | os.PathLike] = None,
                 prob_dtype: str = "uint8", threshold: float = 0.5, tags: Optional[dict] = None,
                 review_path: Optional[str | os.PathLike] = None) -> None:
        self.width, self.height = width, height
        self.prob_dtype = prob_dtype
        self.threshold = threshold
        self.prob_path = Path(prob_path) if prob_path else None
        self.mask_path = Path(mask_path) if mask_path else None
        self.review_path = Path(review_path) if review_path else None
        self._review = None
        self.changed_pixels = 0
        self.valid_pixels = 0
        self._rows_written = 0
        self._prob = self._mask = None
        _quiet_libtiff()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            if self.prob_path:
                nodata = PROB_NODATA_U8 if prob_dtype == "uint8" else PROB_NODATA_F32
                with _writing(self.prob_path):
                    self._prob = rasterio.open(self.prob_path, "w", **_profile(width, height, transform, crs, prob_dtype, nodata))
                    self._prob.update_tags(**(tags or {}), encoding="p = value / 254" if prob_dtype == "uint8" else "p")
            if self.mask_path:
                with _writing(self.mask_path):
                    self._mask = rasterio.open(self.mask_path, "w", **_profile(width, height, transform, crs, "uint8", MASK_NODATA))
                    self._mask.update_tags(**(tags or {}), threshold=str(threshold), values="1 change, 0 no change, 255 nodata")
            if self.review_path:
                nodata = PROB_NODATA_U8 if prob_dtype == "uint8" else PROB_NODATA_F32
                with _writing(self.review_path):
                    self._review = rasterio.open(self.review_path, "w",
                                                 **_profile(width, height, transform, crs, prob_dtype, nodata))
                    self._review.update_tags(**(tags or {}), content="hard-region (review) score",
                                             encoding="score = value / 254" if prob_dtype == "uint8" else "score")

    def write(self, row0: int, prob: np.ndarray, valid: np.ndarray, review: Optional[np.ndarray] = None) -> None:
        """Write rows ``row0 .. row0 + len(prob)`` (prob and review float (rows, width), valid bool)."""
        n = prob.shape[0]
        window = Window(0, row0, self.width, n)
        mask = threshold_mask(prob, valid, self.threshold)
        self.changed_pixels += int(np.count_nonzero(mask == 1))
        self.valid_pixels += int(np.count_nonzero(valid))
        if self._prob is not None:
            with _writing(self.prob_path):
                self._prob.write(encode_probability(prob, valid, self.prob_dtype), 1, window=window)
        if self._mask is not None:
            with _writing(self.mask_path):
                self._mask.write(mask, 1, window=window)
        if self._review is not None:
            score = review if review is not None else np.zeros_like(prob)
            with _writing(self.review_path):
                self._review.write(encode_probability(score, valid if review is not None else np.zeros_like(valid),
                                                      self.prob_dtype), 1, window=window)
        self._rows_written = max(self._rows_written, row0 + n)

    def close(self, overviews: bool = True) -> None:
        """Close the files and (when complete and asked) build overviews."""
        for ds, path in ((self._prob, self.prob_path), (self._mask, self.mask_path), (self._review, self.review_path)):
            if ds is not None and not ds.closed:
                with _writing(path):
                    ds.close()
                if self._rows_written >= self.height:
                    _verify(path)
        if overviews and self._rows_written >= self.height:
            if self.prob_path:
                build_overviews(self.prob_path, Resampling.average)
            if self.mask_path:
                build_overviews(self.mask_path, Resampling.nearest)
            if self.review_path:
                build_overviews(self.review_path, Resampling.average)

    def abort(self) -> None:
        """Close without overviews and delete the files."""
        self.close(overviews=False)
        for p in (self.prob_path, self.mask_path, self.review_path):
            if p is not None and p.exists():
                p.unlink()
