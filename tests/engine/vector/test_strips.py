"""The pure core: components found strip by strip equal the components of the whole mask."""
from __future__ import annotations

import numpy as np
import pytest
import shapely
from scipy import ndimage

from engine.vector.strips import StripMerger, polygonize_array


def _blobs(rows: int, cols: int, seed: int, fill: float = 0.45) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(rows, cols)), 2.0)
    return noise > np.quantile(noise, 1 - fill)


def _signature(comps) -> list:
    return sorted((c.pixels, round(c.geometry.area, 6), len(c.geometry.interiors), c.geometry.bounds) for c in comps)


@pytest.mark.parametrize("window_rows", [1, 2, 5, 16, 33])
def test_strips_give_the_components_of_the_whole_mask(window_rows):
    mask = _blobs(64, 48, seed=window_rows)
    whole = polygonize_array(mask, window_rows=1000)
    strips = polygonize_array(mask, window_rows=window_rows)
    labels, n = ndimage.label(mask)
    assert len(whole) == n
    assert _signature(strips) == _signature(whole)
    for c in strips:
        assert c.geometry.geom_type == "Polygon" and c.geometry.is_valid
        assert c.geometry.area == c.pixels  # pixel coordinates: one unit² per pixel
    # same vertices as polygonizing in one piece: no seam leftovers
    key = lambda g: shapely.normalize(g).wkb  # noqa: E731
    assert sorted(key(c.geometry) for c in strips) == sorted(key(c.geometry) for c in whole)


def test_seam_vertices_are_removed_after_merging():
    mask = np.zeros((10, 6), bool)
    mask[1:9, 1:5] = True
    (comp,) = polygonize_array(mask, window_rows=3)
    assert shapely.normalize(comp.geometry).equals_exact(shapely.normalize(shapely.box(1, 1, 5, 9)), 0)
    assert len(comp.geometry.exterior.coords) == 5


def test_inverted_u_splits_into_two_legs_that_stay_one_polygon():
    mask = np.zeros((12, 10), bool)
    mask[1:3, 1:9] = True  # top bar
    mask[3:11, 1:3] = True  # left leg
    mask[3:11, 7:9] = True  # right leg
    comps = polygonize_array(mask, window_rows=2)
    assert len(comps) == 1 and comps[0].pixels == mask.sum()


def test_statistics_merge_across_strips():
    mask = np.zeros((8, 4), bool)
    mask[1:7, 1:3] = True
    prob = np.full(mask.shape, np.nan)
    prob[1:7, 1:3] = np.linspace(0.1, 0.9, 12).reshape(6, 2)
    prob[3, 1] = np.nan  # unknown probability: not counted
    (comp,) = polygonize_array(mask, prob, window_rows=3)
    valid = prob[mask & np.isfinite(prob)]
    assert comp.pixels == 12 and comp.prob_count == 11
    assert comp.mean_prob == pytest.approx(valid.mean())
    assert comp.prob_max == pytest.approx(0.9)


def test_strips_must_be_consecutive():
    merger = StripMerger(4)
    merger.feed(np.zeros((2, 4), bool), row_off=0)
    with pytest.raises(ValueError):
        merger.feed(np.zeros((2, 4), bool), row_off=5)
