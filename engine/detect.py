"""One scene: two rasters in, change probability, mask, review and polygons out.

The single-scene front end of the detection core (:mod:`engine.core`)::

    check the request (options, inputs, outputs)     core.options, scene_outputs
    open the pair, load the model, plan the area     raster.pair, core.predictors, core.plan
    run the core over the whole area                 core.runner: read -> tile -> infer -> blend -> write
    vectorize the written mask                       vector.polygonize, vector.review_areas
    commit                                           scene_outputs (renamed into place in one locked step)

Everything is written to hidden temporary files beside the targets and renamed only
when all stages succeeded; an error or a cancel removes them.

Call :func:`detect` from Python with an :class:`~engine.events.Events` (progress
callback and cancel check), and a :class:`~engine.core.predictors.Predictor` when a
stand-in model is wanted.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import model_fit
from .core.options import DetectOptions, parse_review_threshold, validate_options
from .core.plan import AreaPlan, plan_area, resolve_tiling
from .core.predictors import Engine, Predictor, check_model_path, gives_review, load_engine
from .core.runner import run_window
from .errors import UserError
from .events import Events
from .raster.pair import RasterPair, open_pair
from .raster.write import temporary_path
from .scene_outputs import Staged, build_overviews, check_outputs

__all__ = ["DetectResult", "detect"]


@dataclass
class DetectResult:
    """What :func:`detect` produced: ``outputs`` (role -> final path) and ``stats``."""

    outputs: dict
    stats: dict
    info: dict = field(default_factory=dict)


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
        predictor: a stand-in for the model (see :class:`~engine.core.predictors.Predictor`); ``model_info``
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
        batch_size: tiles per forward pass (default: :func:`engine.core.plan.default_batch_size`).
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
    staged = Staged()
    try:
        engine = _load_model(model, options, predictor, model_info, targets, events)
        if review_threshold is None:
            review_threshold = float(engine.model_info.review_threshold)
        _report_inputs(opening, engine, pair, model, predictor, model_info, events)
        plan = plan_area(pair, engine, options, events)
        _emit_start(before, after, pair, plan, engine, targets, events)
        staged.stage_rasters(targets, gives_review(engine.predictor))
        window_stats = _run_into_staged(pair, plan, engine, staged, before, after, events)
        build_overviews(targets, staged)
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
    review_threshold = parse_review_threshold(review_threshold)
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


def _run_into_staged(pair: RasterPair, plan: AreaPlan, engine: Engine, staged: Staged, before: str, after: str,
                     events: Events) -> dict:
    """Run every tile into the staged rasters; warn of an all-nodata date. Returns
    :func:`engine.core.runner.run_window`'s statistics."""
    tags = {"software": "hrmnet-engine", "before": os.path.basename(before), "after": os.path.basename(after)}
    window_stats = run_window(pair, plan, engine, None, prob_path=staged.prob if staged.need_prob else None,
                              mask_path=staged.mask if staged.need_mask else None, events=events, tags=tags,
                              review_path=staged.review if staged.need_review else None)
    for warning in pair.nodata_warnings():  # an all-nodata date, from what the tiles read
        events.warn(warning)
    return window_stats


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


def _vectorize(targets: dict[str, Path], staged: Staged, pair: RasterPair, plan: AreaPlan, stats: dict,
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


def _stage_review_areas(targets: dict[str, Path], staged: Staged, plan: AreaPlan, threshold: float, width: int,
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


