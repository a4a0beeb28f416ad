"""One sheet job: the global tiles touching the sheet (a halo read through the mosaic),
the sheet's own pixels written to ``sheets/<id>/``, its polygons split into final ones and
border pieces for the merge.

Files of a finished sheet folder (built in a private staging folder of
:mod:`engine.outputs` beside it, ``sheets/.hrmnet-tmp-*``, and renamed)::

    prob.tif, mask.tif   the sheet's own pixels (GeoTIFF, as detect writes them)
    review.tif           the review (hard-region) score, when the model gives one; then
                         final.fgb has ``review`` and border.fgb review_sum, review_count
    final.fgb            polygons not touching the sheet's edge: georeferenced, min-area
                         and simplify applied; first_row/first_col (global pixels); sorted
                         by them, no spatial index (the merge streams them in that order)
    border.fgb           polygons touching it: raw, in global pixel coordinates, with
                         piece (their number), pixels, prob_sum, prob_count, prob_max,
                         first_row/first_col
    edges.npz            the changed pixels on the sheet's edge: piece (row of border.fgb),
                         row, col (global pixels)
    done.json            written last: settings hash, inputs, statistics, and ``files``:
                         each result file's size and SHA-256 (:func:`verify_sheet`)
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..checksum import file_sha256
from ..errors import Cancelled, UserError
from ..events import Events
from ..outputs import Staging, disk_full, staged_folder
from .execute import worker_cached
from .mosaic import blame_sheet
from .plan import RunContext, SheetJob, fingerprint

__all__ = ["run_sheet", "done_record", "verify_sheet", "result_files", "area_grid", "finalize", "ModelLoadError",
           "StopRun", "DiskFull", "tile_events", "RESULT_NAMES"]

DONE = "done.json"
#: Every file a sheet job may write in its folder (``--restart`` removes these and no other).
RESULT_NAMES = ("prob.tif", "mask.tif", "review.tif", "final.fgb", "border.fgb", "edges.npz", DONE)
STRIP_ROWS = 512

_HERE = threading.local()  # .events: where sheets computed in this thread report their tiles


@contextlib.contextmanager
def tile_events(events: Events) -> Iterator[None]:
    """Sheets computed in this thread meanwhile (an in-process run) report to ``events``:
    ``progress`` with stage "detect" (tiles of the sheet done, its tiles) after each batch,
    and they check its cancel between batches. Sheets on Dask workers (other processes or
    threads) report nothing until they end."""
    _HERE.events = events
    try:
        yield
    finally:
        _HERE.events = None


def done_record(folder: Path, digest: str) -> Optional[dict]:
    """The sheet folder's done-record when it belongs to the run with settings ``digest``."""
    try:
        record = json.loads((folder / DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if record.get("hash") == digest else None


def result_files(folder: Path) -> dict:
    """``{name: {"bytes": size, "sha256": hex}}`` of the result files in a sheet folder
    (all but the done-record), for the done-record."""
    return {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(Path(folder).iterdir()) if p.name != DONE and p.is_file()}



def verify_sheet(folder: Path, record: dict) -> Optional[str]:
    """What is wrong with a finished sheet's result files (missing, another size or
    content than its done-record says), or None when every one is as written."""
    files = record.get("files")
    if not isinstance(files, dict) or not files:
        return f"{Path(folder) / DONE}: lists no result files (written by an older version)"
    for name, want in sorted(files.items()):
        path = Path(folder) / name
        try:
            size = path.stat().st_size
            if size != want.get("bytes"):
                return f"{path}: {size} bytes, {want.get('bytes')} when the sheet finished (truncated or replaced)"
            if file_sha256(path) != want.get("sha256"):
                return f"{path}: damaged (its content changed since the sheet finished)"
        except FileNotFoundError:
            return f"{path}: missing"
        except (OSError, AttributeError) as exc:
            return f"{path}: unreadable ({getattr(exc, 'strerror', None) or exc})"
    return None


class StopRun(UserError):
    """Every sheet would fail the same way: the run stops at the first (one line, exit 2)
    instead of failing each sheet."""


class ModelLoadError(StopRun):
    """The model could not be loaded in a worker."""


class DiskFull(StopRun):
    """The run folder's disk is full (the sheet's staging folder is removed)."""


def area_grid(ctx: RunContext):
    """The :class:`~engine.vector.measure.MapGrid` of the whole processed area."""
    from affine import Affine
    from rasterio.crs import CRS

    from ..vector.measure import MapGrid

    width, height, t, wkt = ctx.area
    return MapGrid(Affine(*t), CRS.from_user_input(wkt) if wkt else None, width, height)


def finalize(grid, pixel_geoms: np.ndarray, min_area: float, simplify: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel polygons of the area -> (kept mask, map polygons, area m²): min-area on the raw
    polygon, then simplify, then orientation; as :class:`~engine.vector.stream.Polygonizer`."""
    from ..vector.measure import canonical
    from ..vector.stream import orient_rings

    geoms = grid.to_map(pixel_geoms) if len(pixel_geoms) else pixel_geoms
    keep = np.ones(len(geoms), dtype=bool)
    if min_area > 0 and len(geoms):
        keep = grid.areas_m2(geoms) >= min_area
        geoms = geoms[keep]
    if simplify > 0 and len(geoms):
        geoms = grid.simplify(canonical(geoms), simplify)
    if len(geoms):
        geoms = orient_rings(geoms)
    areas = grid.areas_m2(geoms) if len(geoms) else np.zeros(0)
    return keep, geoms, areas


def run_sheet(job: SheetJob) -> dict:
    """Compute one sheet (skipped when its folder is already done); returns a small record
    ``{"id", "status": "done"|"failed", "seconds", "polygons", "message", ...}``.

    A failure of this sheet (unreadable pixels, disk full, ...) is returned, not raised:
    it fails alone. A cancel (Ctrl-C) is raised and leaves no temporary folder.
    """
    ctx = job.context
    t0 = time.perf_counter()
    sheets = Path(ctx.run) / "sheets"
    final = sheets / job.name
    record = done_record(final, ctx.hash)
    if record is not None and verify_sheet(final, record) is None:  # a retried job that did finish
        return {**record, "reused": True}
    try:
        keep = _foreign(final)
        with (Staging(sheets) if keep else staged_folder(final, overwrite=True)) as staged:  # private, exclusive
            tmp = staged.dir if keep else staged
            inputs = [fingerprint(p) for p in job.inputs]
            stats = _compute(job, tmp)
            record = {"id": job.id, "status": "done", "hash": ctx.hash, "window": list(job.window),
                      "seconds": round(time.perf_counter() - t0, 3), "message": "", **stats, **_process(),
                      "inputs": inputs, "files": result_files(tmp)}
            (tmp / DONE).write_text(json.dumps(record, indent=1), encoding="utf-8")
            if keep:
                _move_results(tmp, final)
        return record  # renamed onto sheets/<id> (a folder there without a valid done-record is replaced)
    except (Cancelled, KeyboardInterrupt, StopRun):
        raise
    except Exception as exc:  # this sheet fails alone
        if disk_full(exc, sheets):
            raise DiskFull(f"{ctx.run}: no space left on device") from None
        exc = blame_sheet(exc, ctx.before_vrt, ctx.after_vrt)
        return {"id": job.id, "status": "failed", "seconds": round(time.perf_counter() - t0, 3), "polygons": 0,
                "message": _one_line(exc)}


def _foreign(folder: Path) -> bool:
    """Whether a sheet folder holds something the run did not write (a user's note): then
    the results are moved in file by file and that stays, instead of replacing the folder."""
    if not folder.is_dir() or folder.is_symlink():
        return False
    return any(p.name not in RESULT_NAMES for p in folder.iterdir())


def _move_results(tmp: Path, final: Path) -> None:
    """Move the staged results into the existing folder ``final``: its done-record first
    removed, stale results removed, the new done-record moved last (complete or not done)."""
    (final / DONE).unlink(missing_ok=True)
    for name in RESULT_NAMES:
        if name != DONE and not (tmp / name).exists():
            (final / name).unlink(missing_ok=True)
    for name in RESULT_NAMES:
        if name != DONE and (tmp / name).exists():
            os.replace(tmp / name, final / name)  # never follows a link at the target
    os.replace(tmp / DONE, final / DONE)


def _process() -> dict:
    """The worker process and its peak resident memory so far (MiB; benchmarks read it)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except (ImportError, OSError):  # pragma: no cover - Windows
        peak = None
    return {"pid": os.getpid(), "peak_rss_mib": None if peak is None else round(peak, 1)}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return first if isinstance(exc, UserError) else f"{type(exc).__name__}: {first}"


def _engine(ctx: RunContext):
    from ..core.predictors import load_engine

    key = ("engine", ctx.model, ctx.options.device, ctx.options.precision,
           None if ctx.predictor is None else ctx.hash)
    def load():
        try:
            return load_engine(ctx.model, ctx.options, ctx.predictor, ctx.model_info)
        except UserError as exc:
            raise ModelLoadError(str(exc)) from None

    return worker_cached(key, load)


def _pair(ctx: RunContext):
    from ..raster.pair import open_pair

    def make():
        pair = open_pair(ctx.before_vrt, ctx.after_vrt, ctx.options.bands_before, ctx.options.bands_after,
                         ctx.options.extent)
        if (pair.width, pair.height) != tuple(ctx.area[:2]):
            pair.close()
            raise UserError(f"{ctx.before_vrt}: the mosaics changed since the run was planned")
        return pair

    return worker_cached(("pair", ctx.hash, ctx.before_vrt, ctx.after_vrt), make)


def _compute(job: SheetJob, tmp: Path) -> dict:
    from rasterio.windows import Window

    from ..core.runner import run_window

    from ..core.predictors import gives_review

    ctx = job.context
    engine, pair = _engine(ctx), _pair(ctx)
    window = Window(*job.window)
    review = tmp / "review.tif" if gives_review(engine.predictor) else None  # the hard-region score: polygons' review
    stats = run_window(pair, ctx.plan, engine, window, prob_path=tmp / "prob.tif", mask_path=tmp / "mask.tif",
                       tags={"software": "hrmnet-engine", "sheet": job.id}, review_path=review,
                       events=getattr(_HERE, "events", None))
    stats.update(_polygonize(job, tmp))
    stats.pop("seconds_tiles", None)
    return stats


def _components(tmp: Path, width: int, height: int) -> list:
    """The sheet's change components in sheet pixel coordinates (from its mask/prob files)."""
    import rasterio
    from rasterio.windows import Window

    from ..vector.stream import decode_mask, decode_prob
    from ..vector.strips import StripMerger

    merger = StripMerger(width)
    comps: list = []
    has_review = (tmp / "review.tif").exists()
    with rasterio.open(tmp / "mask.tif") as m, rasterio.open(tmp / "prob.tif") as p, \
            (rasterio.open(tmp / "review.tif") if has_review else contextlib.nullcontext()) as r:
        for r0 in range(0, height, STRIP_ROWS):
            win = Window(0, r0, width, min(STRIP_ROWS, height - r0))
            mask = decode_mask(m.read(1, window=win), m.nodata)
            prob = decode_prob(p.read(1, window=win), p.nodata)
            review = decode_prob(r.read(1, window=win), r.nodata) if has_review else None
            comps.extend(merger.feed(mask, prob, r0, last=r0 + STRIP_ROWS >= height, review=review))
    comps.extend(merger.finish())
    return comps


def _polygonize(job: SheetJob, tmp: Path) -> dict:
    """Write final.fgb, border.fgb and edges.npz; returns counts."""
    import shapely

    c0, r0, w, h = job.window
    comps = _components(tmp, w, h)
    shift = np.array([c0, r0], dtype=np.float64)
    geoms = np.array([c.geometry for c in comps], dtype=object)
    if len(geoms):
        geoms = shapely.transform(geoms, lambda xy: xy + shift)
    first_row = np.array([c.first // w + r0 for c in comps], dtype=np.int64)
    first_col = np.array([c.first % w + c0 for c in comps], dtype=np.int64)
    b = shapely.bounds(geoms) if len(geoms) else np.zeros((0, 4))
    border = (b[:, 0] <= c0) | (b[:, 1] <= r0) | (b[:, 2] >= c0 + w) | (b[:, 3] >= r0 + h)
    ctx = job.context
    n_final = _write_final(tmp, ctx, [c for c, k in zip(comps, border) if not k], geoms[~border],
                           first_row[~border], first_col[~border])
    _write_border(tmp, [c for c, k in zip(comps, border) if k], geoms[border], first_row[border], first_col[border],
                  job.window)
    return {"final_polygons": n_final, "border_pieces": int(border.sum())}


def _write_final(tmp: Path, ctx: RunContext, comps: list, pixel_geoms, first_row, first_col) -> int:
    import geopandas as gpd
    import pyogrio

    grid = area_grid(ctx)
    keep, geoms, areas = finalize(grid, pixel_geoms, ctx.plan.min_area, ctx.plan.simplify)
    kept = [c for c, k in zip(comps, keep) if k]
    if not kept:
        return 0
    data = {"first_row": first_row[keep], "first_col": first_col[keep], "area_m2": areas.astype(np.float64),
            "mean_prob": np.array([c.mean_prob for c in kept]), "max_prob": np.array([c.prob_max for c in kept])}
    if (tmp / "review.tif").exists():
        data["review"] = np.array([c.review for c in kept], dtype=np.float64)
    frame = gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms, crs=grid.crs_string), crs=grid.crs_string)
    frame = frame.sort_values(["first_row", "first_col"], kind="stable")  # the merge streams it in this order
    pyogrio.write_dataframe(frame, tmp / "final.fgb", driver="FlatGeobuf", geometry_type="Polygon",
                            layer_options={"SPATIAL_INDEX": "NO"})  # an index would reorder the features
    return len(kept)


def _write_border(tmp: Path, comps: list, geoms, first_row, first_col, window: tuple) -> None:
    import geopandas as gpd
    import pyogrio
    import shapely

    if not comps:
        return
    data = {"piece": np.arange(len(comps), dtype=np.int64), "first_row": first_row, "first_col": first_col,
            "pixels": np.array([c.pixels for c in comps], dtype=np.int64),
            "prob_sum": np.array([c.prob_sum for c in comps], dtype=np.float64),
            "prob_count": np.array([c.prob_count for c in comps], dtype=np.int64),
            "prob_max": np.array([c.prob_max for c in comps], dtype=np.float64)}
    if (tmp / "review.tif").exists():  # the review score's sums merge exactly across sheets
        data["review_sum"] = np.array([c.review_sum for c in comps], dtype=np.float64)
        data["review_count"] = np.array([c.review_count for c in comps], dtype=np.int64)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")
        pyogrio.write_dataframe(gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms)), tmp / "border.fgb",
                                driver="FlatGeobuf", geometry_type="Polygon", layer_options={"SPATIAL_INDEX": "NO"})
    # the changed pixels on the sheet's edge, and the piece each belongs to
    c0, r0, w, h = window
    rows, cols = _edge_pixels(tmp / "mask.tif", w, h)
    points = shapely.points(cols + c0 + 0.5, rows + r0 + 0.5)
    tree = shapely.STRtree(geoms)
    pt, piece = tree.query(points, predicate="within")
    np.savez(tmp / "edges.npz", piece=piece.astype(np.int64), row=(rows[pt] + r0).astype(np.int64),
             col=(cols[pt] + c0).astype(np.int64))


def _edge_pixels(mask_path: Path, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the changed pixels on the raster's outer rows and columns (read
    alone: the sheet's mask is never held whole)."""
    import rasterio
    from rasterio.windows import Window

    found = set()
    with rasterio.open(mask_path) as m:
        for win in (Window(0, 0, w, 1), Window(0, h - 1, w, 1), Window(0, 0, 1, h), Window(w - 1, 0, 1, h)):
            rr, cc = np.nonzero(m.read(1, window=win) == 1)
            found.update(zip((rr + int(win.row_off)).tolist(), (cc + int(win.col_off)).tolist()))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, cols = np.array(sorted(found), dtype=np.int64).T
    return rows, cols
