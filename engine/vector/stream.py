"""Streaming polygonizer: consecutive mask rows in, a finished vector file out.

:class:`Polygonizer` is the whole vectorization stage without file reading, so a
pipeline that already produces the mask strip by strip (in memory) can polygonize as it
goes instead of re-reading its own outputs; :func:`~engine.vector.polygonize.polygonize_to_file`
is this plus strip reading. :func:`decode_mask` and :func:`decode_prob` turn the stored
raster encodings into what :meth:`Polygonizer.add` takes.
"""
from __future__ import annotations

import heapq
import math
import os
from typing import Callable, Optional, Union

import numpy as np
import shapely
from affine import Affine

from ..errors import UserError
from ..events import Events
from ..outputs import display
from .io import FIELDS, VectorWriter
from .measure import MapGrid, canonical
from .strips import Component, StripMerger

__all__ = ["Polygonizer", "check_options", "decode_mask", "decode_prob", "orient_rings", "BATCH", "MAX_STRIP_PIXELS"]

PathLike = Union[str, os.PathLike]

#: Upper bound on pixels per strip, so working memory (about 16 bytes a strip pixel, some
#: 70 MB) does not grow with the scene's width: wide rasters get fewer rows per strip.
MAX_STRIP_PIXELS = 4 * 1024 * 1024
#: Finished polygons are georeferenced, filtered and written in batches of this many.
BATCH = 20_000


def check_options(min_area_m2: float, simplify_m: float) -> None:
    """Raise :class:`UserError` unless both are finite numbers >= 0."""
    if not (min_area_m2 >= 0 and math.isfinite(min_area_m2)):
        raise UserError(f"--min-area: must be a number >= 0, got {min_area_m2}")
    if not (simplify_m >= 0 and math.isfinite(simplify_m)):
        raise UserError(f"--simplify: must be a number >= 0, got {simplify_m}")


def decode_mask(raw: np.ndarray, nodata: Optional[float] = None) -> np.ndarray:
    """Stored mask values (rows, cols) → bool change mask: non-zero, not nodata, finite."""
    mask = raw != 0
    if nodata is not None and not np.isnan(nodata):
        mask &= raw != nodata
    if np.issubdtype(raw.dtype, np.floating):
        mask &= np.isfinite(raw)
    return mask


def decode_prob(raw: np.ndarray, nodata: Optional[float] = None) -> np.ndarray:
    """Stored probabilities (rows, cols) → float32 0..1 with NaN where unknown.

    ``uint8``: ``v / 254``, 255 = nodata. Floats: as stored; negative, non-finite or
    ``nodata`` values are unknown.
    """
    if raw.dtype == np.uint8:
        prob = raw.astype(np.float32) / np.float32(254.0)
        prob[raw == 255] = np.nan
        return prob
    prob = raw.astype(np.float32)
    bad = ~np.isfinite(prob) | (prob < 0)
    if nodata is not None and not np.isnan(nodata):
        bad |= raw == nodata
    prob[bad] = np.nan
    return prob


class Polygonizer:
    """Polygonizes a raster grid fed as consecutive full-width row strips into a vector file.

    Use as a context manager (an exception inside aborts: nothing is left at
    ``out_path``)::

        with Polygonizer(out, transform=t, crs=crs, width=w, height=h) as poly:
            for mask, prob in strips:      # top to bottom, any number of rows each
                poly.add(mask, prob)
            stats = poly.close()

    Args:
        out_path: .shp, .gpkg, .fgb or .geojson; replaced if it exists.
        transform, crs, width, height: the grid (rasterio Affine, CRS or None, pixels).
        min_area_m2: drop polygons smaller than this (m²; see :class:`MapGrid`).
        simplify_m: topology-preserving simplification tolerance in metres (0: none).
        has_prob: False when no probabilities are given (``mean_prob``/``max_prob`` null).
        events: gets a warning (naming ``out_path``) when the grid has no CRS.
        has_review: add a ``review`` field (mean review score over the polygon's pixels,
            0..1; fed with :meth:`add`).
        keep: write only the components for which ``keep(component)`` is true.
    """

    def __init__(self, out_path: PathLike, *, transform: Affine, crs, width: int, height: int,
                 min_area_m2: float = 0.0, simplify_m: float = 0.0, has_prob: bool = True,
                 events: Optional[Events] = None, has_review: bool = False,
                 keep: Optional[Callable[[Component], bool]] = None) -> None:
        check_options(min_area_m2, simplify_m)
        self.grid = MapGrid(transform, crs, width, height)
        if self.grid.kind == "pixel" and events is not None:
            events.warn(f"{display(out_path)}: polygons in pixel coordinates (column, row), because the input "
                        "rasters have no georeference; area_m2, --min-area and --simplify are in pixels")
            if str(out_path).lower().endswith(".geojson"):
                events.warn(f"{display(out_path)}: GeoJSON cannot say 'no CRS'; readers will assume WGS 84 "
                            "(use .gpkg, .shp or .fgb for pixel-space polygons)")
        self.width, self.height = int(width), int(height)
        self.min_area, self.simplify_m, self.has_prob = float(min_area_m2), float(simplify_m), has_prob
        self.has_review, self.keep = has_review, keep
        self._writer = VectorWriter(out_path, self.grid.crs_string,
                                    {**FIELDS, "review": "float64"} if has_review else FIELDS)
        self._merger = StripMerger(self.width)
        self._rows_done = 0
        self._buffer: list[Component] = []
        self._ready: list = []  # heap of (first pixel, component) finished but maybe not next in order
        self.count = 0
        self.dropped = 0
        self.total_area = 0.0
        self._open = True

    def __enter__(self) -> "Polygonizer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._open:
            self.abort()

    def add(self, mask: np.ndarray, prob: Optional[np.ndarray] = None, review: Optional[np.ndarray] = None) -> None:
        """Feed the next rows: ``mask`` (rows, width) bool, ``prob`` and ``review`` (rows, width)
        float 0..1 with NaN where unknown."""
        if not self._open:
            raise RuntimeError("Polygonizer is closed")
        rows = mask.shape[0]
        if self._rows_done + rows > self.height:
            raise ValueError(f"more rows than the grid has ({self._rows_done + rows} > {self.height})")
        step = max(1, MAX_STRIP_PIXELS // max(1, self.width))  # big strips are labelled in parts
        for r0 in range(0, rows, step):
            part = slice(r0, min(rows, r0 + step))
            n = part.stop - part.start
            last = self._rows_done + n == self.height
            sub_prob = prob[part] if (prob is not None and self.has_prob) else None
            sub_review = review[part] if (review is not None and self.has_review) else None
            self._take(self._merger.feed(mask[part], sub_prob, self._rows_done, last=last, review=sub_review))
            self._rows_done += n
            if len(self._buffer) >= BATCH:
                self._flush()

    def _take(self, finished: list[Component], bound: Optional[int] = None) -> None:
        """Queue ``finished``; move to the output buffer, in raster-scan order of their
        first pixel, those no unfinished component can precede (ids follow that order)."""
        for c in finished:
            heapq.heappush(self._ready, (c.first, id(c), c))
        if bound is None:
            bound = self._merger.pending_first()
        while self._ready and self._ready[0][0] < bound:
            self._buffer.append(heapq.heappop(self._ready)[2])

    def close(self) -> dict:
        """Finish the file; returns ``{"polygons", "area_m2", "area_units", "dropped_small"}``."""
        if not self._open:
            raise RuntimeError("Polygonizer is closed")
        try:
            self._take(self._merger.finish(), bound=np.iinfo(np.int64).max)
            self._flush()
            self._writer.close()
        except BaseException:
            self.abort()
            raise
        self._open = False
        return {"polygons": self.count, "area_m2": self.total_area, "area_units": self.grid.area_units,
                "dropped_small": self.dropped}

    def abort(self) -> None:
        """Stop and delete whatever was written."""
        self._open = False
        self._buffer = []
        self._ready = []
        self._writer.abort()

    def _flush(self) -> None:
        """Georeference, filter, simplify and write the finished components."""
        import geopandas as gpd

        comps, self._buffer = self._buffer, []
        if self.keep is not None:
            comps = [c for c in comps if self.keep(c)]
        if not comps:
            return
        geoms = self.grid.to_map(np.array([c.geometry for c in comps], dtype=object))
        if self.min_area > 0:
            keep = self.grid.areas_m2(geoms) >= self.min_area
            self.dropped += int((~keep).sum())
            geoms = geoms[keep]
            comps = [c for c, k in zip(comps, keep) if k]
            if not comps:
                return
        if self.simplify_m > 0:
            geoms = self.grid.simplify(canonical(geoms), self.simplify_m)
        geoms = orient_rings(geoms)
        areas = self.grid.areas_m2(geoms)
        n = len(comps)
        nan = float("nan")
        data = {
            "id": np.arange(self.count + 1, self.count + n + 1, dtype=FIELDS["id"]),
            "area_m2": areas.astype(FIELDS["area_m2"]),
            "mean_prob": np.array([c.mean_prob if self.has_prob else nan for c in comps], dtype=np.float64),
            "max_prob": np.array([c.prob_max if self.has_prob else nan for c in comps], dtype=np.float64),
        }
        if self.has_review:
            data["review"] = np.array([c.review for c in comps], dtype=np.float64)
        crs = self._writer.crs
        self._writer.write(gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs))
        self.count += n
        self.total_area += float(areas.sum())


def orient_rings(geoms: np.ndarray) -> np.ndarray:
    """Exterior rings counter-clockwise, holes clockwise (the OGC/GeoJSON convention)."""
    if hasattr(shapely, "orient_polygons"):  # shapely >= 2.1
        return shapely.orient_polygons(geoms)
    from shapely.geometry.polygon import orient

    return np.array([orient(g) for g in geoms], dtype=object)
