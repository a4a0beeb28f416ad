"""From pixel polygons to map polygons: georeferencing, areas in m², simplification in metres.

Three cases, decided by the raster's CRS:

- projected: areas and tolerances in the CRS's linear unit, converted to metres with the
  unit's factor (so US-feet CRSs work);
- geographic (degrees): areas are measured, and simplification is done, in a Lambert
  azimuthal equal-area projection centred on the scene on the CRS's own ellipsoid (exact
  areas anywhere in the scene), then mapped back;
- no CRS: pixel space; "m²" and "metres" are the transform's units (pixels for a raster
  without georeferencing).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import shapely
from affine import Affine

__all__ = ["MapGrid"]


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
        if self.crs is None:
            self.kind = "pixel"
        elif self.crs.is_geographic:
            self.kind = "geographic"
            self._setup_equal_area(width, height)
        else:
            self.kind = "projected"
            axis = self.crs.axis_info[0] if self.crs.axis_info else None
            if axis is not None and axis.unit_conversion_factor:
                self.unit_factor = float(axis.unit_conversion_factor)

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

    def _setup_equal_area(self, width: int, height: int) -> None:
        from pyproj import CRS, Transformer
        from pyproj.crs import ProjectedCRS
        from pyproj.crs.coordinate_operation import LambertAzimuthalEqualAreaConversion

        lon, lat = self.transform @ (width / 2.0, height / 2.0)
        lat = float(np.clip(lat, -90.0, 90.0))
        lon = float(((lon + 180.0) % 360.0) - 180.0)
        geodetic = self.crs.geodetic_crs or CRS.from_epsg(4326)
        eq = ProjectedCRS(conversion=LambertAzimuthalEqualAreaConversion(lat, lon), geodetic_crs=geodetic)
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
        if self.kind == "geographic":
            return shapely.area(self._equal_area(geoms))
        return shapely.area(geoms) * self.unit_factor ** 2

    def simplify(self, map_geoms: np.ndarray, metres: float) -> np.ndarray:
        """Topology-preserving simplification with a tolerance in metres (transform units in pixel space)."""
        geoms = np.asarray(map_geoms, dtype=object)
        if metres <= 0 or len(geoms) == 0:
            return geoms
        if self.kind == "geographic":
            from_eq = self._from_eq
            simple = shapely.simplify(self._equal_area(geoms), metres, preserve_topology=True)
            return shapely.transform(simple, lambda xy: np.column_stack(from_eq.transform(xy[:, 0], xy[:, 1])))
        return shapely.simplify(geoms, metres / self.unit_factor, preserve_topology=True)
