"""Plan a sheets run once: the mosaic of each date, one global tile grid, the radiometry
of the whole area, each sheet's window, and the settings hash of the run.

Everything a sheet job needs travels in a small picklable :class:`SheetJob` (its
:class:`RunContext` is shared by all jobs), so the job runs the same in this process, on
a Dask worker or in a ``--shard`` process.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import Cancelled, UserError
from ..events import Events
from ..core.options import DetectOptions
from ..core.plan import AreaPlan, plan_area
from ..core.predictors import Engine
from .mosaic import SheetRaster, agreeing, blame_sheet, probe_rasters, write_mosaic

__all__ = ["RunContext", "SheetJob", "Plan", "make_plan", "folder_name"]

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")


def folder_name(sheet_id: str) -> str:
    """The sheet's folder name under ``sheets/``: the id when it is plain, else a safe
    spelling plus a short hash (so two ids never share a folder)."""
    if _SAFE.match(sheet_id):
        return sheet_id
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", sheet_id)[:60].lstrip(".") or "sheet"
    digest = hashlib.sha1(sheet_id.encode("utf-8"), usedforsecurity=False).hexdigest()[:8]  # a name, not security
    return f"{plain}-{digest}"


@dataclass
class RunContext:
    """What every sheet job of a run shares (picklable).

    Attributes:
        run: the run folder (absolute).
        before_vrt, after_vrt: the mosaics.
        options: the checked detection options.
        model: checkpoint path, or None with a stand-in ``predictor``.
        predictor, model_info: a picklable stand-in model and its metadata (tests, benchmarks).
        plan: grid, radiometry and resolved settings of the whole area.
        area: (width, height, transform a..f, CRS WKT or None) of the processed area.
        hash: the run's settings hash.
    """

    run: str
    before_vrt: str
    after_vrt: str
    options: DetectOptions
    model: Optional[str]
    predictor: Any
    model_info: Any
    plan: AreaPlan
    area: tuple
    hash: str


@dataclass
class SheetJob:
    """One sheet to compute: its id, folder name, window (col, row, width, height) in the
    processed area's pixels and its (before, after) rasters."""

    context: RunContext
    id: str
    name: str
    window: tuple
    inputs: tuple = ()

    def __repr__(self) -> str:  # Dask shows jobs in its logs
        return f"SheetJob({self.id!r})"


@dataclass
class Plan:
    """A planned run: the jobs (sheet list order), and the sheets left out, with why."""

    context: RunContext
    jobs: list
    failed: dict = field(default_factory=dict)  # id -> message (unreadable raster)
    skipped: dict = field(default_factory=dict)  # id -> message (no partner, outside the area)
    extents: dict = field(default_factory=dict)  # id -> (xmin, ymin, xmax, ymax) in the area CRS or None
    settings: dict = field(default_factory=dict)


def fingerprint(path: Optional[str]) -> Optional[dict]:
    """Path, size and modification time of a file (None for None)."""
    if path is None:
        return None
    st = os.stat(path)
    return {"path": os.path.abspath(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stand_in(predictor) -> Optional[str]:
    if predictor is None:
        return None
    return f"{type(predictor).__module__}.{type(predictor).__qualname__}{sorted(vars(predictor).items())!r}"


def _model_info(model: Optional[str], predictor, model_info):
    if predictor is not None:
        if model_info is None:
            from ..checkpoint import ModelInfo

            model_info = ModelInfo()
        return model_info
    from ..checkpoint import read_info

    return read_info(model)


def _device_type(options: DetectOptions, predictor) -> str:
    if predictor is not None:
        return "cpu"
    if options.device.startswith("cuda"):
        return "cuda"
    if options.device == "auto":
        from .execute import local_gpus

        return "cuda" if local_gpus() else "cpu"
    return "cpu"


def _naming_sheets(events: Events, mosaics: dict[str, list[str]]) -> Events:
    """``events`` whose messages name the sheet rasters instead of the mosaic VRT holding them
    (``run/mosaic/before-1a2b.vrt`` -> ``the before sheets (r0c0.tif, …)``)."""

    def sink(event: dict) -> None:
        fields = dict(event)
        if isinstance(fields.get("message"), str):
            for vrt, paths in mosaics.items():
                date = Path(vrt).name.split("-")[0]
                text = paths[0] if len(paths) == 1 else f"the {date} sheets ({paths[0]}, …)"
                fields["message"] = fields["message"].replace(vrt, text)
        events.emit(fields.pop("event"), **fields)

    def cancelled() -> bool:
        try:
            events.check_cancel()
        except Cancelled:
            return True
        return False

    return Events(sink, cancelled)


def make_plan(run: Path, specs: Sequence, options: DetectOptions, *, model: Optional[str] = None, predictor=None,
              model_info=None, events: Optional[Events] = None) -> Plan:
    """Mosaic the dates, open them as one pair, and plan the whole area.

    Args:
        run: the run folder (exists); the mosaics go to ``run/mosaic/``.
        specs: :class:`~engine.sheets.index.SheetSpec` s, in list order.
        options: checked options; ``model`` or a stand-in ``predictor`` (+ ``model_info``).

    Sheets whose rasters GDAL cannot open fail alone (left out of the mosaics).
    Raises:
        UserError: rasters of a date that do not share a grid, no readable sheet, no overlap.
    """
    from affine import Affine

    from ..raster.pair import open_pair

    events = events or Events()
    info = _model_info(model, predictor, model_info)
    good_b, bad_b = probe_rasters([(s.id, str(s.before)) for s in specs])
    good_a, bad_a = probe_rasters([(s.id, str(s.after)) for s in specs])
    good_b, odd_b = agreeing(good_b, "before")  # a damaged sheet fails alone, named itself
    good_a, odd_a = agreeing(good_a, "after")
    failed = {**odd_a, **bad_a, **odd_b, **bad_b}
    rb = [r for r in good_b if r.id not in failed]
    ra = [r for r in good_a if r.id not in failed]
    if not rb:
        raise UserError(f"{run}: no sheet has readable rasters ({len(failed)} failed: {next(iter(failed.values()), '')})")
    (run / "mosaic").mkdir(parents=True, exist_ok=True)
    # named by their sheets: planning a refused run (other sheets) never replaces a run's mosaics
    tag = hashlib.sha256(json.dumps([[r.path for r in rb], [r.path for r in ra]]).encode()).hexdigest()[:8]
    before_vrt, after_vrt = run / "mosaic" / f"before-{tag}.vrt", run / "mosaic" / f"after-{tag}.vrt"
    grid_b = write_mosaic(rb, before_vrt, "before")
    write_mosaic(ra, after_vrt, "after")
    named = _naming_sheets(events, {str(before_vrt): [r.path for r in rb], str(after_vrt): [r.path for r in ra]})
    pair = open_pair(before_vrt, after_vrt, options.bands_before, options.bands_after, options.extent, named)
    try:
        if predictor is None or model_info is not None:  # as detect: what the model is, whether it fits
            _report_model(info, pair, events, str(model) if predictor is None else "predictor", str(specs[0].before))
        engine = Engine(None, info, {"device": _device_type(options, predictor)})
        try:
            plan = plan_area(pair, engine, options, named)
        except UserError as exc:  # a damaged sheet read while sampling the radiometry: name it
            raise blame_sheet(exc, before_vrt, after_vrt) from None
        area = (pair.width, pair.height, tuple(pair.transform)[:6], pair.crs.to_wkt() if pair.crs else None)
        offset = (pair.before.col_off, pair.before.row_off)
    finally:
        pair.close()
    settings = {
        "options": options.as_dict(),
        "model": fingerprint(model) if predictor is None else None,
        "stand_in": _stand_in(predictor),
        "sheets": [[s.id, str(s.before), str(s.after)] for s in specs],
        "area": [area[0], area[1], list(area[2]), area[3]],
        "plan": plan.describe(),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    ctx = RunContext(str(run), str(before_vrt), str(after_vrt), options, None if model is None else str(model),
                     predictor, info, plan, area, digest)
    afters = {r.id: r.path for r in ra}
    jobs, skipped, extents = _jobs(ctx, rb, afters, grid_b, offset, Affine(*area[2]))
    return Plan(ctx, jobs, failed, skipped, extents, settings)


def _report_model(info, pair, events: Events, source: str, first_sheet: str) -> None:
    """Log what the model is and warn, as ``detect`` does, when it is a demonstration model
    or its ground sampling distance does not fit the sheets' (named by the first sheet)."""
    from ..model_fit import describe_model, fit_warnings, raster_gsd_m

    for line in describe_model(info, source):
        events.log(line)
    gsd = raster_gsd_m(pair.transform, pair.crs, pair.height)
    for message in fit_warnings(info, gsd, source, first_sheet):
        events.warn(message)


def _jobs(ctx: RunContext, rasters: Sequence[SheetRaster], afters: dict, grid, offset: tuple, transform) -> tuple:
    """One job per readable sheet: its before raster's window clipped to the processed area."""
    width, height = ctx.area[0], ctx.area[1]
    jobs, skipped, extents = [], {}, {}
    for r in rasters:
        col, row = grid.offset(r)
        c0, r0 = max(0, col - offset[0]), max(0, row - offset[1])
        c1, r1 = min(width, col - offset[0] + r.width), min(height, row - offset[1] + r.height)
        if c1 <= c0 or r1 <= r0:
            skipped[r.id] = f"{r.path}: outside the area both dates cover" + (" and --extent" if ctx.options.extent else "")
            continue
        x0, y0 = transform * (c0, r1)
        x1, y1 = transform * (c1, r0)
        extents[r.id] = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        jobs.append(SheetJob(ctx, r.id, folder_name(r.id), (c0, r0, c1 - c0, r1 - r0), (r.path, afters[r.id])))
    return jobs, skipped, extents
