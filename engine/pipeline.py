"""The detection core shared by one scene (:func:`engine.detect.detect`) and map sheets
(:mod:`engine.sheets`).

Three steps, each callable alone::

    options = validate_options(...)            # every option mistake, before anything is read
    engine = load_engine(model, options)       # model + runtime, once per process
    plan = plan_area(pair, engine, options)    # tile grid + radiometry of the whole area
    stats = run_window(plan, engine, window, prob_path, mask_path)   # any window of it

:func:`run_window` runs exactly the tiles of ``plan.grid`` that touch ``window``, reads
their pixels (the neighbours' too: a halo) through the pair, blends them with the whole
grid's weights and writes only the window's pixels: the result equals the same window of
a run over the whole area.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from .errors import UserError
from .events import Events

__all__ = ["DetectOptions", "validate_options", "Engine", "load_engine", "AreaPlan", "plan_area", "run_window",
           "PROBABILITY_DTYPES"]

PROBABILITY_DTYPES = ("uint8", "float32")
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DetectOptions:
    """Detection options, checked (see :func:`validate_options`); None = the model's default.

    Attributes:
        bands_before, bands_after: 1-based band indices (1 or 3), or None.
        tile_size, overlap: pixels. batch_size: tiles per forward pass. read_threads: readers.
        device, precision: as :func:`engine.runtime.select_runtime` takes them.
        threshold: change when probability > threshold (0..1 exclusive).
        min_area: m² (>= 0). simplify: metres (>= 0).
        extent: (xmin, ymin, xmax, ymax) in the before's CRS, or None.
        probability_dtype: ``uint8`` or ``float32``.
    """

    bands_before: Optional[tuple] = None
    bands_after: Optional[tuple] = None
    tile_size: Optional[int] = None
    overlap: Optional[int] = None
    batch_size: Optional[int] = None
    read_threads: Optional[int] = None
    device: str = "auto"
    precision: str = "auto"
    threshold: Optional[float] = None
    min_area: float = 0.0
    simplify: float = 0.0
    extent: Optional[tuple] = None
    probability_dtype: str = "uint8"

    def as_dict(self) -> dict:
        """Plain JSON-able values (for a run folder's settings)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _number(value: Any, option: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{option} {value}: expected a number") from None
    if not math.isfinite(v):
        raise UserError(f"{option} {value}: must be a finite number")
    return v


def _integer(value: Any, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str, float)):
        raise UserError(f"{option} {value}: expected a whole number")
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{option} {value}: expected a whole number") from None
    if isinstance(value, float) and v != value:
        raise UserError(f"{option} {value}: expected a whole number")
    return v


def _bands(value: Optional[Sequence[int]], option: str) -> Optional[tuple]:
    if value is None or (not isinstance(value, str) and len(value) == 0):
        return None
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    bands = tuple(_integer(b, option) for b in value)
    if len(bands) not in (1, 3) or any(b < 1 for b in bands):
        raise UserError(f"{option} {','.join(map(str, bands))}: give 1 or 3 band numbers (1-based)")
    return bands


def _device(device: Optional[str]) -> str:
    """auto, cpu, cuda[:N]; with an ONNX model also tensorrt[:N], directml[:N] (checked
    against the model type when it loads)."""
    d = (device or "auto").strip().lower()
    kind, _, index = d.partition(":")
    ok = d in ("auto", "cpu") or (kind in ("cuda", "tensorrt", "directml", "dml") and (not index or index.isdigit()))
    if not ok:
        raise UserError(f"--device {device}: expected auto, cpu, cuda or cuda:N "
                        "(with an ONNX model also tensorrt[:N] or directml[:N])")
    return d


def validate_options(*, bands_before=None, bands_after=None, tile_size=None, overlap=None, batch_size=None,
                     read_threads=None, device: str = "auto", precision: str = "auto", threshold=None,
                     min_area=0.0, simplify=0.0, extent=None, probability_dtype: str = "uint8") -> DetectOptions:
    """Check every detection option (no file access, no model, no torch) and return them.

    Raises:
        UserError: the first bad option, named as on the command line.
    """
    from .raster.tiles import MULTIPLE, check_tiling

    if probability_dtype not in PROBABILITY_DTYPES:
        raise UserError(f"--probability-dtype {probability_dtype}: expected uint8 or float32")
    min_area = _number(min_area, "--min-area")
    if min_area < 0:
        raise UserError(f"--min-area {min_area:g}: must be 0 or more (m²)")
    simplify = _number(simplify, "--simplify")
    if simplify < 0:
        raise UserError(f"--simplify {simplify:g}: must be 0 or more (metres)")
    if threshold is not None:
        threshold = _number(threshold, "--threshold")
        if not 0.0 < threshold < 1.0:
            raise UserError(f"--threshold {threshold:g}: must be between 0 and 1")
    if batch_size is not None:
        batch_size = _integer(batch_size, "--batch-size")
        if batch_size < 1:
            raise UserError(f"--batch-size {batch_size}: must be at least 1")
    if read_threads is not None:
        read_threads = _integer(read_threads, "--read-threads")
        if not 1 <= read_threads <= 64:
            raise UserError(f"--read-threads {read_threads}: must be between 1 and 64")
    if tile_size is not None:
        tile_size = _integer(tile_size, "--tile-size")
        if tile_size <= 0 or tile_size % MULTIPLE:
            raise UserError(f"--tile-size {tile_size}: must be a positive multiple of {MULTIPLE}")
    if overlap is not None:
        overlap = _integer(overlap, "--overlap")
        if overlap < 0:
            raise UserError(f"--overlap {overlap}: must be at least 0")
    if tile_size is not None and overlap is not None:
        check_tiling(tile_size, overlap)
    precision = (precision or "auto").strip().lower()
    if precision not in _PRECISIONS:
        raise UserError(f"--precision {precision}: expected one of {', '.join(_PRECISIONS)}")
    from .detect import _parse_extent

    return DetectOptions(bands_before=_bands(bands_before, "--bands-before"),
                         bands_after=_bands(bands_after, "--bands-after"), tile_size=tile_size, overlap=overlap,
                         batch_size=batch_size, read_threads=read_threads, device=_device(device),
                         precision=precision, threshold=threshold, min_area=min_area, simplify=simplify,
                         extent=_parse_extent(extent), probability_dtype=probability_dtype)


@dataclass
class Engine:
    """A loaded model (or stand-in) and what it says about itself.

    Attributes:
        predictor: see :class:`engine.detect.Predictor`.
        model_info: the checkpoint's :class:`~engine.checkpoint.ModelInfo`.
        device: ``predictor.describe()`` (at least ``device`` and ``precision``).
    """

    predictor: Any
    model_info: Any
    device: dict = field(default_factory=dict)

    @property
    def device_type(self) -> str:
        return "cuda" if str(self.device.get("device", "")).startswith("cuda") else "cpu"


def check_model_path(model: Optional[str | os.PathLike]) -> None:
    """Raise :class:`UserError` when no model is given or the file is missing (cheap, no load)."""
    if model is None:
        raise UserError("detect: --model is required")
    if not os.path.exists(model):
        raise UserError(f"{model}: model file not found")


def load_engine(model: Optional[str | os.PathLike], options: DetectOptions, predictor=None,
                model_info=None) -> Engine:
    """Load the checkpoint on the chosen device (or wrap a stand-in ``predictor``).

    Raises:
        UserError: no model, unreadable checkpoint, CUDA asked for but absent.
    """
    if predictor is None:
        check_model_path(model)
        from .onnx_predictor import is_onnx, load_onnx

        if is_onnx(model):  # onnxruntime, no torch
            predictor, model_info = load_onnx(model, options.device, options.precision, review=True)
            return Engine(predictor, model_info, predictor.describe())
        from .checkpoint import load_model
        from .detect import ModelPredictor
        from .runtime import select_runtime

        runtime = select_runtime(options.device, options.precision)
        net, model_info = load_model(model)
        predictor = ModelPredictor(net, runtime, review=True)  # the hard-region score costs one more copy
        return Engine(predictor, model_info, runtime.describe())
    if model_info is None:
        from .checkpoint import ModelInfo

        model_info = ModelInfo()
    dev = predictor.describe() if hasattr(predictor, "describe") else {"device": "custom", "precision": "?"}
    return Engine(predictor, model_info, dev)


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
    from .raster.tiles import check_tiling

    tile_size = int(options.tile_size if options.tile_size is not None else model_info.tile_size)
    overlap = options.overlap
    if overlap is None:
        overlap = int(model_info.overlap)
        if 2 * overlap >= tile_size:
            overlap = tile_size // 4  # the checkpoint's overlap does not fit a smaller --tile-size
    check_tiling(tile_size, overlap)
    threshold = float(options.threshold if options.threshold is not None else model_info.threshold)
    return tile_size, int(overlap), threshold


def plan_area(pair, engine: Engine, options: DetectOptions, events: Optional[Events] = None) -> AreaPlan:
    """The global tile grid and the radiometry of the whole processed area of ``pair``."""
    from .detect import _radiometry, default_batch_size
    from .raster.tiles import make_grid

    events = events or Events()
    tile_size, overlap, threshold = resolve_tiling(options, engine.model_info)
    rad_b, rad_a = _radiometry(pair, engine.model_info.scaling, events)
    grid = make_grid(pair.width, pair.height, tile_size, overlap)
    dev_type = engine.device_type
    batch = int(options.batch_size or default_batch_size(dev_type, grid.shape))
    workers = int(options.read_threads or (min(8, max(1, (os.cpu_count() or 2) // 2)) if dev_type == "cuda" else 1))
    return AreaPlan(grid, rad_b, rad_a, tile_size, overlap, threshold, batch, workers, options.min_area,
                    options.simplify, options.probability_dtype)


def run_window(pair, plan: AreaPlan, engine: Engine, window=None, *, prob_path=None, mask_path=None,
               events: Optional[Events] = None, tags: Optional[dict] = None, review_path=None) -> dict:
    """Run the tiles of ``plan.grid`` touching ``window`` and write the window's pixels.

    Args:
        pair: the :class:`~engine.raster.pair.RasterPair` the plan was made on.
        window: a :class:`rasterio.windows.Window` of the area (None: all of it).
        prob_path, mask_path: GeoTIFFs to write (window-sized, georeferenced), either may be None.
        review_path: GeoTIFF of the hard-region score blended like the probability, or None
            (the predictor must give one: see :func:`engine.detect.gives_review`).
        events: progress (``stage="detect"``, one step a batch) and cancel checks.
        tags: GeoTIFF metadata.

    Returns:
        ``{"tiles", "pixels", "valid_pixels", "changed_pixels", "changed_area_m2", "seconds_tiles"}``.
    """
    import time

    from affine import Affine
    from rasterio.windows import Window

    from .detect import _gdal_cache, _run_tiles
    from .raster.blend import StripBlender
    from .raster.write import GeoTiffStripWriter

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
        with _gdal_cache(pair, grid, writer):
            area = _run_tiles(pair, grid, plan.rad_before, plan.rad_after, min(plan.batch_size, len(tiles)),
                              engine.predictor, writer, events, plan.read_threads, tiles=tiles, blender=blender,
                              window=window)
        seconds = time.perf_counter() - t0
    finally:
        writer.close(overviews=False)
    return {"tiles": len(tiles), "pixels": width * height, "valid_pixels": writer.valid_pixels,
            "changed_pixels": writer.changed_pixels, "changed_area_m2": None if area is None else round(area, 3),
            "seconds_tiles": seconds}
