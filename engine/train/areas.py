"""The labelled area of ``prepare --labelled-area``: where the change labels are complete.

An area is an extent ``xmin,ymin,xmax,ymax`` (optionally ``,CRS`` such as ``EPSG:32633``;
without it, the before raster's CRS) or a vector file GDAL reads (every polygon of it). For
rasters without georeference, coordinates are pixels as GDAL reads such files: x = column,
y = row counted from the top.

:func:`parse_area` reads the option (no files opened); :func:`area_geometry` places the
area on one sheet (one shapely geometry in the before's CRS); :func:`pixel_span` and
:func:`tile_mask` are what the tiler needs from it.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import UserError

__all__ = ["LABELLED", "Area", "parse_area", "area_geometry", "pixel_span", "starts_within", "tile_mask"]


#: The dataset folder of "labelled" masks beside A, B and label (see :mod:`engine.train.dataset`).
LABELLED = "labelled"


@dataclass(frozen=True)
class Area:
    """A labelled area as given: an extent (``bounds``, ``crs`` or None) or a vector ``path``."""

    text: str
    bounds: Optional[tuple[float, float, float, float]] = None
    crs: Optional[str] = None
    path: Optional[Path] = None
    geometry: object = None  # a shapely geometry already in the sheets' CRS (footprints' common extent)


def parse_area(text: str) -> Area:
    """``--labelled-area TEXT`` -> :class:`Area`: four numbers (and a CRS), else an existing file.

    Raises UserError for an extent with xmin >= xmax or ymin >= ymax, or a path that does
    not exist."""
    parts = [p.strip() for p in str(text).split(",")]
    numbers = []
    for p in parts[:4]:
        try:
            numbers.append(float(p))
        except ValueError:
            break
    if len(numbers) == 4 and len(parts) in (4, 5):
        xmin, ymin, xmax, ymax = numbers
        if not all(math.isfinite(v) for v in numbers) or xmin >= xmax or ymin >= ymax:
            raise UserError(f"--labelled-area {text}: expected xmin,ymin,xmax,ymax with xmin < xmax and ymin < ymax")
        return Area(text, bounds=(xmin, ymin, xmax, ymax), crs=parts[4] if len(parts) == 5 and parts[4] else None)
    path = Path(text)
    if not path.exists():
        raise UserError(f"{path}: file not found (--labelled-area: a vector file, or an extent xmin,ymin,xmax,ymax)")
    return Area(text, path=path)


def area_geometry(area: Area, crs, sheet_name: str):
    """The area as one shapely geometry in ``crs`` (the before's rasterio CRS, None: pixel space).

    Raises UserError for an unreadable file, an area without polygons, or CRSs that cannot be
    matched (an area with a CRS on rasters without one, or the reverse)."""
    import geopandas as gpd
    from shapely.geometry import box

    if area.geometry is not None:
        return area.geometry
    if area.bounds is not None:
        gdf = gpd.GeoSeries([box(*area.bounds)], crs=area.crs)
        where = f"--labelled-area {area.text}"
    else:
        try:
            gdf = gpd.read_file(area.path).geometry
        except Exception as exc:  # pyogrio raises several error types for unreadable files
            raise UserError(f"{area.path}: not a vector file GDAL can read ({str(exc).splitlines()[0]})") from None
        gdf = gdf[gdf.notna() & ~gdf.is_empty]
        gdf = gdf[gdf.geom_type.isin(["Polygon", "MultiPolygon"])]
        if not len(gdf):
            raise UserError(f"{area.path}: no polygon in the labelled area")
        where = str(area.path)
    if gdf.crs is not None and crs is None:
        raise UserError(f"{where}: has a CRS but the rasters of sheet {sheet_name} have no georeference; give the "
                        "area in pixels (column, row from the top) without a CRS")
    if gdf.crs is None and crs is not None and area.path is not None:
        raise UserError(f"{area.path}: the labelled area has no CRS (save it with one)")
    if gdf.crs is not None:
        gdf = gdf.to_crs(crs)
    return gdf.union_all() if hasattr(gdf, "union_all") else gdf.unary_union


def pixel_span(geometry, transform) -> Optional[tuple[float, float, float, float]]:
    """(row_min, row_max, col_min, col_max) px of ``geometry``'s bounds on a grid (any
    orientation, pixel space included); None for an empty geometry."""
    if geometry is None or geometry.is_empty:
        return None
    xmin, ymin, xmax, ymax = geometry.bounds
    inverse = ~transform
    cols, rows = zip(*(inverse * (x, y) for x in (xmin, xmax) for y in (ymin, ymax)))
    return min(rows), max(rows), min(cols), max(cols)


def starts_within(starts: Sequence[int], tile: int, lo: float, hi: float) -> list[int]:
    """The tile starts whose span ``[start, start + tile)`` overlaps ``(lo, hi)`` px."""
    return [s for s in starts if s < hi and s + tile > lo]


def tile_mask(geometry, window_transform, size: int) -> np.ndarray:
    """(size, size) bool: pixels whose centre is inside ``geometry`` (rasterio's rule)."""
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.features import rasterize

    if geometry is None or geometry.is_empty:
        return np.zeros((size, size), bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        out = rasterize([(geometry, 1)], out_shape=(size, size), transform=window_transform, fill=0, dtype="uint8")
    return out > 0
