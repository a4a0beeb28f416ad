"""Blending: no seams (a constant field stays constant), rows handed out once, bounded memory."""
from __future__ import annotations

import numpy as np
import pytest

from engine.raster.blend import StripBlender, axis_profile, axis_weight_sum, ramp
from engine.raster.tiles import make_grid


def _blend(grid, field_fn):
    """Blend tiles whose prediction is field_fn(rows, cols) of the tile's area pixels
    (padding filled with garbage); returns the mosaic and the strips."""
    out = np.full((grid.height, grid.width), np.nan, dtype=np.float32)
    blender = StripBlender(grid)
    strips = []
    rng = np.random.default_rng(0)
    for t in grid:
        w = t.window
        pred = rng.random(grid.shape).astype(np.float32)  # padding: anything
        rows = np.arange(w.row_off, w.row_off + w.height)[:, None]
        cols = np.arange(w.col_off, w.col_off + w.width)[None, :]
        pred[: w.height, : w.width] = field_fn(rows, cols, t)
        for s in blender.add(t, pred, np.ones((w.height, w.width), bool)):
            assert np.isnan(out[s.row0:s.row0 + s.prob.shape[0]]).all(), "rows handed out twice"
            out[s.row0:s.row0 + s.prob.shape[0]] = s.prob
            strips.append(s)
    return out, strips


@pytest.mark.parametrize("width,height,tile,overlap", [(300, 250, 96, 32), (1000, 600, 256, 64), (64, 64, 64, 16),
                                                       (700, 97, 128, 63)])
def test_constant_field_stays_constant_across_every_tile_border(width, height, tile, overlap):
    grid = make_grid(width, height, tile, overlap)
    out, strips = _blend(grid, lambda r, c, t: np.full(np.broadcast(r, c).shape, 0.37, np.float32))
    assert not np.isnan(out).any()
    assert np.abs(out - 0.37).max() < 1e-3
    assert sum(s.prob.shape[0] for s in strips) == height
    assert all(s.valid.all() for s in strips)


def test_smooth_field_has_no_seam_where_tiles_disagree_by_an_offset():
    # each tile adds its own bias: blending must give a continuous result (no jump
    # larger than the field's own gradient plus the bias spread over the overlap)
    grid = make_grid(400, 400, 128, 32)
    out, _ = _blend(grid, lambda r, c, t: (0.2 + 0.001 * c + 0.05 * ((t.row + t.col) % 2)).astype(np.float32))
    jumps = max(np.abs(np.diff(out, axis=1)).max(), np.abs(np.diff(out, axis=0)).max())
    assert jumps < 0.05 * 0.2  # a hard seam would jump by 0.05


def test_weights_are_a_partition_of_unity_and_positive():
    grid = make_grid(1000, 10, 256, 64)
    s = axis_weight_sum(grid.cols)
    assert np.allclose(s, 1.0, atol=1e-6)
    r = ramp(64)
    assert (r > 0).all() and (r < 1).all() and np.allclose(r + r[::-1], 1.0)
    assert axis_profile(grid.cols, 0)[0] == 1.0  # no falloff at the area's edge
    assert axis_profile(grid.cols, 1)[0] < 0.01


def test_band_memory_does_not_grow_with_scene_height():
    small = StripBlender(make_grid(500, 300, 128, 32))
    tall = StripBlender(make_grid(500, 30000, 128, 32))
    assert small._acc.shape == tall._acc.shape == (128, 500)


def test_strips_are_capped_in_pixels_and_nodata_survives_blending():
    grid = make_grid(300, 250, 96, 32)
    blender = StripBlender(grid, max_pixels=300 * 10)
    valid_map = np.ones((250, 300), bool)
    valid_map[100:120, 50:200] = False
    rows = []
    for t in grid:
        w = t.window
        v = valid_map[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width]
        for s in blender.add(t, np.full(grid.shape, 0.6, np.float32), v):
            assert s.prob.shape[0] <= 10
            np.testing.assert_array_equal(s.valid, valid_map[s.row0:s.row0 + s.prob.shape[0]])
            assert np.abs(s.prob[s.valid] - 0.6).max() < 1e-3
            rows.extend(range(s.row0, s.row0 + s.prob.shape[0]))
    assert rows == list(range(250))
