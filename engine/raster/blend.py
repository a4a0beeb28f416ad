"""Seamless mosaicking of overlapping tile predictions, one band of rows at a time.

Each tile's weight is the product of two 1-D profiles: 1 in the middle, falling off
smoothly (raised cosine) across the overlap on every side that has a neighbour, and
staying 1 on sides at the area's edge. Along an axis the falling profile of one tile and
the rising profile of the next add up to 1, so blending never changes a field that all
tiles agree on, and the normalising weight is separable: the accumulator holds only the
weighted sum.

:class:`StripBlender` keeps one tile-height band of rows (``tile rows x width`` float32);
after the last tile of a grid row is added, the rows no later tile touches are returned
and the band moves down. Memory does not grow with the scene's height.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .tiles import Axis, Tile, TileGrid

__all__ = ["ramp", "axis_profile", "axis_weight_sum", "StripBlender", "Strip"]


def ramp(n: int) -> np.ndarray:
    """Rising raised-cosine ramp of ``n`` samples, strictly between 0 and 1; ``ramp(n)``
    plus its reverse is 1 everywhere."""
    k = (np.arange(n, dtype=np.float64) + 0.5) / n
    return (0.5 - 0.5 * np.cos(np.pi * k)).astype(np.float32)


def axis_profile(axis: Axis, i: int) -> np.ndarray:
    """Weight profile (length ``axis.length``) of tile ``i`` along ``axis``."""
    w = np.ones(axis.length, dtype=np.float32)
    o = axis.overlap
    if o > 0:
        if i > 0:
            w[:o] = ramp(o)
        if i < axis.count - 1:
            w[-o:] = ramp(o)[::-1]
    return w


def axis_weight_sum(axis: Axis) -> np.ndarray:
    """Sum of all tiles' profiles at each pixel of the axis (length ``axis.size``; 1 up
    to float rounding, computed rather than assumed)."""
    total = np.zeros(axis.start(axis.count - 1) + axis.length, dtype=np.float64)
    for i in range(axis.count):
        s = axis.start(i)
        total[s:s + axis.length] += axis_profile(axis, i)
    return total[: axis.size].astype(np.float32)


@dataclass
class Strip:
    """Finished rows: ``prob`` (rows, width) float32 in [0, 1], ``valid`` (rows, width)
    bool, starting at area row ``row0`` and area column ``col0`` (0 unless the blender
    covers a column range of the grid)."""

    row0: int
    prob: np.ndarray
    valid: np.ndarray
    col0: int = 0
    review: Optional[np.ndarray] = None  # (rows, width) float32 hard-region score in [0, 1], when blended


class StripBlender:
    """Accumulates tile predictions in row-major order and hands back finished rows.

    Nodata pixels are kept as NaN in the accumulator (a pixel is nodata for every tile
    that reads it), so the band costs 4 bytes a pixel. Finished rows are handed out in
    strips of at most ``max_pixels`` pixels, so the temporaries of the writer stay small
    however wide the scene is.

    Args:
        grid: the tile grid; tiles must be added grid row by grid row (any order within
            a row), each exactly once.
        max_pixels: largest strip handed out (rows x width; at least one row).
        rows, cols: grid rows and columns to blend (default: all). With a sub-range the
            band covers only those tiles' pixels and blends them with the whole grid's
            weights, so a pixel all of whose tiles are in the range gets exactly the
            value of a whole-grid run; after the range's last row every remaining row
            is handed out (the caller keeps the pixels it needs: a map sheet's own).
        review: also blend a second field per tile (the hard-region score), with the
            same weights; strips then carry it as ``review``.
    """

    def __init__(self, grid: TileGrid, max_pixels: int = 1 << 20, rows: Optional[range] = None,
                 cols: Optional[range] = None, review: bool = False) -> None:
        self.grid = grid
        self.rows = rows if rows is not None else range(grid.rows.count)
        self.cols = cols if cols is not None else range(grid.cols.count)
        if not self.rows or not self.cols:
            raise ValueError("empty tile range")
        last_c = self.cols[-1]
        self._x0 = grid.cols.start(self.cols[0])
        self._width = grid.cols.start(last_c) + grid.cols.valid(last_c) - self._x0
        self._acc = np.zeros((grid.rows.length, self._width), dtype=np.float32)
        self._acc_review = np.zeros_like(self._acc) if review else None
        self._row0 = grid.rows.start(self.rows[0])  # area row of the band's first row
        self._col_sum = axis_weight_sum(grid.cols)[self._x0:self._x0 + self._width]
        self._row_sum = axis_weight_sum(grid.rows)
        self._profiles_r = {i: axis_profile(grid.rows, i) for i in self.rows}
        self._profiles_c = {j: axis_profile(grid.cols, j) for j in self.cols}
        self._pending = {i: len(self.cols) for i in self.rows}
        self.strip_rows = max(1, int(max_pixels) // self._width)

    def add(self, tile: Tile, prob: np.ndarray, valid: np.ndarray,
            review: Optional[np.ndarray] = None) -> list[Strip]:
        """Add one tile's prediction.

        Args:
            tile: the tile (from ``grid``).
            prob: (tile rows, tile cols) float change probability, padding included.
            valid: (window rows, window cols) bool, True where both dates have data.
            review: (tile rows, tile cols) float hard-region score (required when the
                blender was made with ``review=True``, ignored otherwise).

        Returns:
            the rows that became final, top to bottom (empty until a grid row is complete).
        """
        w = tile.window
        h, wd = int(w.height), int(w.width)
        y0 = int(w.row_off) - self._row0
        x0 = int(w.col_off) - self._x0
        if tile.row not in self._pending or tile.col not in self._profiles_c:
            raise ValueError(f"tile {tile.row},{tile.col} is outside the blended range")
        if y0 < 0:
            raise ValueError(f"tile {tile.row},{tile.col} added after its rows were flushed")
        weight = self._profiles_r[tile.row][:h, None] * self._profiles_c[tile.col][None, :wd]
        accs = [(self._acc, prob)]
        if self._acc_review is not None:
            if review is None:
                raise ValueError("this blender blends a review field: give each tile's review")
            accs.append((self._acc_review, review))
        for acc, field in accs:
            weighted = field[:h, :wd] * weight
            np.nan_to_num(weighted, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
            region = acc[y0:y0 + h, x0:x0 + wd]
            region += weighted
            if not valid.all():
                region[~valid] = np.nan
        self._pending[tile.row] -= 1
        if self._pending[tile.row] == 0:
            return self._flush(tile.row)
        return []

    def _flush(self, grid_row: int) -> list[Strip]:
        axis = self.grid.rows
        end = axis.finished(grid_row) if grid_row < self.rows[-1] else axis.start(grid_row) + axis.valid(grid_row)
        n = end - self._row0
        strips = []
        for r in range(0, n, self.strip_rows):
            rows = min(self.strip_rows, n - r)
            a = self._acc[r:r + rows]
            valid = ~np.isnan(a)
            norm = self._row_sum[self._row0 + r:self._row0 + r + rows, None] * self._col_sum[None, :]
            prob = _normalised(a, norm)
            review = None if self._acc_review is None else _normalised(self._acc_review[r:r + rows], norm)
            strips.append(Strip(row0=self._row0 + r, prob=prob, valid=valid, col0=self._x0, review=review))
        # move the band down: keep the rows not yet final at the top
        keep = self._acc.shape[0] - n
        for acc in (self._acc, self._acc_review):
            if acc is not None:
                acc[:keep] = acc[n:]
                acc[keep:] = 0
        self._row0 = end
        return strips


def _normalised(acc: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """Weighted sums / weight sums, clipped to [0, 1], 0 at nodata (NaN)."""
    out = np.divide(acc, norm, dtype=np.float32)
    np.nan_to_num(out, copy=False, nan=0.0)
    np.clip(out, 0.0, 1.0, out=out)
    return out
