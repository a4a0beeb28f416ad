"""Change labels from two building-footprint layers (``prepare --footprints-before/--footprints-after``).

What counts as change, with a tolerance ``t`` in metres (``--footprint-tolerance``, default 1):

- *appeared*: the part of each after footprint farther than ``t`` from every before footprint;
- *vanished*: the part of each before footprint farther than ``t`` from every after footprint.

So a building drawn again with its outline moved by up to ``t`` is no change; a new building
is change as a whole (less a strip of ``t`` where it touches an old one); an extension wider
than ``t`` is change, the old part of the building is not. Where the layers' CRS is
geographic the work is done in the local UTM zone; for rasters without georeference, in
pixels with ``t / gsd``.

:func:`change_polygons` is the pure rule; :func:`footprint_changes` reads the layers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import UserError

__all__ = ["DEFAULT_TOLERANCE_M", "FootprintChanges", "change_polygons", "footprint_changes"]

DEFAULT_TOLERANCE_M = 1.0


def change_polygons(before, after, tolerance: float):
    """Appeared and vanished footprints (see the module docstring).

    Args:
        before, after: GeoSeries of footprint polygons in one CRS.
        tolerance: outline tolerance in that CRS's units (>= 0).

    Returns:
        GeoDataFrame with a ``change`` column (``appeared`` or ``vanished``), polygons only,
        in the same CRS; empty when nothing changed.
    """
    import geopandas as gpd
    import pandas as pd

    def union(s):
        return s.union_all() if hasattr(s, "union_all") else s.unary_union

    parts = []
    for kind, layer, other in (("appeared", after, before), ("vanished", before, after)):
        zone = union(other).buffer(tolerance) if len(other) else None
        diff = layer.difference(zone) if zone is not None and not zone.is_empty else layer
        diff = diff[~diff.is_empty & diff.notna()]
        diff = diff[diff.geom_type.isin(["Polygon", "MultiPolygon"]) & (diff.area > 0)]
        parts.append(gpd.GeoDataFrame({"change": [kind] * len(diff)}, geometry=list(diff), crs=layer.crs))
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs=after.crs)


@dataclass
class FootprintChanges:
    """Derived labels: change polygons in the sheets' CRS, and the layers' common extent (a box)."""

    changes: object  # GeoDataFrame
    common: object  # shapely geometry or None when the layers do not overlap
    counts: dict


def _read(path: Path, role: str):
    import geopandas as gpd

    if not Path(path).exists():
        raise UserError(f"{path}: file not found ({role})")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several error types for unreadable files
        raise UserError(f"{path}: not a vector file GDAL can read ({str(exc).splitlines()[0]})") from None
    geom = gdf.geometry
    geom = geom[geom.notna() & ~geom.is_empty]
    geom = geom[geom.geom_type.isin(["Polygon", "MultiPolygon"])]
    if not len(geom):
        raise UserError(f"{path}: no footprint polygons ({role})")
    return geom.reset_index(drop=True)


def _working_crs(geom, crs, tolerance_m: float, gsd: Optional[float], where: str):
    """(the CRS to compute in, the tolerance in its units)."""
    if crs is None:
        if not gsd:
            raise UserError(f"{where}: the rasters have no georeference, so --footprint-tolerance (metres) needs "
                            "--gsd METRES per pixel")
        return None, tolerance_m / gsd
    if crs.is_geographic:
        return geom.estimate_utm_crs(), tolerance_m
    factor = getattr(crs, "linear_units_factor", None)
    metres = factor[1] if isinstance(factor, tuple) else 1.0
    return crs, tolerance_m / metres


def footprint_changes(before_path: Path, after_path: Path, crs, tolerance_m: float = DEFAULT_TOLERANCE_M,
                      gsd: Optional[float] = None) -> FootprintChanges:
    """Read two footprint layers and derive their change polygons in ``crs`` (a rasterio CRS of
    the sheets' before rasters; None: pixel space, needs ``gsd``)."""
    from shapely.geometry import box

    if not tolerance_m >= 0:
        raise UserError(f"--footprint-tolerance {tolerance_m}: must be 0 or more metres")
    layers = []
    for path, role in ((before_path, "footprints before"), (after_path, "footprints after")):
        geom = _read(path, role)
        if geom.crs is None and crs is not None:
            raise UserError(f"{path}: the footprints have no CRS (save them with one)")
        if geom.crs is not None and crs is None:
            raise UserError(f"{path}: the footprints have a CRS but the rasters have no georeference")
        layers.append(geom.to_crs(crs) if crs is not None else geom)
    work, tolerance = _working_crs(layers[0], crs, tolerance_m, gsd, str(before_path))
    before, after = (g.to_crs(work) if work is not None and crs is not None else g for g in layers)
    changes = change_polygons(before, after, tolerance)
    if crs is not None and work is not None:
        changes = changes.to_crs(crs)
    b, a = layers[0].total_bounds, layers[1].total_bounds
    xmin, ymin, xmax, ymax = max(b[0], a[0]), max(b[1], a[1]), min(b[2], a[2]), min(b[3], a[3])
    common = box(xmin, ymin, xmax, ymax) if xmin < xmax and ymin < ymax else None
    counts = {"before": len(before), "after": len(after),
              "appeared": int((changes["change"] == "appeared").sum()),
              "vanished": int((changes["change"] == "vanished").sum())}
    return FootprintChanges(changes, common, counts)
