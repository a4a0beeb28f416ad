"""Run tiles: read (threads) -> infer (here) -> blend -> write (thread), over any window of a
planned area.

:func:`run_window` runs exactly the tiles of ``plan.grid`` that touch ``window``, reads
their pixels (the neighbours' too: a halo) through the pair, blends them with the whole
grid's weights and writes only the window's pixels: the result equals the same window of
a run over the whole area. A scene runs one window, all of it; a map sheet runs its own.

Memory stays bounded whatever the area's size: tiles are read one at a time, at most two
batches wait in the prefetch queue, the blender holds one tile-height band of rows and
the writer gets finished rows as soon as no later tile touches them.
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading
from typing import Optional, Sequence

import numpy as np

from ..events import Events
from ..raster.blend import Strip, StripBlender
from ..raster.pair import RasterPair
from ..raster.radiometry import Radiometry
from ..raster.tiles import Tile, TileGrid
from ..raster.write import GeoTiffStripWriter
from .plan import AreaPlan
from .predictors import Engine, Predictor, split_output
from .threads import Batch, Failure, StripWriterThread, read_batches

__all__ = ["run_window", "run_tiles", "row_pixel_areas_m2", "gdal_cache_bytes", "gdal_cache"]


def row_pixel_areas_m2(transform, crs, row0: int, rows: int) -> Optional[np.ndarray]:
    """Ground area in m² of one pixel in each of ``rows`` rows from ``row0`` (None
    without a CRS). Geographic CRSs use the pixel's latitude on the WGS84 mean radius."""
    if crs is None:
        return None
    w, h = abs(transform.a), abs(transform.e)
    if crs.is_geographic:
        r = 6_371_008.8
        lat = np.radians(transform.f + transform.e * (np.arange(row0, row0 + rows) + 0.5))
        return (np.radians(w) * r * np.cos(lat)) * (np.radians(h) * r)
    try:
        factor = float(crs.linear_units_factor[1])
    except Exception:
        factor = 1.0
    return np.full(rows, w * h * factor * factor)


def gdal_cache_bytes(inputs: Sequence[tuple[int, int, int, int]], width: int, tile_shape: tuple[int, int],
                     out_bytes_per_pixel: int) -> int:
    """GDAL block cache (bytes) that avoids decoding an input block twice per tile row.

    Args:
        inputs: per date (raster width, block rows, block cols, bytes per pixel of all bands).
        width: processed width in pixels.
        tile_shape: (rows, cols) of a tile.
        out_bytes_per_pixel: bytes per pixel of all outputs (two block rows stay dirty).

    A striped input (blocks as wide as the raster) needs a tile row of full-width strips;
    a tiled one a few tiles' worth of blocks. At least 64 MiB, at most 1 GiB: a fixed
    cache keeps memory flat across scene sizes (GDAL's default, 5 % of RAM, fills up).
    """
    th, tw = tile_shape
    need = width * 2 * 256 * out_bytes_per_pixel
    for raster_width, bh, bw, bpp in inputs:
        if bw >= raster_width // 2:
            need += raster_width * (th + bh) * bpp
        else:
            need += (th + bh) * (tw + 2 * bw) * bpp * 2
    return int(min(max(1.25 * need, 64 << 20), 1 << 30))


def gdal_cache(pair: RasterPair, grid: TileGrid, writer: GeoTiffStripWriter):
    """rasterio.Env with a bounded GDAL_CACHEMAX, unless the user set one."""
    import rasterio

    if "GDAL_CACHEMAX" in os.environ:
        return contextlib.nullcontext()
    inputs = []
    for src in (pair.before, pair.after):
        ds = src.dataset
        bh, bw = ds.block_shapes[0]
        inputs.append((ds.width, bh, bw, sum(np.dtype(t).itemsize for t in ds.dtypes)))
    out_bpp = (np.dtype(writer.prob_dtype).itemsize if writer.prob_path else 0) + (1 if writer.mask_path else 0)
    return rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(inputs, pair.width, grid.shape, out_bpp))


def _crop_to_window(strip: Strip, window) -> Optional[Strip]:
    """The part of ``strip`` inside ``window`` (area pixels), in window coordinates."""
    r0, c0 = int(window.row_off), int(window.col_off)
    top, bottom = max(strip.row0, r0), min(strip.row0 + strip.prob.shape[0], r0 + int(window.height))
    if top >= bottom:
        return None
    rows = slice(top - strip.row0, bottom - strip.row0)
    cols = slice(c0 - strip.col0, c0 - strip.col0 + int(window.width))
    review = None if strip.review is None else strip.review[rows, cols]
    return Strip(row0=top - r0, prob=strip.prob[rows, cols], valid=strip.valid[rows, cols], review=review)


def run_tiles(pair: RasterPair, grid: TileGrid, rad_b: Radiometry, rad_a: Radiometry, batch: int,
              predictor: Predictor, writer: GeoTiffStripWriter, events: Events, workers: int = 1,
              tiles: Optional[Sequence[Tile]] = None, blender: Optional[StripBlender] = None,
              window=None) -> Optional[float]:
    """Read (threads) -> predict (here) -> blend (here) -> write (thread). Returns the
    changed area in m² from the mask (None without a CRS).

    With ``window`` (area pixels) only ``tiles`` (those touching it) run, ``blender``
    covers their range, and the writer gets the window's pixels in window coordinates."""
    stop = threading.Event()
    inbox: "queue.Queue" = queue.Queue(maxsize=2)
    reader = threading.Thread(target=read_batches, args=(pair, grid, rad_b, rad_a, batch, workers, inbox, stop, tiles),
                              name="detect-reader", daemon=True)
    crs = pair.crs if pair.georeferenced else None
    row_shift = 0 if window is None else int(window.row_off)
    out = StripWriterThread(writer, lambda r0, n: row_pixel_areas_m2(pair.transform, crs, r0 + row_shift, n))
    blender = blender or StripBlender(grid)
    total, done = (len(grid) if tiles is None else len(tiles)), 0
    pipelined = hasattr(predictor, "submit") and hasattr(predictor, "result")

    def blend(item: Batch, output) -> None:
        nonlocal done
        probs, reviews = split_output(output)
        for k, (tile, prob, valid) in enumerate(zip(item.tiles, probs, item.valid)):
            for strip in blender.add(tile, prob, valid, None if reviews is None else reviews[k]):
                strip = strip if window is None else _crop_to_window(strip, window)
                if strip is not None:
                    out.put(strip, stop)
        done += len(item.tiles)
        events.progress(done, total, "detect")

    events.progress(0, total, "detect")
    reader.start()
    pending = None  # (batch, handle) submitted but not blended yet
    try:
        while True:
            events.check_cancel()
            try:
                item = inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(item, Failure):
                raise item.exc
            if item is not None and not pipelined:
                blend(item, predictor(item.inputs))
                continue
            handle = predictor.submit(item.inputs) if item is not None else None
            if pending is not None:
                blend(pending[0], predictor.result(pending[1]))
            pending = (item, handle) if item is not None else None
            if item is None:
                break
        out.finish()
    except BaseException:
        stop.set()
        out.stop.set()
        raise
    finally:
        stop.set()
        reader.join()
        out.thread.join()
    return out.changed_area_m2


def run_window(pair, plan: AreaPlan, engine: Engine, window=None, *, prob_path=None, mask_path=None,
               events: Optional[Events] = None, tags: Optional[dict] = None, review_path=None) -> dict:
    """Run the tiles of ``plan.grid`` touching ``window`` and write the window's pixels.

    Args:
        pair: the :class:`~engine.raster.pair.RasterPair` the plan was made on.
        window: a :class:`rasterio.windows.Window` of the area (None: all of it).
        prob_path, mask_path: GeoTIFFs to write (window-sized, georeferenced), either may be None.
        review_path: GeoTIFF of the hard-region score blended like the probability, or None
            (the predictor must give one: see :func:`engine.core.predictors.gives_review`).
        events: progress (``stage="detect"``, one step a batch) and cancel checks.
        tags: GeoTIFF metadata.

    Returns:
        ``{"tiles", "pixels", "valid_pixels", "changed_pixels", "changed_area_m2", "seconds_tiles"}``.
    """
    import time

    from affine import Affine
    from rasterio.windows import Window

    from ..raster.blend import StripBlender
    from ..raster.write import GeoTiffStripWriter

    events = events or Events()
    grid = plan.grid
    window = window if window is not None else Window(0, 0, pair.width, pair.height)
    rows, cols = grid.touching(window)
    tiles = [grid.tile(r, c) for r in rows for c in cols]
    blender = StripBlender(grid, rows=rows, cols=cols, review=review_path is not None)
    width, height = int(window.width), int(window.height)
    transform = pair.transform @ Affine.translation(window.col_off, window.row_off)
    georef = pair.georeferenced or not pair.transform.is_identity
    writer = GeoTiffStripWriter(width, height, transform if georef else None, pair.crs, prob_path=prob_path,
                                mask_path=mask_path, prob_dtype=plan.probability_dtype, threshold=plan.threshold,
                                tags=tags, review_path=review_path)
    try:
        t0 = time.perf_counter()
        with gdal_cache(pair, grid, writer):
            area = run_tiles(pair, grid, plan.rad_before, plan.rad_after, min(plan.batch_size, len(tiles)),
                              engine.predictor, writer, events, plan.read_threads, tiles=tiles, blender=blender,
                              window=window)
        seconds = time.perf_counter() - t0
    finally:
        writer.close(overviews=False)
    return {"tiles": len(tiles), "pixels": width * height, "valid_pixels": writer.valid_pixels,
            "changed_pixels": writer.changed_pixels, "changed_area_m2": None if area is None else round(area, 3),
            "seconds_tiles": seconds}
