"""The tile runner's two helper threads, so reading and writing overlap the model:

- :func:`read_batches` reads tiles through the pair, normalises and pads them (optionally
  on a pool of reader threads, each with its own reopened pair) and puts :class:`Batch` es
  on a queue of two;
- :class:`StripWriterThread` writes finished strips of rows to the GeoTIFFs and sums the
  changed area.

Errors cross to the model's thread (:class:`Failure`, or the writer's ``error``); a stop
event ends both without deadlock.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..raster.blend import Strip
from ..raster.pair import RasterPair
from ..raster.radiometry import Radiometry, model_input
from ..raster.tiles import Tile, TileGrid, pad_tile
from ..raster.write import GeoTiffStripWriter

__all__ = ["Batch", "Failure", "read_batches", "StripWriterThread"]


class _Stop(Exception):
    """The run stopped (error or cancel) while a thread waited on a queue."""


def _put(q: "queue.Queue", item: Any, stop: threading.Event) -> None:
    """Put ``item`` on ``q``, waiting while it is full; :class:`_Stop` once ``stop`` is set."""
    while True:
        if stop.is_set():
            raise _Stop()
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


@dataclass
class Batch:
    """Tiles read together: model inputs and each tile's valid pixels."""

    tiles: list
    inputs: np.ndarray  # (n, 6, H, W) float32
    valid: list  # per tile (h, w) bool


@dataclass
class Failure:
    """An exception of the reader thread, handed to the thread that runs the model."""

    exc: BaseException


def _tile_loader(pair: RasterPair, grid: TileGrid, rad_b: Radiometry, rad_a: Radiometry, workers: int):
    """(load(tile) -> (input (6, H, W) float32 padded, valid (h, w) bool), close()).

    With ``workers`` > 1 each worker thread reads through its own reopened pair."""
    shape = grid.shape

    def load_with(p: RasterPair, tile: Tile):
        b, a, valid = p.read(tile.window)
        return pad_tile(model_input(b, a, valid, rad_b, rad_a), shape), valid

    if workers <= 1:
        return (lambda tile: load_with(pair, tile)), (lambda: None)
    local = threading.local()
    opened: list[RasterPair] = []
    lock = threading.Lock()

    def load(tile: Tile):
        p = getattr(local, "pair", None)
        if p is None:
            p = local.pair = pair.reopen()
            with lock:
                opened.append(p)
        return load_with(p, tile)

    def close() -> None:
        for p in opened:
            p.close()

    return load, close


def read_batches(pair: RasterPair, grid: TileGrid, rad_b: Radiometry, rad_a: Radiometry, batch_size: int,
                 workers: int, out: "queue.Queue", stop: threading.Event,
                 only: Optional[Sequence[Tile]] = None) -> None:
    """Read, normalise and pad the tiles ``only`` (default: all of ``grid``) in row-major order
    (``workers`` threads); put :class:`Batch` es on ``out``, then None (or a :class:`Failure`)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    th, tw = grid.shape
    load, close = _tile_loader(pair, grid, rad_b, rad_a, workers)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detect-read") if workers > 1 else None
    try:
        tiles, valids = [], []
        buf = np.empty((batch_size, 6, th, tw), dtype=np.float32)
        ahead: deque = deque()
        it = iter(grid if only is None else only)
        exhausted = False
        while True:
            if stop.is_set():
                return
            # keep up to two batches of reads in flight (results stay in tile order)
            while pool is not None and not exhausted and len(ahead) < 2 * batch_size:
                tile = next(it, None)
                if tile is None:
                    exhausted = True
                else:
                    ahead.append((tile, pool.submit(load, tile)))
            if pool is not None:
                if not ahead:
                    break
                tile, fut = ahead.popleft()
                x, valid = fut.result()
            else:
                tile = next(it, None)
                if tile is None:
                    break
                x, valid = load(tile)
            buf[len(tiles)] = x
            tiles.append(tile)
            valids.append(valid)
            if len(tiles) == batch_size:
                _put(out, Batch(tiles, buf, valids), stop)
                tiles, valids = [], []
                buf = np.empty((batch_size, 6, th, tw), dtype=np.float32)
        if tiles:
            _put(out, Batch(tiles, buf[: len(tiles)], valids), stop)
        _put(out, None, stop)
    except _Stop:
        return
    except BaseException as exc:  # handed to the main thread
        try:
            _put(out, Failure(exc), stop)
        except _Stop:
            pass
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        close()


class StripWriterThread:
    """Writes :class:`~engine.raster.blend.Strip` s with ``writer`` in a thread and sums the
    changed area in m² (``area_rows(row0, n)``: each row's pixel area, None without a CRS,
    which makes ``changed_area_m2`` None). Remembers the first error; :meth:`put` and
    :meth:`finish` raise it in the caller's thread."""

    def __init__(self, writer: GeoTiffStripWriter, area_rows: Callable[[int, int], Optional[np.ndarray]]) -> None:
        self.writer = writer
        self.area_rows = area_rows
        self.changed_area_m2: Optional[float] = 0.0
        self.queue: "queue.Queue" = queue.Queue(maxsize=2)  # strips are width x stride: keep few
        self.error: Optional[BaseException] = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="detect-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                strip = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            if strip is None or self.stop.is_set():
                return
            if self.error is not None:
                continue  # keep draining so the producer never blocks
            try:
                self.writer.write(strip.row0, strip.prob, strip.valid, strip.review)
                areas = self.area_rows(strip.row0, strip.prob.shape[0])
                if areas is None:
                    self.changed_area_m2 = None
                elif self.changed_area_m2 is not None:
                    changed = ((strip.prob > self.writer.threshold) & strip.valid).sum(axis=1)
                    self.changed_area_m2 += float((changed * areas).sum())
            except BaseException as exc:
                self.error = exc

    def put(self, strip: Strip, stop: threading.Event) -> None:
        """Queue ``strip`` for writing (waits while two are queued; raises the writer's error)."""
        if self.error is not None:
            raise self.error
        _put(self.queue, strip, stop)

    def finish(self) -> None:
        """Write what is queued, end the thread, raise its error if it had one."""
        _put(self.queue, None, self.stop)
        self.thread.join()
        if self.error is not None:
            raise self.error
