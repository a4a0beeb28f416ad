"""Open the two dates and put the after on the before's pixel grid.

The processed area is a window of the before raster: the intersection of both extents
(and of ``--extent``, given in the before's CRS), rounded inwards to whole before
pixels. The after is read directly when it already lies on the before's grid (same CRS
and resolution, whole-pixel offset); otherwise through a :class:`rasterio.vrt.WarpedVRT`
onto the before's grid with bilinear resampling, with an alpha band so that the area the
after does not cover reads as nodata. Nothing is read until :meth:`RasterPair.read`.

A raster without georeferencing is paired in pixel space (top-left corners together)
with a warning.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..errors import UserError
from ..events import Events
from .radiometry import select_bands
from .read_errors import reading, window_text

__all__ = ["DateSource", "RasterPair", "open_pair", "open_raster"]

_EPS = 1e-6  # pixel tolerance for "same grid"


def open_raster(path: str | os.PathLike, role: str = "raster") -> rasterio.DatasetReader:
    """Open ``path`` with rasterio, or raise :class:`UserError` naming it."""
    p = str(path)
    if not os.path.exists(p):
        raise UserError(f"{p}: {role} file not found")
    if os.path.isdir(p) and not p.lower().endswith((".gdb", ".safe", ".zarr")):
        raise UserError(f"{p}: is a folder, not a raster")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(p)
    except (RasterioIOError, OSError) as exc:
        raise UserError(f"{p}: not a raster GDAL can read") from exc
    if ds.count < 1 or ds.width < 1 or ds.height < 1:
        ds.close()
        raise UserError(f"{p}: raster has no bands or no pixels")
    return ds


def one_band_warning(path: str, band: int, count: int) -> str:
    """What is said when one band of ``path`` is fed to the model as red, green and blue."""
    has = "a single band" if count == 1 else f"band {band} of {count} chosen"
    return (f"{path}: {has}; band {band} is copied to red, green and blue (the model's three inputs: a model "
            "trained on colour imagery sees a grey image)")


def _georeferenced(ds) -> bool:
    return not ds.transform.is_identity or ds.crs is not None


@dataclass
class _Seen:
    """Whether any valid pixel was read yet (shared by a pair and its reopened copies)."""

    valid: bool = False


@dataclass
class DateSource:
    """One date as read on the processed area's grid.

    Attributes:
        path: the file.
        dataset: what is read (the file, or a WarpedVRT of it on the before's grid).
        bands: 1-based band indices (1 or 3).
        dtype: data type of those bands.
        col_off, row_off: pixel offset of the processed area in ``dataset``.
        warped: whether the after is resampled.
        nodata: the nodata value, if any (for NaN detection in float data).
        seen: whether any read so far returned a valid pixel of this date.
    """

    path: str
    dataset: object
    bands: tuple
    dtype: str
    col_off: int
    row_off: int
    warped: bool = False
    nodata: Optional[float] = None
    seen: _Seen = field(default_factory=_Seen)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Raw pixels (3, h, w) and validity (h, w) bool of ``window`` (processed-area
        pixel coordinates; must lie inside the area)."""
        win = Window(window.col_off + self.col_off, window.row_off + self.row_off, window.width, window.height)
        unique = sorted(set(self.bands))
        where = window_text(int(win.col_off), int(win.row_off), int(win.width), int(win.height))
        with reading(self.path, f"{where} (resampled onto the before's grid)" if self.warped else where):
            raw = self.dataset.read(unique, window=win)
            masks = self.dataset.read_masks(unique, window=win)
        valid = np.all(masks > 0, axis=0)
        if raw.dtype.kind == "f":
            valid &= np.all(np.isfinite(raw), axis=0)
        if not self.seen.valid and valid.any():
            self.seen.valid = True
        if len(self.bands) == 1:
            raw = np.broadcast_to(raw[0], (3,) + raw.shape[1:])
        elif tuple(unique) != tuple(self.bands):
            raw = raw[[unique.index(b) for b in self.bands]]
        return raw, valid


@dataclass
class RasterPair:
    """Both dates on the before's grid, restricted to the processed area.

    Attributes:
        before, after: the two :class:`DateSource`.
        width, height: size of the processed area in before pixels.
        transform: affine transform of the processed area (before CRS units).
        crs: the before's CRS (None in pixel space or when the before has none).
        georeferenced: False when pairing happened in pixel space.
    """

    before: DateSource
    after: DateSource
    width: int
    height: int
    transform: Affine
    crs: object
    georeferenced: bool
    _to_close: tuple = ()
    _args: tuple = ()
    _both_seen: _Seen = field(default_factory=_Seen)

    def reopen(self) -> "RasterPair":
        """An independent pair on the same files and area, for another reader thread
        (rasterio datasets must not be shared between threads)."""
        pair = open_pair(*self._args)
        if (pair.width, pair.height) != (self.width, self.height):  # pragma: no cover - files changed under us
            pair.close()
            raise RuntimeError("the rasters changed while being read")
        pair.before.seen, pair.after.seen, pair._both_seen = self.before.seen, self.after.seen, self._both_seen
        return pair

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(before raw (3,h,w), after raw (3,h,w), valid (h,w) bool: both dates have data)."""
        b, vb = self.before.read(window)
        a, va = self.after.read(window)
        valid = vb & va
        if not self._both_seen.valid and valid.any():
            self._both_seen.valid = True
        return b, a, valid

    def nodata_warnings(self) -> list[str]:
        """Warnings for what every :meth:`read` so far (this pair and its reopened copies)
        found: a date without a single valid pixel, or dates whose valid pixels never
        coincide. Call after reading the whole area; costs nothing more."""
        if self._both_seen.valid:
            return []
        empty = [(role, src) for role, src in (("before", self.before), ("after", self.after)) if not src.seen.valid]
        if empty:
            return [f"{src.path}: entirely nodata in the processed area (the {role} date has no valid pixel); "
                    "every output pixel is nodata" for role, src in empty]
        return [f"{self.after.path}: its valid pixels never coincide with those of {self.before.path}; "
                "every output pixel is nodata"]

    def describe(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "crs": self.crs.to_string() if self.crs else None,
            "warped_after": self.after.warped,
            "bands_before": list(self.before.bands),
            "bands_after": list(self.after.bands),
        }

    def close(self) -> None:
        for ds in self._to_close:
            with contextlib.suppress(Exception):  # closing is best effort
                ds.close()
        self._to_close = ()

    def __enter__(self) -> "RasterPair":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _inner_window(bounds: tuple[float, float, float, float], transform: Affine, width: int, height: int) -> Window:
    """Before pixels fully inside ``bounds`` (xmin, ymin, xmax, ymax), clipped to the raster."""
    inv = ~transform
    xs, ys = [], []
    for x, y in ((bounds[0], bounds[1]), (bounds[0], bounds[3]), (bounds[2], bounds[1]), (bounds[2], bounds[3])):
        c, r = inv @ (x, y)
        xs.append(c), ys.append(r)
    c0 = max(0, math.ceil(min(xs) - _EPS))
    c1 = min(width, math.floor(max(xs) + _EPS))
    r0 = max(0, math.ceil(min(ys) - _EPS))
    r1 = min(height, math.floor(max(ys) + _EPS))
    return Window(c0, r0, max(0, c1 - c0), max(0, r1 - r0))


def _intersect(a, b):
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def _same_grid(bt: Affine, at: Affine) -> Optional[tuple[int, int]]:
    """Whole-pixel offset (cols, rows) of the before's origin in the after's grid, or None
    when the grids differ (resolution, rotation, sub-pixel shift)."""
    scale = max(abs(bt.a), abs(bt.e), 1e-12)
    for k in ("a", "b", "d", "e"):
        if abs(getattr(bt, k) - getattr(at, k)) > 1e-9 * scale:
            return None
    c, r = ~at @ (bt.c, bt.f)
    if abs(c - round(c)) > _EPS or abs(r - round(r)) > _EPS:
        return None
    return int(round(c)), int(round(r))


def open_pair(
    before: str | os.PathLike,
    after: str | os.PathLike,
    bands_before: Optional[Sequence[int]] = None,
    bands_after: Optional[Sequence[int]] = None,
    extent: Optional[Sequence[float]] = None,
    events: Optional[Events] = None,
) -> RasterPair:
    """Open both dates and work out the processed area (see module docstring).

    Args:
        before, after: raster paths (anything GDAL reads).
        bands_before, bands_after: 1-based band indices (1 or 3), None for the default.
        extent: (xmin, ymin, xmax, ymax) in the before's CRS (pixels in pixel space).
        events: receives warnings (pixel space, missing CRS, warping).

    Raises:
        UserError: unreadable file, band out of range, no overlap, empty extent.
    """
    events = events or Events()
    bpath, apath = str(before), str(after)
    bds = open_raster(bpath, "before")
    to_close = [bds]
    try:
        ads = open_raster(apath, "after")
        to_close.append(ads)
        bb = select_bands(bpath, bds.count, bands_before, "--bands-before", [c.name for c in bds.colorinterp])
        ab = select_bands(apath, ads.count, bands_after, "--bands-after", [c.name for c in ads.colorinterp])
        for p, bands, count in ((bpath, bb, bds.count), (apath, ab, ads.count)):
            if len(bands) == 1:
                events.warn(one_band_warning(p, bands[0], count))

        geo = _georeferenced(bds) and _georeferenced(ads)
        if not geo:
            for ds, p in ((bds, bpath), (ads, apath)):
                if not _georeferenced(ds):
                    events.warn(f"{p}: no georeferencing; the dates are paired in pixel space (top-left corners together)")
            btr = bds.transform if _georeferenced(bds) else Affine.identity()
            crs = bds.crs if _georeferenced(bds) else None
            area = Window(0, 0, min(bds.width, ads.width), min(bds.height, ads.height))
            if extent is not None:
                ext = _inner_window(tuple(extent), btr, bds.width, bds.height)
                area = area.intersection(ext) if ext.width > 0 and ext.height > 0 else Window(0, 0, 0, 0)
                _check_area(area, bpath, apath, extent)
            a_src, a_off, warped = ads, (int(area.col_off), int(area.row_off)), False
        else:
            crs = bds.crs
            btr = bds.transform
            a_crs = ads.crs
            if a_crs is None or crs is None:
                events.warn(f"{apath if a_crs is None else bpath}: no CRS; assuming both dates use the same one")
                a_crs = crs = crs or a_crs
            bounds = tuple(bds.bounds)
            a_bounds = tuple(ads.bounds)
            if a_crs is not None and crs is not None and a_crs != crs:
                a_bounds = transform_bounds(a_crs, crs, *a_bounds, densify_pts=21)
            region = _intersect(bounds, a_bounds)
            if extent is not None:
                region = _intersect(region, tuple(extent))
            area = _inner_window(region, btr, bds.width, bds.height) if region[0] < region[2] and region[1] < region[3] \
                else Window(0, 0, 0, 0)
            _check_area(area, bpath, apath, extent)
            offset = _same_grid(btr, ads.transform) if (a_crs == crs) else None
            if offset is not None:
                a_src, warped = ads, False
                a_off = (int(area.col_off) + offset[0], int(area.row_off) + offset[1])
            else:
                vrt_kwargs = dict(crs=crs, transform=btr, width=bds.width, height=bds.height,
                                  # (near) exact, so window-independent; tolerance=0 itself leaves
                                  # rasterio 1.4's WarpedVRT without a transformer ("pfnTransformer is NULL")
                                  resampling=Resampling.bilinear, tolerance=1e-9)
                if ads.crs is None:
                    vrt_kwargs["src_crs"] = crs
                if ads.nodata is not None:
                    vrt_kwargs["nodata"] = ads.nodata
                else:
                    vrt_kwargs["add_alpha"] = True
                a_src = WarpedVRT(ads, **vrt_kwargs)
                to_close.insert(0, a_src)
                warped = True
                a_off = (int(area.col_off), int(area.row_off))
                events.log(f"{apath}: resampled onto the before's grid (bilinear)")
        width, height = int(area.width), int(area.height)
        transform = btr @ Affine.translation(area.col_off, area.row_off)
        bsrc = DateSource(bpath, bds, bb, bds.dtypes[bb[0] - 1], int(area.col_off), int(area.row_off),
                          nodata=bds.nodata)
        asrc = DateSource(apath, a_src, ab, ads.dtypes[ab[0] - 1], a_off[0], a_off[1], warped=warped,
                          nodata=ads.nodata)
        return RasterPair(bsrc, asrc, width, height, transform, crs, geo, tuple(to_close),
                          (bpath, apath, bands_before, bands_after, extent))
    except BaseException:
        for ds in reversed(to_close):
            ds.close()
        raise


def _check_area(area: Window, bpath: str, apath: str, extent) -> None:
    if area.width >= 1 and area.height >= 1:
        return
    if extent is not None:
        raise UserError(f"{apath}: the dates do not overlap inside --extent {','.join(f'{v:g}' for v in extent)}")
    raise UserError(f"{apath}: does not overlap {bpath}")
