"""From pixel polygons to map polygons: georeferencing, areas in m², simplification in metres.

Three cases, decided by the raster's CRS:

- projected: areas and tolerances in the CRS's linear unit, converted to metres with the
  unit's factor (so US-feet CRSs work); pixel areas stay exact (a 100 x 100 px square of
  0.5 m pixels is 2500 m²);
- geographic (degrees), and projected CRSs whose areal scale at the scene centre is off by
  more than 1 % (Web Mercator away from the equator): areas are measured, and
  simplification is done, in a Lambert azimuthal equal-area projection centred on the
  scene on the CRS's own ellipsoid (true areas anywhere in the scene), then mapped back;
- no CRS: pixel space; "m²" and "metres" are the transform's units (pixels for a raster
  without georeferencing).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import shapely
from affine import Affine

__all__ = ["MapGrid", "MAX_AREAL_DISTORTION", "canonical"]

#: A projected CRS whose area scale at the scene centre differs from 1 by more than this
#: is measured in an equal-area projection instead of planar CRS units.
MAX_AREAL_DISTORTION = 0.01


class MapGrid:
    """Georeferencing of a raster grid, for polygons in its pixel coordinates.

    Args:
        transform: the raster's affine transform (pixel corner → map coordinate).
        crs: a rasterio/pyproj CRS, or None for pixel space.
        width, height: raster size in pixels (the scene centre for geographic CRSs).
    """

    def __init__(self, transform: Affine, crs, width: int, height: int) -> None:
        from pyproj import CRS

        self.transform = transform
        # rasterio's CRS is falsy when empty (a raster without georeferencing).
        self.crs = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs) if crs else None
        self._to_eq = self._from_eq = None
        self.unit_factor = 1.0  # metres per CRS unit (projected)
        self.areal_scale = 1.0  # CRS area / true area at the scene centre
        if self.crs is None:
            self.kind = "pixel"
            return
        self.kind = "geographic" if self.crs.is_geographic else "projected"
        centre = self._centre_lonlat(width, height)
        if self.kind == "projected":
            axis = self.crs.axis_info[0] if self.crs.axis_info else None
            if axis is not None and axis.unit_conversion_factor:
                self.unit_factor = float(axis.unit_conversion_factor)
            self.areal_scale = _areal_scale(self.crs, centre) if centre is not None else 1.0
        if centre is not None and (self.kind == "geographic" or abs(self.areal_scale - 1.0) > MAX_AREAL_DISTORTION):
            self._setup_equal_area(*centre)

    @property
    def equal_area(self) -> bool:
        """True when areas and simplification go through the scene's equal-area projection."""
        return self._to_eq is not None

    @property
    def area_units(self) -> str:
        """``"m2"``, or ``"pixel"`` when there is no CRS (transform units squared)."""
        return "pixel" if self.kind == "pixel" else "m2"

    @property
    def crs_string(self) -> Optional[str]:
        """The CRS for the vector layer: ``EPSG:n`` when it has a code, else WKT; None without CRS."""
        if self.crs is None:
            return None
        epsg = self.crs.to_epsg()
        return f"EPSG:{epsg}" if epsg else self.crs.to_wkt()

    def _centre_lonlat(self, width: int, height: int) -> Optional[tuple[float, float]]:
        """Longitude, latitude (degrees) of the scene centre, None if it cannot be found."""
        from pyproj import Transformer

        x, y = self.transform @ (width / 2.0, height / 2.0)
        try:
            geodetic = self.crs.geodetic_crs
            if geodetic is None:
                return None
            lon, lat = Transformer.from_crs(self.crs, geodetic, always_xy=True).transform(x, y)
        except Exception:  # pyproj raises a variety of errors for odd CRSs: measure planar then
            return None
        if not (np.isfinite(lon) and np.isfinite(lat)):
            return None
        return float(((lon + 180.0) % 360.0) - 180.0), float(np.clip(lat, -90.0, 90.0))

    def _setup_equal_area(self, lon: float, lat: float) -> None:
        from pyproj import Transformer
        from pyproj.crs import ProjectedCRS
        from pyproj.crs.coordinate_operation import LambertAzimuthalEqualAreaConversion

        eq = ProjectedCRS(conversion=LambertAzimuthalEqualAreaConversion(lat, lon), geodetic_crs=self.crs.geodetic_crs)
        self._to_eq = Transformer.from_crs(self.crs, eq, always_xy=True)
        self._from_eq = Transformer.from_crs(eq, self.crs, always_xy=True)

    def to_map(self, geoms: np.ndarray) -> np.ndarray:
        """Pixel-coordinate geometries → map coordinates (array of shapely geometries)."""
        a, b, c, d, e, f = self.transform[:6]

        def affine(xy: np.ndarray) -> np.ndarray:
            x, y = xy[:, 0], xy[:, 1]
            return np.column_stack([a * x + b * y + c, d * x + e * y + f])

        return shapely.transform(np.asarray(geoms, dtype=object), affine)

    def _equal_area(self, geoms: np.ndarray) -> np.ndarray:
        to_eq = self._to_eq
        return shapely.transform(geoms, lambda xy: np.column_stack(to_eq.transform(xy[:, 0], xy[:, 1])))

    def areas_m2(self, map_geoms: np.ndarray) -> np.ndarray:
        """Areas (float64, m², or transform units² in pixel space) of map-coordinate geometries."""
        geoms = np.asarray(map_geoms, dtype=object)
        if self.equal_area:
            return shapely.area(self._equal_area(geoms))
        return shapely.area(geoms) * self.unit_factor ** 2

    def simplify(self, map_geoms: np.ndarray, metres: float) -> np.ndarray:
        """Topology-preserving simplification with a tolerance in metres (transform units in pixel space)."""
        geoms = np.asarray(map_geoms, dtype=object)
        if metres <= 0 or len(geoms) == 0:
            return geoms
        if self.equal_area:
            from_eq = self._from_eq
            simple = shapely.simplify(self._equal_area(geoms), metres, preserve_topology=True)
            return shapely.transform(simple, lambda xy: np.column_stack(from_eq.transform(xy[:, 0], xy[:, 1])))
        return shapely.simplify(geoms, metres / self.unit_factor, preserve_topology=True)


def _areal_scale(crs, centre: tuple[float, float]) -> float:
    """Area scale factor of the projected ``crs`` at ``centre`` (lon, lat), 1.0 if unknown."""
    from pyproj import Proj

    try:
        factors = Proj(crs).get_factors(*centre)
        scale = float(factors.areal_scale)
    except Exception:  # not every CRS has a Proj definition with factors
        return 1.0
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def canonical(geoms: np.ndarray) -> np.ndarray:
    """Pixel-edge polygons without collinear vertices and normalised (start vertex, ring
    order): simplification then gives the same result however a polygon was assembled
    (in strips, in map sheets, or at once)."""
    from .strips import drop_collinear

    out = []
    for g in geoms:
        rings = [drop_collinear(np.asarray(g.exterior.coords))]
        rings += [drop_collinear(np.asarray(r.coords)) for r in g.interiors]
        out.append(shapely.Polygon(rings[0], rings[1:]))
    return shapely.normalize(np.array(out, dtype=object))
