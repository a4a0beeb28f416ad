"""Plan: what is fixed for a processed area before any tile runs (:class:`AreaPlan`): the
tile grid over the whole area, each date's radiometry, tile size, overlap, threshold, batch
size and reader threads. A scene plans its pair; map sheets plan the mosaic of all sheets
once and run windows of it (:func:`engine.core.runner.run_window`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from ..events import Events
from ..raster.pair import RasterPair
from ..raster.radiometry import Radiometry, choose_radiometry, needs_stretch, percentiles, sample_windows
from .options import DetectOptions
from .predictors import Engine

__all__ = ["AreaPlan", "plan_area", "resolve_tiling", "default_batch_size", "area_radiometry"]


@dataclass
class AreaPlan:
    """Everything fixed for a processed area before any tile runs (picklable, small).

    Attributes:
        grid: the :class:`~engine.raster.tiles.TileGrid` over the whole area.
        rad_before, rad_after: the dates' :class:`~engine.raster.radiometry.Radiometry`.
        tile_size, overlap: pixels. threshold: change when probability > threshold.
        batch_size: tiles per forward pass. read_threads: reader threads.
        min_area, simplify, probability_dtype: as in :class:`DetectOptions`.
    """

    grid: Any
    rad_before: Any
    rad_after: Any
    tile_size: int
    overlap: int
    threshold: float
    batch_size: int
    read_threads: int
    min_area: float
    simplify: float
    probability_dtype: str

    def describe(self) -> dict:
        return {"tile_size": self.tile_size, "overlap": self.overlap, "tile_shape": list(self.grid.shape),
                "threshold": self.threshold, "batch_size": self.batch_size, "read_threads": self.read_threads,
                "radiometry": {"before": self.rad_before.describe(), "after": self.rad_after.describe()}}


def resolve_tiling(options: DetectOptions, model_info) -> tuple[int, int, float]:
    """(tile size, overlap, threshold) from the options and the checkpoint's defaults."""
    from ..raster.tiles import check_tiling

    tile_size = int(options.tile_size if options.tile_size is not None else model_info.tile_size)
    overlap = options.overlap
    if overlap is None:
        overlap = int(model_info.overlap)
        if 2 * overlap >= tile_size:
            overlap = tile_size // 4  # the checkpoint's overlap does not fit a smaller --tile-size
    check_tiling(tile_size, overlap)
    threshold = float(options.threshold if options.threshold is not None else model_info.threshold)
    return tile_size, int(overlap), threshold


def default_batch_size(device_type: str, tile_shape: tuple[int, int]) -> int:
    """Tiles per forward pass: 8 per 512x512 tile area on CUDA (at most 64), 2 on CPU."""
    if device_type == "cuda":
        return int(max(1, min(64, round(8 * 512 * 512 / (tile_shape[0] * tile_shape[1])))))
    return 2


def area_radiometry(pair: RasterPair, scaling: dict, events: Events) -> tuple[Radiometry, Radiometry]:
    """Each date's :class:`~engine.raster.radiometry.Radiometry` over the whole area (a stretch
    from sampled 2-98 % percentiles where the checkpoint's scaling does not fit the data type);
    one log event per date says which."""
    rads = []
    for name, src in (("before", pair.before), ("after", pair.after)):
        if needs_stretch(src.dtype, scaling):
            samples = [src.read(w) for w in sample_windows(pair.width, pair.height)]
            low, high = percentiles(samples)
            rad = choose_radiometry(src.dtype, scaling, low[:3] if len(low) >= 3 else low[:1],
                                    high[:3] if len(high) >= 3 else high[:1])
            events.log(f"{src.path}: {src.dtype} bands stretched per band from 2-98 % percentiles "
                       f"{', '.join(f'{lo:g}-{hi:g}' for lo, hi in zip(rad.low, rad.high))}")
        else:
            rad = choose_radiometry(src.dtype, scaling)
            events.log(f"{src.path}: {src.dtype} bands scaled {'as the checkpoint says' if rad.mode == 'checkpoint' else 'from 0-255'}")
        rads.append(rad)
    return rads[0], rads[1]


def plan_area(pair, engine: Engine, options: DetectOptions, events: Optional[Events] = None) -> AreaPlan:
    """The global tile grid and the radiometry of the whole processed area of ``pair``."""
    from ..raster.tiles import make_grid

    events = events or Events()
    tile_size, overlap, threshold = resolve_tiling(options, engine.model_info)
    rad_b, rad_a = area_radiometry(pair, engine.model_info.scaling, events)
    grid = make_grid(pair.width, pair.height, tile_size, overlap)
    dev_type = engine.device_type
    batch = int(options.batch_size or default_batch_size(dev_type, grid.shape))
    workers = int(options.read_threads or (min(8, max(1, (os.cpu_count() or 2) // 2)) if dev_type == "cuda" else 1))
    return AreaPlan(grid, rad_b, rad_a, tile_size, overlap, threshold, batch, workers, options.min_area,
                    options.simplify, options.probability_dtype)
