"""Change mask GeoTIFF → change polygons file, in strips, seams merged.

Reads the mask (and the probability raster, if given) in full-width strips of
``window_rows`` rows (the next one in a background thread) and feeds them to a
:class:`~engine.vector.stream.Polygonizer`: strips are polygonized by
:class:`~engine.vector.strips.StripMerger` (components crossing a strip edge are merged
exactly, holes kept); finished polygons are georeferenced, filtered by area, simplified
and streamed to the output by :class:`~engine.vector.io.VectorWriter`. Memory: one strip
plus the polygons open at its lower edge plus one batch of finished polygons.

Raster encodings (agreed with the detection pipeline):

- mask: band 1, non-zero = change, 0 = no change, the raster's nodata value = no change;
- probability: ``float32`` 0..1 (negative, non-finite or the nodata value = unknown), or
  ``uint8`` where ``v`` in 0..254 is ``v / 254`` and 255 is nodata.

Output fields: ``id`` (1..n, in raster-scan order of each polygon's first pixel: top row
first, then left to right, as map sheets number them too), ``area_m2``, ``mean_prob``, ``max_prob`` (0..1, null
without probability raster), and with a review raster ``review`` (0..1: the mean hard-region
score over the polygon's pixels; see the README's review layer); CRS of the mask. Without a CRS the polygons are in pixel
space (the transform's units) and ``area_m2`` is in those units squared.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import UserError
from ..outputs import display
from ..events import Events
from .io import (SUPPORTED_VECTOR_EXTENSIONS, check_vector_path, move_vector, remove_vector, temporary_vector_path,
                 vector_sidecars)
from .stream import MAX_STRIP_PIXELS, Polygonizer, check_options, decode_mask, decode_prob

__all__ = [
    "SUPPORTED_VECTOR_EXTENSIONS",
    "polygonize_to_file",
    "check_vector_path",
    "vector_sidecars",
    "move_vector",
    "remove_vector",
    "temporary_vector_path",
    "strip_rows",
    "open_result_raster",
    "check_same_grid",
    "check_prob_dtype",
    "read_mask",
    "read_prob",
]

PathLike = Union[str, os.PathLike]




def polygonize_to_file(mask_path: PathLike, prob_path: Optional[PathLike], out_path: PathLike, *,
                       min_area_m2: float = 0.0, simplify_m: float = 0.0, events: Optional[Events] = None,
                       window_rows: int = 1024, review_path: Optional[PathLike] = None) -> dict:
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
        review_path: hard-region score raster on the same grid (encoded like the
            probability), or None; with it the polygons get a ``review`` field.
    Returns:
        ``{"polygons": n, "area_m2": total, "area_units": "m2" | "pixel", "dropped_small": k}``
        (``k`` polygons were smaller than ``min_area_m2``).
    Raises:
        UserError: unreadable rasters, grids that differ, bad options, unsupported format.
        Cancelled: ``events.check_cancel()`` asked to stop.
    """
    out_path = Path(out_path)
    check_vector_path(out_path)
    check_options(min_area_m2, simplify_m)
    if window_rows < 1:
        raise ValueError(f"window_rows must be >= 1, got {window_rows}")
    events = events or Events()

    from rasterio.windows import Window

    with open_result_raster(mask_path) as mask_ds:
        width, height, transform, crs = mask_ds.width, mask_ds.height, mask_ds.transform, mask_ds.crs
        block_rows = mask_ds.block_shapes[0][0]
        if prob_path is not None:
            with open_result_raster(prob_path) as prob_ds:
                check_same_grid(mask_ds, prob_ds, prob_path)
                check_prob_dtype(prob_ds, prob_path)
        if review_path is not None:
            with open_result_raster(review_path) as review_ds:
                check_same_grid(mask_ds, review_ds, review_path)
                check_prob_dtype(review_ds, review_path)
    rows = strip_rows(window_rows, width, block_rows)
    windows = [Window(0, r0, width, min(rows, height - r0)) for r0 in range(0, height, rows)]
    total = len(windows)
    with Polygonizer(out_path, transform=transform, crs=crs, width=width, height=height,
                     min_area_m2=min_area_m2, simplify_m=simplify_m, has_prob=prob_path is not None,
                     events=events, has_review=review_path is not None) as polygonizer:
        # One reader thread fetches the next strip while this one is polygonized (GDAL
        # reads and decompresses without the GIL).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vectorize-read") as pool:
            ahead = pool.submit(_read_strip, mask_path, prob_path, windows[0], review_path)
            for k in range(total):
                events.check_cancel()
                mask, prob, review = ahead.result()
                if k + 1 < total:
                    ahead = pool.submit(_read_strip, mask_path, prob_path, windows[k + 1], review_path)
                polygonizer.add(mask, prob, review)  # labelled in parts of at most MAX_STRIP_PIXELS
                del mask, prob, review
                events.progress(k + 1, total, stage="vectorize")
        events.check_cancel()
        return polygonizer.close()


def strip_rows(window_rows: int, width: int, block_rows: int) -> int:
    """Rows to read at a time: ``window_rows``, fewer for wide rasters (MAX_STRIP_PIXELS),
    but at least one block row of a tiled raster, so no tile is decompressed twice."""
    rows = max(1, min(int(window_rows), MAX_STRIP_PIXELS // max(1, width)))
    if rows < window_rows and rows < block_rows <= window_rows and block_rows * width <= 8 * MAX_STRIP_PIXELS:
        rows = block_rows
    return rows


def open_result_raster(path: PathLike):
    """Open a mask, probability or review raster for reading; UserError (one line, the
    user's name of the file) when it is missing or unreadable."""
    import rasterio

    if not Path(path).exists():
        raise UserError(f"{display(path)}: file not found")
    try:
        with warnings.catch_warnings():  # a raster without CRS is reported once, as an event
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.errors.RasterioIOError:
        raise UserError(f"{display(path)}: not a raster GDAL can read") from None


def check_same_grid(mask_ds, prob_ds, prob_path: PathLike) -> None:
    """UserError unless ``prob_ds`` has the mask's size, transform and CRS."""
    if (prob_ds.width, prob_ds.height) != (mask_ds.width, mask_ds.height):
        raise UserError(f"{prob_path}: size {prob_ds.width}x{prob_ds.height} differs from the mask's "
                        f"{mask_ds.width}x{mask_ds.height}")
    if not prob_ds.transform.almost_equals(mask_ds.transform) or (prob_ds.crs or None) != (mask_ds.crs or None):
        raise UserError(f"{prob_path}: georeferencing differs from the mask's")


def check_prob_dtype(prob_ds, prob_path: PathLike) -> None:
    """UserError unless ``prob_ds`` is uint8 (p*254, nodata 255) or float (0..1)."""
    dtype = np.dtype(prob_ds.dtypes[0])
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise UserError(f"{prob_path}: probability raster must be uint8 (0-254, nodata 255) or float (0-1), "
                        f"not {dtype}")


def _read_strip(mask_path: PathLike, prob_path: Optional[PathLike], window,
                review_path: Optional[PathLike] = None) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """One strip: (bool change mask, float32 probabilities and review scores with NaN where
    unknown, or None).

    The rasters are opened for each strip: closing them drops the blocks GDAL cached, so
    the block cache does not grow with the scene (up to 5 % of RAM otherwise).
    """
    import rasterio

    try:
        change = read_mask(mask_path, window)
        prob = read_prob(prob_path, window)
        review = read_prob(review_path, window)
    except rasterio.errors.RasterioIOError as exc:
        names = display(mask_path) if prob_path is None else f"{display(mask_path)} or {display(prob_path)}"
        reason = (str(exc.__cause__ or exc).strip().splitlines() or ["I/O error"])[0]
        raise UserError(f"{names}: read failed at rows {window.row_off}..{window.row_off + window.height} "
                        f"({reason})") from None
    return change, prob, review


def read_mask(path: PathLike, window) -> np.ndarray:
    """bool (h, w) change mask of ``window`` (nodata = no change); the file is open for this read only."""
    with open_result_raster(path) as ds:
        return decode_mask(ds.read(1, window=window), ds.nodata)


def read_prob(path: Optional[PathLike], window) -> Optional[np.ndarray]:
    """float32 (h, w) probabilities or review scores of ``window``, NaN where unknown; None
    without a path. The file is open for this read only."""
    if path is None:
        return None
    with open_result_raster(path) as ds:
        return decode_prob(ds.read(1, window=window), ds.nodata)
