"""Polygons are numbered in raster-scan order of their first pixel (top row first, then
left to right), whatever the strips: the rule map sheets number their merged layer by."""
from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import shapely
from rasterio.transform import from_origin
from scipy import ndimage

from engine.vector import Polygonizer

TRANSFORM = from_origin(500_000.0, 5_000_000.0, 0.5, 0.5)


@pytest.mark.parametrize("strip_rows", [300, 13, 1])
def test_ids_follow_the_first_pixel_in_raster_scan_order(tmp_path, strip_rows):
    rng = np.random.default_rng(3)
    noise = ndimage.gaussian_filter(rng.normal(size=(300, 220)), 2.5)
    mask = noise > np.quantile(noise, 0.7)
    labels, n = ndimage.label(mask)  # scipy numbers components by their first pixel in raster-scan order
    firsts = [np.argwhere(labels == k)[0] for k in range(1, n + 1)]  # (row, col) of each first pixel
    out = tmp_path / "p.gpkg"
    with Polygonizer(out, transform=TRANSFORM, crs="EPSG:32633", width=220, height=300, has_prob=False) as poly:
        for r0 in range(0, 300, strip_rows):
            poly.add(mask[r0:r0 + strip_rows])
        poly.close()
    frame = pyogrio.read_dataframe(out)
    assert len(frame) == n > 20
    assert list(frame["id"]) == list(range(1, n + 1))
    for ident, geom in zip(frame["id"], frame.geometry):
        r, c = firsts[ident - 1]
        x, y = TRANSFORM * (c + 0.5, r + 0.5)
        assert geom.contains(shapely.Point(x, y)), ident
