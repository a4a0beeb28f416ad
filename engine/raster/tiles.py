"""The tile grid: overlapping windows over the processed area, padded at its edges.

Tiles step by ``stride = tile - overlap`` along each axis. When the area is longer than
one tile, every tile is ``tile`` pixels long; the last one may run past the area's edge
and is padded when read and cropped when blended. When the area is not longer than one
tile, that axis has one tile whose length is the area's length rounded up to a multiple
of 32 (so a 100 px scene costs a 128 px tile, not a 512 px one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from rasterio.windows import Window

from ..errors import UserError

__all__ = ["Axis", "Tile", "TileGrid", "make_grid", "check_tiling", "pad_tile", "MULTIPLE"]

MULTIPLE = 32  # the network's total stride: tile lengths are multiples of it


def check_tiling(tile_size: int, overlap: int) -> None:
    """Raise :class:`UserError` unless ``tile_size`` is a positive multiple of 32 and
    ``0 <= overlap < tile_size / 2`` (pixels)."""
    if tile_size <= 0 or tile_size % MULTIPLE:
        raise UserError(f"--tile-size {tile_size}: must be a positive multiple of {MULTIPLE}")
    if overlap < 0 or 2 * overlap >= tile_size:
        raise UserError(f"--overlap {overlap}: must be at least 0 and less than half the tile size ({tile_size // 2})")


@dataclass(frozen=True)
class Axis:
    """Tiling of one axis of ``size`` pixels.

    Attributes:
        size: pixels along the axis of the processed area.
        length: tile length in pixels (all tiles on the axis, padding included).
        overlap: pixels shared by two neighbouring tiles (0 when there is one tile).
        count: number of tiles.
    """

    size: int
    length: int
    overlap: int
    count: int

    @property
    def stride(self) -> int:
        return self.length - self.overlap

    def start(self, i: int) -> int:
        """First pixel of tile ``i``."""
        return i * self.stride

    def valid(self, i: int) -> int:
        """Pixels of tile ``i`` inside the area (the rest is padding)."""
        return min(self.length, self.size - self.start(i))

    def finished(self, i: int) -> int:
        """Pixels before this index are final once tiles ``0..i`` are blended."""
        return self.size if i >= self.count - 1 else self.start(i + 1)

    def touching(self, lo: int, hi: int) -> range:
        """Indices of the tiles whose pixels meet ``lo <= p < hi`` (all tiles covering it)."""
        first = next(i for i in range(self.count) if self.start(i) + self.valid(i) > lo)
        last = max(i for i in range(first, self.count) if self.start(i) < hi)
        return range(first, last + 1)


def _axis(size: int, tile: int, overlap: int) -> Axis:
    if size <= tile:
        return Axis(size=size, length=min(tile, math.ceil(size / MULTIPLE) * MULTIPLE), overlap=0, count=1)
    stride = tile - overlap
    return Axis(size=size, length=tile, overlap=overlap, count=math.ceil((size - tile) / stride) + 1)


@dataclass(frozen=True)
class Tile:
    """One tile: grid position and the window of real pixels it reads.

    Attributes:
        row, col: grid indices.
        window: pixels read, in the processed area's pixel coordinates (never past its edge).
        index: position in row-major order.
    """

    row: int
    col: int
    window: Window
    index: int


@dataclass(frozen=True)
class TileGrid:
    """Tiles over a ``width`` x ``height`` area; ``shape`` (rows, cols) of every tile."""

    rows: Axis
    cols: Axis

    @property
    def width(self) -> int:
        return self.cols.size

    @property
    def height(self) -> int:
        return self.rows.size

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.length, self.cols.length

    def __len__(self) -> int:
        return self.rows.count * self.cols.count

    def tile(self, row: int, col: int) -> Tile:
        window = Window(self.cols.start(col), self.rows.start(row), self.cols.valid(col), self.rows.valid(row))
        return Tile(row=row, col=col, window=window, index=row * self.cols.count + col)

    def __iter__(self) -> Iterator[Tile]:
        """Tiles in row-major order (the order blending relies on)."""
        for r in range(self.rows.count):
            for c in range(self.cols.count):
                yield self.tile(r, c)

    def touching(self, window: Window) -> tuple[range, range]:
        """(grid rows, grid cols) of the tiles that read a pixel of ``window`` (area
        pixels): every tile that contributes to one of its pixels, in row-major order."""
        r0, c0 = int(window.row_off), int(window.col_off)
        return (self.rows.touching(r0, r0 + int(window.height)), self.cols.touching(c0, c0 + int(window.width)))


def make_grid(width: int, height: int, tile_size: int, overlap: int) -> TileGrid:
    """The tile grid over a ``width`` x ``height`` pixel area (see module docstring)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"empty area {width}x{height}")
    return TileGrid(rows=_axis(height, tile_size, overlap), cols=_axis(width, tile_size, overlap))


def pad_tile(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pad ``array`` (..., h, w) at the bottom and right to ``shape`` (rows, cols) by
    mirroring, so the model sees plausible texture instead of a hard edge."""
    h, w = array.shape[-2:]
    ph, pw = shape[0] - h, shape[1] - w
    if ph == 0 and pw == 0:
        return array
    pad = [(0, 0)] * (array.ndim - 2) + [(0, ph), (0, pw)]
    mode = "reflect" if h > 1 and w > 1 else "edge"
    return np.pad(array, pad, mode=mode)
