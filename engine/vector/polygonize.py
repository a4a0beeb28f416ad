"""Change mask GeoTIFF → change polygons file, in strips, seams merged.

Reads the mask (and the probability raster, if given) in full-width strips of
``window_rows`` rows, polygonizes each strip with :class:`~engine.vector.strips.StripMerger`
(components crossing a strip edge are merged exactly, holes kept), georeferences the
finished polygons, filters them by area, simplifies them, and streams them to the output
with :class:`~engine.vector.io.VectorWriter`. Memory: one strip plus the polygons open at
its lower edge plus one batch of finished polygons.

Raster encodings (agreed with the detection pipeline):

- mask: band 1, non-zero = change, 0 = no change, the raster's nodata value = no change;
- probability: ``float32`` 0..1 (negative, non-finite or the nodata value = unknown), or
  ``uint8`` where ``v`` in 0..254 is ``v / 254`` and 255 is nodata.

Output fields: ``id`` (1..n), ``area_m2``, ``mean_prob``, ``max_prob`` (0..1, null
without probability raster); CRS of the mask. Without a CRS the polygons are in pixel
space (the transform's units) and ``area_m2`` is in those units squared.
"""
from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Union

import numpy as np
import shapely

from ..errors import UserError
from ..events import Events
from .io import (FIELDS, SUPPORTED_VECTOR_EXTENSIONS, VectorWriter, check_vector_path, move_vector,
                 remove_vector, temporary_vector_path, vector_sidecars)
from .measure import MapGrid
from .strips import Component, StripMerger

__all__ = [
    "SUPPORTED_VECTOR_EXTENSIONS",
    "polygonize_to_file",
    "check_vector_path",
    "vector_sidecars",
    "move_vector",
    "remove_vector",
    "temporary_vector_path",
]

PathLike = Union[str, os.PathLike]

#: Upper bound on pixels per strip, so working memory (about 16 bytes a strip pixel, some
#: 70 MB) does not grow with the scene's width: wide rasters get fewer rows per strip.
MAX_STRIP_PIXELS = 4 * 1024 * 1024
#: Finished polygons are georeferenced, filtered and written in batches of this many.
BATCH = 20_000


def polygonize_to_file(mask_path: PathLike, prob_path: Optional[PathLike], out_path: PathLike, *,
                       min_area_m2: float = 0.0, simplify_m: float = 0.0, events: Optional[Events] = None,
                       window_rows: int = 1024) -> dict:
    """Polygonize the change mask GeoTIFF into ``out_path`` (format by extension).

    Args:
        mask_path: change mask raster (band 1: non-zero = change; nodata = no change).
        prob_path: probability raster on the same grid, or None (then ``mean_prob`` and
            ``max_prob`` are null).
        out_path: .shp, .gpkg, .fgb or .geojson; replaced if it exists. On any error or
            cancel nothing is left there.
        min_area_m2: polygons smaller than this (m²; measured in an equal-area projection
            for geographic CRSs and for projected ones distorting area by more than 1 %,
            such as Web Mercator; pixel units without CRS) are dropped.
        simplify_m: topology-preserving simplification tolerance in metres (0: none).
        events: progress (``stage="vectorize"``, one step a strip) and cancel checks.
        window_rows: most rows per strip (working memory about 16 bytes per strip pixel;
            wide rasters get fewer rows so a strip stays under ``MAX_STRIP_PIXELS``).
    Returns:
        ``{"polygons": n, "area_m2": total, "area_units": "m2" | "pixel", "dropped_small": k}``
        (``k`` polygons were smaller than ``min_area_m2``).
    Raises:
        UserError: unreadable rasters, grids that differ, bad options, unsupported format.
        Cancelled: ``events.check_cancel()`` asked to stop.
    """
    out_path = Path(out_path)
    check_vector_path(out_path)
    if not (min_area_m2 >= 0 and math.isfinite(min_area_m2)):
        raise UserError(f"--min-area: must be a number >= 0, got {min_area_m2}")
    if not (simplify_m >= 0 and math.isfinite(simplify_m)):
        raise UserError(f"--simplify: must be a number >= 0, got {simplify_m}")
    if window_rows < 1:
        raise ValueError(f"window_rows must be >= 1, got {window_rows}")
    events = events or Events()

    from rasterio.windows import Window

    mask_ds = _open(mask_path)
    prob_ds = None
    try:
        if prob_path is not None:
            prob_ds = _open(prob_path)
            _check_same_grid(mask_ds, prob_ds, prob_path)
            _check_prob_dtype(prob_ds, prob_path)
        width, height = mask_ds.width, mask_ds.height
        grid = MapGrid(mask_ds.transform, mask_ds.crs, width, height)
        if grid.kind == "pixel":
            events.warn(f"{mask_path}: no CRS; polygons are in the raster's own coordinates and area_m2 / "
                        "--min-area / --simplify are in its units (pixels without georeferencing)")
        rows = max(1, min(int(window_rows), MAX_STRIP_PIXELS // max(1, width)))
        total = math.ceil(height / rows)
        sink = _PolygonSink(VectorWriter(out_path, grid.crs_string), grid, min_area_m2, simplify_m,
                            has_prob=prob_ds is not None)
        windows = [Window(0, r0, width, min(rows, height - r0)) for r0 in range(0, height, rows)]
        try:
            merger = StripMerger(width)
            # One reader thread fetches the next strip while this one is polygonized
            # (GDAL reads and decompresses without the GIL); only it touches the datasets.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vectorize-read") as pool:
                ahead = pool.submit(_read_strip, mask_ds, prob_ds, windows[0])
                for k, window in enumerate(windows):
                    events.check_cancel()
                    mask, prob = ahead.result()
                    if k + 1 < total:
                        ahead = pool.submit(_read_strip, mask_ds, prob_ds, windows[k + 1])
                    sink.add(merger.feed(mask, prob, int(window.row_off), last=(k == total - 1)))
                    del mask, prob
                    events.progress(k + 1, total, stage="vectorize")
            sink.add(merger.finish())
            events.check_cancel()
            sink.close()
        except BaseException:
            sink.abort()
            raise
    finally:
        mask_ds.close()
        if prob_ds is not None:
            prob_ds.close()
    return {"polygons": sink.count, "area_m2": sink.total_area, "area_units": grid.area_units,
            "dropped_small": sink.dropped}


class _PolygonSink:
    """Collects finished components; georeferences, filters, simplifies and writes them in batches."""

    def __init__(self, writer: VectorWriter, grid: MapGrid, min_area_m2: float, simplify_m: float,
                 has_prob: bool) -> None:
        self.writer, self.grid = writer, grid
        self.min_area, self.simplify_m, self.has_prob = min_area_m2, simplify_m, has_prob
        self.buffer: list[Component] = []
        self.count = 0
        self.dropped = 0
        self.total_area = 0.0

    def add(self, comps: list[Component]) -> None:
        self.buffer.extend(comps)
        if len(self.buffer) >= BATCH:
            self.flush()

    def flush(self) -> None:
        import geopandas as gpd

        comps, self.buffer = self.buffer, []
        if not comps:
            return
        geoms = self.grid.to_map(np.array([c.geometry for c in comps], dtype=object))
        keep = np.ones(len(comps), dtype=bool)
        if self.min_area > 0:
            keep = self.grid.areas_m2(geoms) >= self.min_area
            geoms = geoms[keep]
            comps = [c for c, k in zip(comps, keep) if k]
            self.dropped += int((~keep).sum())
            if not comps:
                return
        if self.simplify_m > 0:
            geoms = self.grid.simplify(geoms, self.simplify_m)
        geoms = _orient(geoms)
        areas = self.grid.areas_m2(geoms)
        n = len(comps)
        data = {
            "id": np.arange(self.count + 1, self.count + n + 1, dtype=FIELDS["id"]),
            "area_m2": areas.astype(FIELDS["area_m2"]),
            "mean_prob": np.array([c.mean_prob if self.has_prob else np.nan for c in comps], dtype=np.float64),
            "max_prob": np.array([c.prob_max if self.has_prob else np.nan for c in comps], dtype=np.float64),
        }
        frame = gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms, crs=self.writer.crs), crs=self.writer.crs)
        self.writer.write(frame)
        self.count += n
        self.total_area += float(areas.sum())

    def close(self) -> None:
        self.flush()
        self.writer.close()

    def abort(self) -> None:
        self.buffer = []
        self.writer.abort()


def _orient(geoms: np.ndarray) -> np.ndarray:
    """Exterior rings counter-clockwise, holes clockwise (the OGC/GeoJSON convention)."""
    if hasattr(shapely, "orient_polygons"):  # shapely >= 2.1
        return shapely.orient_polygons(geoms)
    from shapely.geometry.polygon import orient

    return np.array([orient(g) for g in geoms], dtype=object)


def _open(path: PathLike):
    import rasterio

    if not Path(path).exists():
        raise UserError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():  # a raster without CRS is reported once, as an event
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.errors.RasterioIOError:
        raise UserError(f"{path}: not a raster GDAL can read") from None


def _check_same_grid(mask_ds, prob_ds, prob_path: PathLike) -> None:
    if (prob_ds.width, prob_ds.height) != (mask_ds.width, mask_ds.height):
        raise UserError(f"{prob_path}: size {prob_ds.width}x{prob_ds.height} differs from the mask's "
                        f"{mask_ds.width}x{mask_ds.height}")
    if not prob_ds.transform.almost_equals(mask_ds.transform) or (prob_ds.crs or None) != (mask_ds.crs or None):
        raise UserError(f"{prob_path}: georeferencing differs from the mask's")


def _check_prob_dtype(prob_ds, prob_path: PathLike) -> None:
    dtype = np.dtype(prob_ds.dtypes[0])
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise UserError(f"{prob_path}: probability raster must be uint8 (0-254, nodata 255) or float (0-1), "
                        f"not {dtype}")


def _read_strip(mask_ds, prob_ds, window) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """One strip: (bool change mask, float32 probabilities with NaN where unknown, or None)."""
    import rasterio

    try:
        raw = mask_ds.read(1, window=window)
        prob = _read_prob(prob_ds, window) if prob_ds is not None else None
    except rasterio.errors.RasterioIOError as exc:
        names = mask_ds.name if prob_ds is None else f"{mask_ds.name} or {prob_ds.name}"
        reason = (str(exc.__cause__ or exc).strip().splitlines() or ["I/O error"])[0]
        raise UserError(f"{names}: read failed at rows {window.row_off}..{window.row_off + window.height} "
                        f"({reason})") from None
    mask = raw != 0
    nodata = mask_ds.nodata
    if nodata is not None and not np.isnan(nodata):
        mask &= raw != nodata
    if np.issubdtype(raw.dtype, np.floating):
        mask &= np.isfinite(raw)
    return mask, prob


def _read_prob(ds, window) -> np.ndarray:
    """Band 1 of the probability raster as float32 0..1 with NaN where unknown."""
    raw = ds.read(1, window=window)
    if raw.dtype == np.uint8:
        prob = raw.astype(np.float32) / np.float32(254.0)
        prob[raw == 255] = np.nan
        return prob
    prob = raw.astype(np.float32)
    bad = ~np.isfinite(prob) | (prob < 0)
    if ds.nodata is not None and not np.isnan(ds.nodata):
        bad |= raw == ds.nodata
    prob[bad] = np.nan
    return prob
