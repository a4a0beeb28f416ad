"""Scene change detection: two rasters in, change probability, mask and polygons out.

The pipeline wires the stages of :mod:`engine.raster` and :mod:`engine.vector`::

    pair -> tiles -> (reader thread: read, radiometry, pad, batch)
         -> predictor (this thread) -> blend (band of rows) -> (writer thread: GeoTIFFs)
         -> polygonize (from the written mask/probability) -> rename outputs

Memory stays bounded whatever the scene size: tiles are read one at a time, at most two
batches wait in the prefetch queue, the blender holds one tile-height band of rows and
the writer gets finished rows as soon as no later tile touches them.

Everything is written to hidden temporary files beside the targets and renamed only
when all stages succeeded; an error or a cancel removes them.

Call :func:`detect` from Python with an :class:`~engine.events.Events` (progress
callback and cancel check), and a :class:`Predictor` when a stand-in model is wanted.
"""
from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from . import model_fit
from .errors import UserError
from .events import Events
from .pipeline import (AreaPlan, DetectOptions, Engine, check_model_path, load_engine, plan_area, resolve_tiling,
                       run_window, validate_options)
from .raster.blend import Strip, StripBlender
from .raster.pair import RasterPair, open_pair
from .raster.radiometry import Radiometry, choose_radiometry, model_input, needs_stretch, percentiles, sample_windows
from .raster.tiles import Tile, TileGrid, pad_tile
from .raster.write import GeoTiffStripWriter, temporary_path

__all__ = [
    "Predictor",
    "ModelPredictor",
    "DifferencePredictor",
    "DetectResult",
    "detect",
    "check_outputs",
    "default_batch_size",
    "gives_review",
    "split_output",
]

RASTER_EXTENSIONS = (".tif", ".tiff")
VECTOR_ROLES = ("vector", "review_areas")


class Predictor(Protocol):
    """Anything that maps a batch of model inputs to change probabilities.

    Called with a float32 array (N, 6, H, W) (before RGB then after RGB, normalised);
    returns float32 (N, H, W) probabilities in [0, 1]. ``describe()`` (optional) returns
    a dict with at least ``device`` and ``precision`` for the start event. A predictor
    may also offer ``submit(batch) -> handle`` and ``result(handle) -> array``: the
    pipeline then starts batch k+1 before blending batch k.

    A predictor with ``gives_review = True`` returns ``(prob, review)`` instead: review is
    float32 (N, H, W) in [0, 1], HRMNet's hard-region score (see :func:`split_output`).
    """

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def gives_review(predictor) -> bool:
    """Whether ``predictor`` returns ``(prob, review)`` (its ``gives_review`` attribute)."""
    return bool(getattr(predictor, "gives_review", False))


def split_output(out) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """A predictor's result -> (probabilities (N, H, W), review scores (N, H, W) or None)."""
    if isinstance(out, tuple):
        return out[0], out[1]
    return out, None


class ModelPredictor:
    """An HRMNet (or any module returning ``(change, hard)``) on a :class:`~engine.runtime.Runtime`.

    The change probability is ``change[:, 0]``. With ``review=True`` it returns
    ``(prob, review)``, review = ``hard[:, 0]`` (the network computes it anyway: the cost
    is one more copy back from the device).
    """

    def __init__(self, model, runtime, review: bool = False) -> None:
        import torch

        self.torch = torch
        self.runtime = runtime
        self.model = runtime.prepare(model).eval()
        self.gives_review = bool(review)

    def submit(self, batch: np.ndarray):
        """Start the forward pass of ``batch``; :meth:`result` waits for it. On CUDA the
        kernels and the copy back to pinned memory run while the caller blends the
        previous batch."""
        torch = self.torch
        x = torch.from_numpy(batch)
        cuda = self.runtime.device.type == "cuda"
        if cuda:
            x = x.pin_memory()
        x = self.runtime.tensor(x)
        with torch.inference_mode(), self.runtime.autocast():
            change, hard = self.model(x)
            p = change[:, 0].float()
            if self.gives_review:  # one (2, N, H, W) block: one copy back
                p = torch.stack([p, hard[:, 0].float()])
        if not cuda:
            return p, None
        host = torch.empty(p.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(p, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done

    def result(self, handle):
        """(N, H, W) float32 probabilities of a :meth:`submit` ted batch; with review,
        ``(prob, review)``."""
        host, done = handle
        if done is not None:
            done.synchronize()
        out = host.numpy()
        return (out[0], out[1]) if self.gives_review else out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.result(self.submit(batch))

    def describe(self) -> dict:
        return self.runtime.describe()


class DifferencePredictor:
    """Stand-in model: mean absolute difference of the dates' normalised channels,
    times ``gain``, clipped to [0, 1]. Used by tests (geometry) and benchmarks.

    With ``review=True`` it returns ``(prob, review)``, review = ``1 - |2 prob - 1|``
    (highest where the probability is undecided), like a hard-region score."""

    def __init__(self, gain: float = 1.0, review: bool = False) -> None:
        self.gain = gain
        self.gives_review = bool(review)

    def __call__(self, batch: np.ndarray):
        d = np.abs(batch[:, 3:] - batch[:, :3]).mean(axis=1) * self.gain
        prob = np.clip(d, 0.0, 1.0).astype(np.float32)
        if self.gives_review:
            return prob, (1.0 - np.abs(2.0 * prob - 1.0)).astype(np.float32)
        return prob

    def describe(self) -> dict:
        return {"device": "cpu (stand-in model)", "precision": "fp32"}


@dataclass
class DetectResult:
    """What :func:`detect` produced: ``outputs`` (role -> final path) and ``stats``."""

    outputs: dict
    stats: dict
    info: dict = field(default_factory=dict)


def default_batch_size(device_type: str, tile_shape: tuple[int, int]) -> int:
    """Tiles per forward pass: 8 per 512x512 tile area on CUDA (at most 64), 2 on CPU."""
    if device_type == "cuda":
        return int(max(1, min(64, round(8 * 512 * 512 / (tile_shape[0] * tile_shape[1])))))
    return 2


# ----------------------------------------------------------------------------- outputs


def _probe_writable(folder: Path, target: Path) -> None:
    """Raise UserError unless a file can be created in ``folder`` (an unpredictable name,
    created exclusively, removed at once)."""
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".hrmnet-probe-", dir=folder)
    except OSError as exc:
        raise UserError(f"{target}: output folder {folder} is not writable ({exc.strerror or exc})") from exc
    os.close(fd)
    os.unlink(probe)


def check_outputs(outputs: dict[str, Optional[str]], inputs: Sequence[str], overwrite: bool) -> dict[str, Path]:
    """Validate output paths before any work; remove stale temporaries of dead runs there.

    Args:
        outputs: role (``vector``, ``probability``, ``mask``, ``review``, ``review_areas``)
            -> path or None.
        inputs: input paths an output must not replace (compared by real path and file
            identity, sidecar files included; see :mod:`engine.outputs`).
        overwrite: allow replacing existing files.

    Returns:
        role -> absolute :class:`Path` for the outputs given (as the user named them).

    Raises:
        UserError: none given, unsupported extension, missing or read-only folder,
            existing file without ``overwrite``, an output used twice or reaching an
            input (through ``..``, a symlink or a hard link), control characters.
    """
    from .outputs import check_output, expect_run, real_path, remove_stale, same_file
    from .vector.io import check_vector_path, vector_sidecars

    given = {k: Path(v).expanduser().absolute() for k, v in outputs.items() if v}
    if not given:
        raise UserError("detect: give at least one of --out-vector, --out-probability, --out-mask, --out-review, "
                        "--out-review-areas")
    seen: dict[Path, str] = {}
    for role, p in given.items():
        if role in VECTOR_ROLES:
            check_vector_path(p)
        elif p.suffix.lower() not in RASTER_EXTENSIONS:
            raise UserError(f"{p}: unsupported {role} format {p.suffix or '(no extension)'} (use .tif)")
        check_output(p, role, inputs)
        for q, other in seen.items():
            if same_file(p, q):
                raise UserError(f"{p}: used for both the {other} and the {role} output")
        seen[p] = role
        folder = p.parent
        if not folder.is_dir():
            raise UserError(f"{p}: output folder {folder} does not exist")
        if p.is_dir():
            raise UserError(f"{p}: is a folder")
        existing = [q for q in ([p] + (vector_sidecars(p) if role in VECTOR_ROLES else [])) if os.path.lexists(q)]
        if existing and not overwrite:
            raise UserError(f"{existing[0]}: exists (use --overwrite to replace it)")
        _probe_writable(folder, p)
        remove_stale(real_path(folder))
    expect_run(given.values())
    return given


# ----------------------------------------------------------------------------- areas


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


# ----------------------------------------------------------------------------- threads


class _Stop(Exception):
    pass


def _put(q: "queue.Queue", item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stop()
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


@dataclass
class _Batch:
    tiles: list
    inputs: np.ndarray  # (n, 6, H, W) float32
    valid: list  # per tile (h, w) bool


@dataclass
class _Failure:
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


def _reader(pair: RasterPair, grid: TileGrid, rad_b: Radiometry, rad_a: Radiometry, batch_size: int,
            workers: int, out: "queue.Queue", stop: threading.Event, only: Optional[Sequence[Tile]] = None) -> None:
    """Read, normalise and pad the tiles ``only`` (default: all of ``grid``) in row-major order
    (``workers`` threads); put :class:`_Batch` es on ``out``, then None (or a :class:`_Failure`)."""
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
                _put(out, _Batch(tiles, buf, valids), stop)
                tiles, valids = [], []
                buf = np.empty((batch_size, 6, th, tw), dtype=np.float32)
        if tiles:
            _put(out, _Batch(tiles, buf[: len(tiles)], valids), stop)
        _put(out, None, stop)
    except _Stop:
        return
    except BaseException as exc:  # handed to the main thread
        try:
            _put(out, _Failure(exc), stop)
        except _Stop:
            pass
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        close()


class _WriterThread:
    """Writes strips in a thread; remembers the first error."""

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
        if self.error is not None:
            raise self.error
        _put(self.queue, strip, stop)

    def finish(self) -> None:
        _put(self.queue, None, self.stop)
        self.thread.join()
        if self.error is not None:
            raise self.error


# ----------------------------------------------------------------------------- pipeline


def _radiometry(pair: RasterPair, scaling: dict, events: Events) -> tuple[Radiometry, Radiometry]:
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


def _parse_extent(extent) -> Optional[tuple[float, float, float, float]]:
    if extent is None:
        return None
    if isinstance(extent, str):
        try:
            extent = [float(v) for v in extent.split(",")]
        except ValueError as exc:
            raise UserError(f"--extent {extent}: expected xmin,ymin,xmax,ymax (numbers)") from exc
    ext = tuple(float(v) for v in extent)
    if len(ext) != 4 or not all(math.isfinite(v) for v in ext):
        raise UserError(f"--extent {','.join(map(str, extent))}: expected four numbers xmin,ymin,xmax,ymax")
    if ext[0] >= ext[2] or ext[1] >= ext[3]:
        raise UserError(f"--extent {','.join(f'{v:g}' for v in ext)}: xmin must be < xmax and ymin < ymax")
    return ext  # type: ignore[return-value]


def _remove(path: Optional[Path]) -> None:
    """Delete a temporary output (file or vector dataset) and end this run's staging
    folders (:func:`engine.outputs.release_run`): nothing of the run is left."""
    from .outputs import discard, release_run

    if path is not None:
        discard(path)
    release_run()


def detect(
    before: str | os.PathLike,
    after: str | os.PathLike,
    *,
    model: Optional[str | os.PathLike] = None,
    predictor: Optional[Predictor] = None,
    model_info=None,
    out_vector: Optional[str | os.PathLike] = None,
    out_probability: Optional[str | os.PathLike] = None,
    out_mask: Optional[str | os.PathLike] = None,
    out_review: Optional[str | os.PathLike] = None,
    out_review_areas: Optional[str | os.PathLike] = None,
    review_threshold: Optional[float] = None,
    bands_before: Optional[Sequence[int]] = None,
    bands_after: Optional[Sequence[int]] = None,
    tile_size: Optional[int] = None,
    overlap: Optional[int] = None,
    batch_size: Optional[int] = None,
    read_threads: Optional[int] = None,
    device: str = "auto",
    precision: str = "auto",
    threshold: Optional[float] = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    extent: Optional[Sequence[float] | str] = None,
    probability_dtype: str = "uint8",
    overwrite: bool = False,
    events: Optional[Events] = None,
    on_event: Optional[Callable[[dict], None]] = None,
    is_cancelled: Optional[Callable[[], bool]] = None,
) -> DetectResult:
    """Detect change between ``before`` and ``after`` and write the requested outputs.

    Args:
        before, after: rasters GDAL reads; the after is put on the before's grid.
        model: checkpoint path (ours or the authors'); ignored when ``predictor`` is given.
        predictor: a stand-in for the model (see :class:`Predictor`); ``model_info``
            (a :class:`~engine.checkpoint.ModelInfo`) then gives defaults and scaling.
        out_vector: .shp/.gpkg/.fgb/.geojson polygons (id, area_m2, mean_prob, max_prob).
        out_probability: GeoTIFF of the change probability (uint8 p*254, nodata 255, or
            float32 with ``probability_dtype="float32"``, nodata -1).
        out_mask: GeoTIFF uint8 1 = change, 0 = none, 255 = nodata.
        out_review: GeoTIFF of HRMNet's hard-region (review) score on the probability's
            grid, blended and encoded like the probability. With it, or with ``out_vector``
            when the model gives the score, polygons get a ``review`` field (the mean
            score over the polygon's pixels).
        out_review_areas: polygons of the connected regions with a review score above
            ``review_threshold`` that touch no change pixel (see :mod:`engine.vector.review_areas`).
        review_threshold: 0..1 exclusive (default: the checkpoint's ``review_threshold``).
        bands_before, bands_after: 1-based band indices (1 or 3).
        tile_size, overlap: tile edge and overlap in pixels (defaults: checkpoint).
        batch_size: tiles per forward pass (default: :func:`default_batch_size`).
        read_threads: threads reading and normalising tiles (default: 1 on CPU, where
            the model needs the cores; half the cores, at most 8, on CUDA).
        device, precision: see :func:`engine.runtime.select_runtime`.
        threshold: change when probability > threshold (default: checkpoint).
        min_area: drop polygons smaller than this many m².
        simplify: topology-preserving simplification tolerance in metres (0 = none).
        extent: (xmin, ymin, xmax, ymax) in the before's CRS, or "xmin,ymin,xmax,ymax".
        overwrite: replace existing outputs.
        events: progress/log/cancel protocol; or give ``on_event`` (called with each
            event dict) and ``is_cancelled`` instead.

    Returns:
        :class:`DetectResult` with the final output paths and statistics.

    Raises:
        UserError: bad input or options (nothing is left behind).
        Cancelled: the cancel check returned True (nothing is left behind).
    """
    t_start = time.perf_counter()
    events = events or Events(on_event, is_cancelled)
    before, after = str(before), str(after)
    options, targets, review_threshold, model_info = _check_request(
        before, after, model, predictor, model_info, overwrite, review_threshold,
        {"vector": out_vector, "probability": out_probability, "mask": out_mask, "review": out_review,
         "review_areas": out_review_areas},
        dict(bands_before=bands_before, bands_after=bands_after, tile_size=tile_size, overlap=overlap,
             batch_size=batch_size, read_threads=read_threads, device=device, precision=precision,
             threshold=threshold, min_area=min_area, simplify=simplify, extent=extent,
             probability_dtype=probability_dtype))
    opening: list[dict] = []  # pairing logs wait until the model loaded: a model error stays one line
    pair = open_pair(before, after, options.bands_before, options.bands_after, options.extent, Events(opening.append))
    staged = _Staged()
    try:
        engine = _load_model(model, options, predictor, model_info, targets, events)
        if review_threshold is None:
            review_threshold = float(engine.model_info.review_threshold)
        _report_inputs(opening, engine, pair, model, predictor, model_info, events)
        plan = plan_area(pair, engine, options, events)
        _emit_start(before, after, pair, plan, engine, targets, events)
        staged.stage_rasters(targets, gives_review(engine.predictor))
        window_stats = _run_into_staged(pair, plan, engine, staged, before, after, events)
        _build_overviews(targets, staged)
        events.check_cancel()
        stats = _area_stats(pair, plan, window_stats)
        _vectorize(targets, staged, pair, plan, stats, events)
        events.check_cancel()
        _stage_review_areas(targets, staged, plan, review_threshold, pair.width, stats, events)
        events.check_cancel()
        final = staged.commit(targets, overwrite)
        return _result(final, stats, pair, plan, t_start, window_stats["seconds_tiles"], events)
    finally:
        pair.close()
        staged.remove()


# ----------------------------------------------------------------------------- detect's steps


def _check_request(before: str, after: str, model: Optional[str | os.PathLike], predictor: Optional[Predictor],
                   model_info: Any, overwrite: bool, review_threshold: Optional[float],
                   outputs: dict[str, Optional[str | os.PathLike]], option_values: dict[str, Any],
                   ) -> tuple[DetectOptions, dict[str, Path], Optional[float], Any]:
    """Every option and output checked before the model loads or a pixel is read.

    Returns (options, targets (role -> Path), review threshold or None, model info or None:
    read from the checkpoint only when an overlap without a tile size must be checked)."""
    options = validate_options(**option_values)
    if predictor is None:
        check_model_path(model)
    for role, path in (("before", before), ("after", after)):
        if not os.path.exists(path):
            raise UserError(f"{path}: {role} file not found")
    review_threshold = _review_threshold(review_threshold)
    targets = check_outputs(outputs, [before, after] + ([model] if model and predictor is None else []), overwrite)
    if options.overlap is not None and options.tile_size is None:  # the overlap must fit the model's tile
        if predictor is None:
            from .checkpoint import read_info

            model_info = read_info(model)
        resolve_tiling(options, model_info or _default_info())
    return options, targets, review_threshold, model_info


def _load_model(model: Optional[str | os.PathLike], options: DetectOptions, predictor: Optional[Predictor],
                model_info: Any, targets: dict[str, Path], events: Events) -> Engine:
    """Load the model (or wrap ``predictor``); log onnxruntime's providers; refuse review
    outputs from a model without a review score."""
    engine = load_engine(model, options, predictor, model_info)
    if "providers" in engine.device:  # onnxruntime: the execution providers, best first
        events.log(f"{model}: {engine.device.get('runtime')} with {', '.join(engine.device['providers'])}")
    if not gives_review(engine.predictor) and ("review" in targets or "review_areas" in targets):
        raise UserError(f"{model if predictor is None else 'predictor'}: gives no review (hard-region) score, "
                        "needed by --out-review and --out-review-areas")
    return engine


def _report_inputs(opening: list[dict], engine: Engine, pair: RasterPair, model: Optional[str | os.PathLike],
                   predictor: Optional[Predictor], model_info: Any, events: Events) -> None:
    """Replay the pairing's held-back events, then say what the model is and whether it fits."""
    for event in opening:
        events.emit(event.pop("event"), **event)
    if predictor is None or model_info is not None:
        model_fit.report(engine.model_info, pair, events, str(model) if predictor is None else "predictor")


def _emit_start(before: str, after: str, pair: RasterPair, plan: AreaPlan, engine: Engine, targets: dict[str, Path],
                events: Events) -> None:
    """The ``start`` event: the scene, the plan, the runtime and the outputs."""
    grid = plan.grid
    events.start(
        before=before,
        after=after,
        width=pair.width,
        height=pair.height,
        crs=pair.crs.to_string() if pair.crs else None,
        transform=list(pair.transform)[:6],
        tiles=len(grid),
        tile_size=plan.tile_size,
        tile_shape=list(grid.shape),
        overlap=plan.overlap,
        batch_size=min(plan.batch_size, len(grid)),
        read_threads=plan.read_threads,
        threshold=plan.threshold,
        device=engine.device.get("device"),
        precision=engine.device.get("precision"),
        **{k: engine.device[k] for k in ("runtime", "providers") if k in engine.device},
        radiometry={"before": plan.rad_before.describe(), "after": plan.rad_after.describe()},
        warped_after=pair.after.warped,
        outputs={k: str(v) for k, v in targets.items()},
    )


@dataclass
class _Staged:
    """detect's temporary outputs beside their targets; :meth:`remove` deletes what is left.

    ``prob``/``mask``/``review``: staged rasters (the vectors need mask and probability
    files even when not asked for); ``need_*``: whether each is written; ``vector`` and
    ``areas``: staged vector datasets until committed."""

    prob: Optional[Path] = None
    mask: Optional[Path] = None
    review: Optional[Path] = None
    need_prob: bool = False
    need_mask: bool = False
    need_review: bool = False
    temps: list = field(default_factory=list)
    vector: Optional[Path] = None
    areas: Optional[Path] = None

    def stage_rasters(self, targets: dict[str, Path], has_review: bool) -> None:
        """Name the temporary rasters and note which of them the outputs need."""
        anchor = next(iter(targets.values())).with_suffix(".tif")
        self.prob = temporary_path(targets.get("probability", anchor), "prob")
        self.mask = temporary_path(targets.get("mask", anchor), "mask")
        self.review = temporary_path(targets.get("review", anchor), "review")
        self.need_prob = "probability" in targets or "vector" in targets or "review_areas" in targets
        self.need_mask = "mask" in targets or "vector" in targets or "review_areas" in targets
        self.need_review = has_review and any(r in targets for r in ("review", "review_areas", "vector"))
        self.temps += [p for p, need in ((self.prob, self.need_prob), (self.mask, self.need_mask),
                                         (self.review, self.need_review)) if need]

    def commit(self, targets: dict[str, Path], overwrite: bool) -> dict[str, Path]:
        """All done: rename into place (see :func:`_commit`); role -> final path."""
        final = _commit(targets, self.prob, self.mask, self.vector, overwrite, review_tmp=self.review,
                        areas_tmp=self.areas)
        self.vector = self.areas = None
        return final

    def remove(self) -> None:
        """Delete the temporaries left (after an error or a cancel; the rasters' leftovers always)."""
        for p in self.temps:
            _remove(p)
        for vec in (self.vector, self.areas):
            if vec is not None:
                from .vector.io import remove_vector

                remove_vector(vec)
        _remove(None)  # this run's staging folders, also when it failed before making a temporary


def _run_into_staged(pair: RasterPair, plan: AreaPlan, engine: Engine, staged: _Staged, before: str, after: str,
                     events: Events) -> dict:
    """Run every tile into the staged rasters; warn of an all-nodata date. Returns
    :func:`engine.pipeline.run_window`'s statistics."""
    tags = {"software": "hrmnet-engine", "before": os.path.basename(before), "after": os.path.basename(after)}
    window_stats = run_window(pair, plan, engine, None, prob_path=staged.prob if staged.need_prob else None,
                              mask_path=staged.mask if staged.need_mask else None, events=events, tags=tags,
                              review_path=staged.review if staged.need_review else None)
    for warning in pair.nodata_warnings():  # an all-nodata date, from what the tiles read
        events.warn(warning)
    return window_stats


def _build_overviews(targets: dict[str, Path], staged: _Staged) -> None:
    """Overviews of the staged rasters the user asked for (averaged, the mask nearest)."""
    for role, path, resampling in (("probability", staged.prob, "average"), ("mask", staged.mask, "nearest"),
                                   ("review", staged.review, "average")):
        if role in targets:
            from rasterio.enums import Resampling

            from .raster.write import build_overviews

            build_overviews(path, Resampling[resampling])


def _area_stats(pair: RasterPair, plan: AreaPlan, window_stats: dict) -> dict[str, Any]:
    """The ``done`` event's statistics known once the rasters are written."""
    return {
        "pixels": pair.width * pair.height,
        "valid_pixels": window_stats["valid_pixels"],
        "changed_pixels": window_stats["changed_pixels"],
        "changed_area_m2": window_stats["changed_area_m2"],
        "tiles": len(plan.grid),
    }


def _vector_window_rows(width: int) -> int:
    """Rows the vector stages read at a time: about 4 MiB of a byte raster, 256 to 1024."""
    return max(256, min(1024, (4 << 20) // width))


def _vectorize(targets: dict[str, Path], staged: _Staged, pair: RasterPair, plan: AreaPlan, stats: dict,
               events: Events) -> None:
    """Polygonize the staged mask into a staged vector (when asked for); add its counts to ``stats``."""
    if "vector" not in targets:
        return
    from .vector.io import remove_vector
    from .vector.polygonize import polygonize_to_file

    staged.vector = temporary_path(targets["vector"], "vec")
    remove_vector(staged.vector)
    vstats = polygonize_to_file(staged.mask, staged.prob, staged.vector, min_area_m2=plan.min_area,
                                simplify_m=plan.simplify, events=events, window_rows=_vector_window_rows(pair.width),
                                review_path=staged.review if staged.need_review else None)
    stats["polygons"] = int(vstats.get("polygons", 0))
    if pair.crs is not None:  # without a CRS the polygons' areas are in pixels
        stats["changed_area_m2"] = round(float(vstats.get("area_m2", 0.0)), 3)


def _stage_review_areas(targets: dict[str, Path], staged: _Staged, plan: AreaPlan, threshold: float, width: int,
                        stats: dict, events: Events) -> None:
    """The "look here" areas into a staged vector (when asked for); their count into ``stats``."""
    if "review_areas" not in targets:
        return
    staged.areas, stats["review_areas"] = _review_areas(targets["review_areas"], staged.mask, staged.review,
                                                        staged.prob, threshold, plan.min_area, events, width)


def _result(final: dict[str, Path], stats: dict, pair: RasterPair, plan: AreaPlan, t_start: float, t_infer: float,
            events: Events) -> DetectResult:
    """Timing statistics, the ``done`` event and the :class:`DetectResult`."""
    grid = plan.grid
    seconds = time.perf_counter() - t_start
    stats.update(seconds=round(seconds, 3), tiles_per_s=round(len(grid) / max(t_infer, 1e-9), 3),
                 megapixels_per_s=round(pair.width * pair.height / 1e6 / max(seconds, 1e-9), 3))
    outputs = {"vector": None, "probability": None, "mask": None}  # review roles only when asked for
    outputs.update({k: str(v) for k, v in final.items()})
    events.done(outputs=outputs, stats=stats)
    return DetectResult(outputs=outputs, stats=stats,
                        info={"radiometry": {"before": plan.rad_before.describe(), "after": plan.rad_after.describe()},
                              "tile_shape": grid.shape, "batch_size": min(plan.batch_size, len(grid)),
                              **pair.describe()})


def _review_threshold(value) -> Optional[float]:
    """``--review-threshold``: None or a number strictly between 0 and 1."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--review-threshold {value}: expected a number") from None
    if not 0.0 < v < 1.0:
        raise UserError(f"--review-threshold {value}: must be between 0 and 1")
    return v


def _review_areas(target: Path, mask_tmp: Path, review_tmp: Path, prob_tmp: Path, threshold: float,
                  min_area: float, events: Events, width: int) -> tuple[Path, int]:
    """Write the "look here" areas to a temporary beside ``target``: (its path, area count)."""
    from .vector.io import remove_vector
    from .vector.review_areas import review_areas_to_file

    tmp = temporary_path(target, "areas")
    remove_vector(tmp)
    try:
        stats = review_areas_to_file(mask_tmp, review_tmp, tmp, threshold, prob_path=prob_tmp, min_area_m2=min_area,
                                     events=events, window_rows=_vector_window_rows(width))
    except BaseException:
        remove_vector(tmp)
        raise
    return tmp, int(stats["areas"])


def _default_info():
    from .checkpoint import ModelInfo

    return ModelInfo()


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


def _gdal_cache(pair: RasterPair, grid: TileGrid, writer: GeoTiffStripWriter):
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


def _commit(targets: dict[str, Path], prob_tmp: Path, mask_tmp: Path, vector_tmp: Optional[Path],
            overwrite: bool, review_tmp: Optional[Path] = None, areas_tmp: Optional[Path] = None) -> dict[str, Path]:
    """Rename the temporary outputs onto their targets in one locked step (vector first,
    each vector's main file last): no symlink is followed, and without ``overwrite`` a
    target that appeared during the run is refused (see :func:`engine.outputs.commit`).
    Ends this run's staging folders."""
    from .outputs import commit, release_run, staged_moves

    staged = {"vector": vector_tmp, "review_areas": areas_tmp, "probability": prob_tmp, "mask": mask_tmp,
              "review": review_tmp}
    roles = [r for r in staged if r in targets and staged[r] is not None]
    try:
        commit([m for r in roles for m in staged_moves(staged[r], targets[r])], overwrite)
    finally:
        release_run()
    return {r: targets[r] for r in roles}


def _crop(strip: Strip, window) -> Optional[Strip]:
    """The part of ``strip`` inside ``window`` (area pixels), in window coordinates."""
    r0, c0 = int(window.row_off), int(window.col_off)
    top, bottom = max(strip.row0, r0), min(strip.row0 + strip.prob.shape[0], r0 + int(window.height))
    if top >= bottom:
        return None
    rows = slice(top - strip.row0, bottom - strip.row0)
    cols = slice(c0 - strip.col0, c0 - strip.col0 + int(window.width))
    review = None if strip.review is None else strip.review[rows, cols]
    return Strip(row0=top - r0, prob=strip.prob[rows, cols], valid=strip.valid[rows, cols], review=review)


def _run_tiles(pair: RasterPair, grid: TileGrid, rad_b: Radiometry, rad_a: Radiometry, batch: int,
               predictor: Predictor, writer: GeoTiffStripWriter, events: Events, workers: int = 1,
               tiles: Optional[Sequence[Tile]] = None, blender: Optional[StripBlender] = None,
               window=None) -> Optional[float]:
    """Read (threads) -> predict (here) -> blend (here) -> write (thread). Returns the
    changed area in m² from the mask (None without a CRS).

    With ``window`` (area pixels) only ``tiles`` (those touching it) run, ``blender``
    covers their range, and the writer gets the window's pixels in window coordinates."""
    stop = threading.Event()
    inbox: "queue.Queue" = queue.Queue(maxsize=2)
    reader = threading.Thread(target=_reader, args=(pair, grid, rad_b, rad_a, batch, workers, inbox, stop, tiles),
                              name="detect-reader", daemon=True)
    crs = pair.crs if pair.georeferenced else None
    row_shift = 0 if window is None else int(window.row_off)
    out = _WriterThread(writer, lambda r0, n: row_pixel_areas_m2(pair.transform, crs, r0 + row_shift, n))
    blender = blender or StripBlender(grid)
    total, done = (len(grid) if tiles is None else len(tiles)), 0
    pipelined = hasattr(predictor, "submit") and hasattr(predictor, "result")

    def blend(item: _Batch, output) -> None:
        nonlocal done
        probs, reviews = split_output(output)
        for k, (tile, prob, valid) in enumerate(zip(item.tiles, probs, item.valid)):
            for strip in blender.add(tile, prob, valid, None if reviews is None else reviews[k]):
                strip = strip if window is None else _crop(strip, window)
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
            if isinstance(item, _Failure):
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
