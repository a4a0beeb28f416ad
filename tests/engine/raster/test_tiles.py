"""Tile grid: covers the area, edge tiles padded, small scenes, option checks."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import UserError
from engine.raster.tiles import check_tiling, make_grid, pad_tile


@pytest.mark.parametrize("width,height,tile,overlap", [(1000, 700, 512, 128), (96, 96, 64, 16), (513, 512, 512, 128),
                                                       (2000, 130, 256, 64)])
def test_grid_covers_every_pixel_at_most_twice_per_axis(width, height, tile, overlap):
    grid = make_grid(width, height, tile, overlap)
    cover = np.zeros((height, width), dtype=np.int32)
    for t in grid:
        w = t.window
        assert w.col_off >= 0 and w.row_off >= 0
        assert w.col_off + w.width <= width and w.row_off + w.height <= height
        assert w.width <= grid.shape[1] and w.height <= grid.shape[0]
        cover[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] += 1
    assert cover.min() >= 1
    assert cover.max() <= 4  # overlap < tile/2: at most two tiles per axis
    assert [t.index for t in grid] == list(range(len(grid)))


def test_scene_smaller_than_a_tile_is_one_tile_rounded_to_32():
    grid = make_grid(100, 70, 512, 128)
    assert len(grid) == 1
    assert grid.shape == (96, 128)
    (t,) = list(grid)
    assert (t.window.width, t.window.height) == (100, 70)


def test_last_tile_is_padded_not_shifted():
    grid = make_grid(600, 512, 512, 128)
    tiles = list(grid)
    assert [t.window.col_off for t in tiles] == [0, 384]
    assert tiles[-1].window.width == 600 - 384


def test_pad_tile_mirrors_to_the_tile_shape():
    a = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    p = pad_tile(a, (5, 6))
    assert p.shape == (1, 5, 6)
    np.testing.assert_array_equal(p[:, :3, :4], a)
    assert p[0, 3, 0] == a[0, 1, 0]  # reflection about the last row
    one = pad_tile(np.ones((3, 1, 1), dtype=np.float32), (32, 32))
    assert one.shape == (3, 32, 32) and (one == 1).all()


@pytest.mark.parametrize("tile,overlap", [(100, 10), (0, 0), (-32, 0), (64, 32), (64, 40), (512, -1)])
def test_bad_tiling_is_a_user_error(tile, overlap):
    with pytest.raises(UserError, match="--tile-size|--overlap"):
        check_tiling(tile, overlap)


def test_good_tiling_passes():
    check_tiling(512, 128)
    check_tiling(64, 31)
    check_tiling(32, 0)
