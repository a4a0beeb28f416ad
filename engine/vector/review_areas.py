""""Look here" areas: connected regions of high review score that hold no change.

HRMNet's hard-region head scores the pixels the model is likely to get wrong. Next to a
detected change the score is high along its outline (the polygon's own ``review`` field
covers that); a region of high score that touches no change pixel is where a change may
have been missed. This module turns the change mask and the review raster (both written
by detection, on one grid) into those regions' polygons.

A pixel is a candidate when its review score is above the threshold, it has data and it
is not change; candidates are grouped 4-connected like change polygons, and a group that
touches a change pixel (8-neighbourhood) is dropped. So an area never overlaps nor
touches a change pixel: areas and (unsimplified) change polygons never overlap.

Output fields: ``id``, ``area_m2``, ``mean_prob``, ``max_prob`` (the change probability
inside the area, 0..1), ``review`` (mean review score inside the area, 0..1).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..events import Events
from .polygonize import check_prob_dtype, check_same_grid, open_result_raster, read_mask, read_prob, strip_rows
from .stream import Polygonizer

__all__ = ["review_areas_to_file", "candidate_strip", "TOUCHING"]

PathLike = Union[str, os.PathLike]

#: Review value given to candidate pixels next to a change: above any real score (0..1),
#: so a component's ``review_max`` above 1 says it touches a change (exact across strips).
TOUCHING = 2.0


def candidate_strip(change: np.ndarray, review: np.ndarray, threshold: float, top: int, rows: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Candidates of one strip and the review values to feed with them.

    Args:
        change: (rows + halo, width) bool change mask, with one extra row above (when
            ``top`` is 1) and below (when there is one) for the 8-neighbourhood.
        review: (rows, width) float32 review scores of the strip, NaN where unknown.
        threshold: candidates have a score above it.
        top: 1 when ``change`` starts one row above the strip, else 0.
        rows: rows of the strip.

    Returns:
        (candidate (rows, width) bool, review (rows, width) float32 with :data:`TOUCHING`
        where a candidate touches a change pixel).
    """
    from scipy import ndimage

    near = ndimage.binary_dilation(change, structure=np.ones((3, 3), dtype=bool))[top:top + rows]
    own = change[top:top + rows]
    with np.errstate(invalid="ignore"):
        candidate = (review > threshold) & ~own
    fed = np.where(candidate & near, np.float32(TOUCHING), review).astype(np.float32)
    return candidate, fed


def review_areas_to_file(mask_path: PathLike, review_path: PathLike, out_path: PathLike, threshold: float, *,
                         prob_path: Optional[PathLike] = None, min_area_m2: float = 0.0,
                         events: Optional[Events] = None, window_rows: int = 1024) -> dict:
    """Write the "look here" areas of a change mask and its review raster to ``out_path``.

    Args:
        mask_path: change mask GeoTIFF (non-zero = change, nodata = no change).
        review_path: review score GeoTIFF on the same grid (uint8 score*254 with nodata
            255, or float 0..1 with negative nodata).
        out_path: .shp, .gpkg, .fgb or .geojson (replaced; nothing is left on error).
        threshold: review score above which a pixel is a candidate (0..1).
        prob_path: probability GeoTIFF on the same grid for ``mean_prob``/``max_prob``, or None.
        min_area_m2: drop areas smaller than this (m², as for change polygons).
        events: progress (``stage="review areas"``) and cancel checks.
        window_rows: most rows per strip.

    Returns:
        ``{"areas": n, "area_m2": total}``.
    """
    from rasterio.windows import Window

    events = events or Events()
    with open_result_raster(mask_path) as mask_ds:
        width, height, transform, crs = mask_ds.width, mask_ds.height, mask_ds.transform, mask_ds.crs
        block_rows = mask_ds.block_shapes[0][0]
        for other in (review_path, prob_path):
            if other is not None:
                with open_result_raster(other) as ds:
                    check_same_grid(mask_ds, ds, other)
                    check_prob_dtype(ds, other)
    rows = strip_rows(window_rows, width, block_rows)
    starts = list(range(0, height, rows))
    with Polygonizer(out_path, transform=transform, crs=crs, width=width, height=height, min_area_m2=min_area_m2,
                     has_prob=prob_path is not None, has_review=True,
                     keep=lambda c: not c.review_max > 1.0) as polygonizer:
        for k, r0 in enumerate(starts):
            events.check_cancel()
            n = min(rows, height - r0)
            top = 1 if r0 > 0 else 0
            halo = Window(0, r0 - top, width, n + top + (1 if r0 + n < height else 0))
            change = read_mask(mask_path, halo)
            window = Window(0, r0, width, n)
            review = read_prob(review_path, window)
            prob = read_prob(prob_path, window)
            candidate, fed = candidate_strip(change, review, threshold, top, n)
            polygonizer.add(candidate, prob, fed)
            events.progress(k + 1, len(starts), stage="review areas")
        stats = polygonizer.close()
    return {"areas": stats["polygons"], "area_m2": stats["area_m2"]}
