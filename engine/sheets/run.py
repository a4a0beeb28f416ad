"""A sheets run: plan, compute the sheets (in-process, Dask or a shard), merge, status.

Run folder::

    run.json          the settings and their hash (a re-run with others is refused) and
                      the manifest of what the run writes (``--restart`` removes just that,
                      see :mod:`.folder`)
    mosaic/           before.vrt, after.vrt: the dates as one mosaic each
    sheets/<id>/      each finished sheet (see :mod:`.job`), renamed into place when done
    failed/<id>.json  why a sheet failed (removed when it succeeds later)
    status.gpkg       one feature per sheet: extent, status, seconds, polygons, message
    dask.log          Dask's own log lines (kept out of the terminal)

Re-running continues: sheets whose done-record is valid and whose result files are as it
lists them (size, SHA-256) are neither recomputed nor rewritten; a damaged one is computed
again with a warning; stale temporaries are removed, failed sheets are retried.

Every file is written through :mod:`engine.outputs`: built in a private staging folder
(``.hrmnet-tmp-*``, created exclusively) and renamed into place; staging folders of runs
that died are removed only when no live process holds them. ``run.json`` is created
exclusively, so shard runs started at the same moment agree on one record.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..errors import Cancelled, UserError
from ..events import Events
from ..outputs import PREFIX, Inputs, OutputSet, Staging, remove_stale, staged_file
from ..core.options import validate_options
from .job import StopRun, done_record, run_sheet, tile_events, verify_sheet
from .folder import DASK_LOG, RUN_JSON, make_manifest
from .plan import Plan, make_plan

__all__ = ["run_sheets", "SheetsResult", "EXIT_SOME_FAILED"]

EXIT_SOME_FAILED = 3
OUTPUTS_JSON = "outputs.json"
#: What a run folder may hold before its run.json: a shard started at the same moment plans
#: its mosaics (and stages files) before it creates run.json.
_BEFORE_RUN_JSON = {"mosaic"}


@dataclass
class SheetsResult:
    """What :func:`run_sheets` did: ``status`` per sheet id (done/failed/skipped/pending),
    ``outputs`` (role -> path), ``stats``, and the exit code (0, or 3 when some failed)."""

    status: dict
    outputs: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    exit_code: int = 0


def _check_run_folder(run: Path, restart: bool, merge_only: bool, inputs: Inputs) -> Path:
    """The run folder (created, writable); ``restart`` removes what the run in it created
    (its manifest, see :mod:`.folder`) and nothing else. A folder that is not a run (a
    run.json that is not a sheets run's record, or other files without one) is refused."""
    from .folder import read_run_record, restart as restart_run

    run = run.expanduser().absolute()
    if run.exists() and not run.is_dir():
        raise UserError(f"{run}: --run must be a folder")
    if not run.parent.is_dir():
        raise UserError(f"{run}: parent folder {run.parent} does not exist")
    record = read_run_record(run) if run.is_dir() else None
    if merge_only and record is None:
        raise UserError(f"{run}: no run here to merge (run the sheets first)")
    if run.is_dir() and record is None and any(  # the sheet list may lie there (QGIS saves it)
            p.name not in _BEFORE_RUN_JSON and not p.name.startswith(PREFIX) and inputs.find(p) is None
            for p in run.iterdir()):
        raise UserError(f"{run}: folder is not empty and holds no sheets run (use an empty or new folder)")
    _check_writable(run if run.is_dir() else run.parent, run)
    if restart and record is not None:
        restart_run(run, record, inputs.find)
    run.mkdir(exist_ok=True)
    return run


def _check_writable(folder: Path, shown: Path) -> None:
    """Refuse a run folder (or its parent, before it exists) this user cannot write in, and
    its subfolders likewise: one line, before any work (a staging folder is made and removed)."""
    for f in [folder] + [folder / name for name in ("sheets", "failed", "mosaic") if (folder / name).is_dir()]:
        try:
            Staging(f).close()
        except UserError as exc:
            raise UserError(f"{shown}: the run folder is not writable ({f}: {str(exc).split(': ', 1)[-1]})") from None


def _own_outputs(run: Path) -> dict:
    """Merged outputs this run folder wrote before: path -> inode (re-running may replace them)."""
    try:
        return {k: int(v) for k, v in json.loads((run.expanduser().absolute() / OUTPUTS_JSON).read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step (an exclusive private temporary, renamed)."""
    with staged_file(path, overwrite=True) as staged:
        Path(staged).write_text(text, encoding="utf-8")


def _create_once(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists (atomically: complete or absent);
    True when this call created it. Concurrent callers: exactly one wins."""
    with Staging(path.parent) as s:
        (s.dir / "new").write_text(text, encoding="utf-8")
        try:
            os.link(s.dir / "new", path)  # a hard link never replaces an existing name
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create instead
            pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def _check_outputs(out_vector, out_probability, out_mask, overwrite: bool, inputs: Inputs, run: Path,
                   out_review=None, out_review_areas=None) -> dict:
    """role -> (absolute path, replace allowed): an existing file needs ``overwrite``
    unless this run folder wrote it (re-running the same command continues)."""
    from ..outputs import check_output
    from ..vector.io import check_vector_path, vector_sidecars

    given = {k: Path(v).expanduser().absolute() for k, v in
             (("vector", out_vector), ("probability", out_probability), ("mask", out_mask), ("review", out_review),
              ("review_areas", out_review_areas)) if v}
    if "vector" not in given:
        raise UserError("sheets: --out-vector is required (the merged change polygons)")
    check_vector_path(given["vector"])
    if "review_areas" in given:
        check_vector_path(given["review_areas"])
    for role in ("probability", "mask", "review"):
        if role in given and given[role].suffix.lower() != ".vrt":
            raise UserError(f"{given[role]}: the {role} mosaic must be a .vrt (per-sheet GeoTIFFs stay in the run folder)")
    own = _own_outputs(run)
    allowed = {}
    for role, p in given.items():
        if not p.parent.is_dir():
            raise UserError(f"{p}: output folder {p.parent} does not exist")
        files = vector_sidecars(p) if role in ("vector", "review_areas") else [p]
        check_output(p, role, inputs)  # never an input, not even with --overwrite
        _check_folder_writable(p)
        existing = [q for q in files if q.exists()]
        ours = p.exists() and own.get(str(p)) == p.stat().st_ino
        if existing and not (overwrite or ours):
            raise UserError(f"{existing[0]}: exists (use --overwrite to replace it)")
        allowed[role] = (p, bool(existing) and (overwrite or ours))
    return allowed


def _check_folder_writable(output: Path) -> None:
    """Refuse an output whose folder this user cannot write in, before any sheet is computed
    (a private staging folder is made there and removed, as writing it will)."""
    try:
        Staging(output.parent).close()
    except UserError as exc:
        raise UserError(f"{output}: output folder {output.parent} is not writable "
                        f"({str(exc).split(': ', 1)[-1]})") from None


def _settings_diff(old: dict, new: dict) -> list[str]:
    keys = []
    for k in sorted(set(old) | set(new)):
        if k == "options":
            a, b = old.get(k) or {}, new.get(k) or {}
            keys += [f"{o} {a.get(o)} -> {b.get(o)}" for o in sorted(set(a) | set(b)) if a.get(o) != b.get(o)]
        elif old.get(k) != new.get(k):
            keys.append(k)
    return keys


def _read_record(path: Path) -> dict:
    """run.json (a moment's retry: a file system without hard links writes it in steps)."""
    for attempt in range(20):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if attempt == 19:
                raise UserError(f"{path}: unreadable run record (use --restart to start over)") from None
            time.sleep(0.05)
    raise AssertionError("unreachable")


def _bind_run(run: Path, plan: Plan) -> None:
    """Create run.json, or refuse a run folder holding other settings (also when another
    run, e.g. a shard started at the same moment, created it first)."""
    path = run / RUN_JSON
    mosaics = [plan.context.before_vrt, plan.context.after_vrt]
    new = {"hash": plan.context.hash, "settings": plan.settings, "mosaics": mosaics,
           "manifest": make_manifest(run, [s[0] for s in plan.settings["sheets"]], mosaics)}
    if path.exists() or not _create_once(path, json.dumps(new, indent=1, default=str)):
        old = _read_record(path)
        if old.get("hash") != plan.context.hash:
            for vrt in (plan.context.before_vrt, plan.context.after_vrt):  # planned for nothing
                if vrt not in (old.get("mosaics") or []):
                    Path(vrt).unlink(missing_ok=True)
            diff = _settings_diff(old.get("settings", {}), json.loads(json.dumps(plan.settings, default=str)))
            raise UserError(f"{run}: holds a run with other settings ({'; '.join(diff[:4]) or 'inputs'}); "
                            "use --restart to start over or another --run folder")
        if set(mosaics) <= set(old.get("mosaics") or []):
            return
        old["mosaics"] = sorted(set(old.get("mosaics") or []) | set(mosaics))  # a fixed sheet joined them
        old["manifest"] = make_manifest(run, [s[0] for s in plan.settings["sheets"]], old["mosaics"])
        _write_text(path, json.dumps(old, indent=1, default=str))


def _record_failure(run: Path, name: str, record: Optional[dict]) -> None:
    folder = run / "failed"
    path = folder / f"{name}.json"
    if record is None:
        path.unlink(missing_ok=True)
        return
    folder.mkdir(exist_ok=True)
    _write_text(path, json.dumps(record))


def _failure(run: Path, name: str) -> Optional[dict]:
    try:
        return json.loads((run / "failed" / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_sheets(sheets: str | os.PathLike, run: str | os.PathLike, *, model: Optional[str] = None, predictor=None,
               model_info=None, out_vector=None, out_probability=None, out_mask=None, out_review=None,
               out_review_areas=None, review_threshold: Optional[float] = None, id_field: Optional[str] = None,
               before: Optional[str] = None, after: Optional[str] = None, skip_missing: bool = False,
               workers: Optional[int] = None, gpus: Optional[Sequence[int]] = None, scheduler: Optional[str] = None,
               scheduler_file: Optional[str] = None, shard: Optional[tuple[int, int]] = None,
               merge_only: bool = False, restart: bool = False, overwrite: bool = False,
               events: Optional[Events] = None, on_event: Optional[Callable[[dict], None]] = None,
               is_cancelled: Optional[Callable[[], bool]] = None, **detect_options: Any) -> SheetsResult:
    """Detect change over map sheets; one merged layer equal to ``detect`` on the mosaic.

    Args:
        sheets: CSV ``id,before,after`` or a vector sheet index (see :mod:`.index`).
        run: the run folder (created; resumed when it holds this run).
        model: checkpoint, or a picklable stand-in ``predictor`` (+ ``model_info``).
        out_vector: merged polygons (.gpkg .shp .fgb .geojson): detect's fields + ``sheet``.
        out_probability, out_mask: .vrt mosaics of the per-sheet GeoTIFFs.
        out_review: .vrt mosaic of the per-sheet review (hard-region score) GeoTIFFs; the
            merged polygons get ``review`` whenever the model gives the score.
        out_review_areas, review_threshold: "look here" areas over the whole mosaic, as
            ``detect --out-review-areas`` (threshold default: the checkpoint's).
        id_field, before, after, skip_missing: see :func:`~engine.sheets.index.read_sheets`.
        workers, gpus, scheduler, scheduler_file: see :func:`~engine.sheets.execute.run_jobs`
            (``device="cpu"`` pins no worker to a GPU).
        shard: (I, N): compute every N-th sheet from the I-th, in-process, and no merge
            (outputs are refused: ``merge_only`` writes them).
        merge_only: compute nothing; merge the sheets done so far (after shard runs).
        restart: discard the run folder's sheets and start over.
        overwrite: replace existing merged outputs (never discards finished sheets).
        **detect_options: as :func:`engine.core.options.validate_options` takes them.

    Returns:
        :class:`SheetsResult`; ``exit_code`` 3 when some sheet failed (the merged layer
        holds the others).

    Raises:
        UserError: bad options or sheet list, a run folder holding other settings, an output
            that would replace an input, a model that cannot be loaded (up front from the
            checkpoint's header, else at the first sheet: the run stops).
        Cancelled: cancelled; finished sheets stay, re-running resumes.
    """
    t0 = time.perf_counter()
    events = events or Events(on_event, is_cancelled)
    options = validate_options(**detect_options)
    if predictor is None:
        from ..core.predictors import check_model_path

        check_model_path(model)
    _check_execution(options, shard, merge_only, gpus, out_vector, out_probability, out_mask, out_review,
                     out_review_areas, scheduler=scheduler, scheduler_file=scheduler_file)
    if predictor is None:
        _check_model(model)
    _check_review(model, predictor, out_review, out_review_areas)
    from .index import read_sheets

    specs, skipped = read_sheets(sheets, id_field, before, after, skip_missing)
    # everything the run reads: no output may replace one of them (nor their sidecars)
    inputs = Inputs([p for s in specs for p in (s.before, s.after)] + [sheets, model])
    targets = {} if shard is not None else _check_outputs(out_vector, out_probability, out_mask, overwrite, inputs,
                                                          Path(run), out_review, out_review_areas)
    from ..core.options import parse_review_threshold

    review_threshold = parse_review_threshold(review_threshold)
    runp = _check_run_folder(Path(run), restart, merge_only, inputs)
    planning: list[dict] = []  # its log lines wait: a refused run says one line
    plan = make_plan(runp, specs, options, model=model, predictor=predictor, model_info=model_info,
                     events=Events(planning.append))
    _bind_run(runp, plan)
    for event in planning:
        events.emit(event.pop("event"), **event)
    results: dict[str, dict] = {}
    for sid, msg in plan.failed.items():
        results[sid] = {"id": sid, "status": "failed", "message": msg, "seconds": 0.0, "polygons": 0}
        events.warn(f"sheet {sid}: failed ({msg}); left out of the mosaic, so its neighbours are computed "
                    "without its pixels (nodata there)")
    jobs = plan.jobs
    if shard is not None:
        from .execute import select_shard

        jobs = select_shard(jobs, *shard)
    try:
        if not merge_only:
            _compute(runp, plan, jobs, results, events, workers, gpus, scheduler, scheduler_file, shard)
    except (Cancelled, KeyboardInterrupt):
        _write_status(runp, plan, specs, skipped, results, {}, events)
        raise
    if shard is not None:
        failed = [j.id for j in jobs if results.get(j.id, {}).get("status") != "done"]
        return SheetsResult({j.id: results.get(j.id, {}).get("status", "pending") for j in jobs},
                            exit_code=EXIT_SOME_FAILED if failed else 0)
    return _finish(runp, plan, specs, skipped, results, targets, inputs, events, t0, review_threshold)


def _check_execution(options, shard: Optional[tuple[int, int]], merge_only: bool,
                     gpus: Optional[Sequence[int]], *outputs: Any, scheduler: Optional[str] = None,
                     scheduler_file: Optional[str] = None) -> None:
    """Contradictory execution options, refused before any work."""
    if shard is not None and merge_only:
        raise UserError("--shard and --merge-only: give one of them (merge after all shards finished)")
    if shard is not None and any(outputs):
        raise UserError("--shard computes sheets only; the outputs (--out-vector, --out-probability, ...) are "
                        "written by --merge-only after all shards finished")
    if gpus and options.device == "cpu":
        raise UserError(f"--gpus {','.join(map(str, gpus))}: not with --device cpu")
    if (scheduler or scheduler_file) and not merge_only and shard is None:
        from .execute import check_scheduler

        if scheduler and scheduler_file:
            raise UserError("--scheduler and --scheduler-file: give one of them")
        check_scheduler(scheduler, scheduler_file)  # at once, not after planning and Dask's timeouts


def _check_model(model: str | os.PathLike) -> None:
    """A safetensors checkpoint whose tensors are not HRMNet's fails here, once, from its
    header alone (no weights read), an ONNX graph that does not take and give what HRMNet
    does likewise (:func:`engine.onnx_predictor.check_contract`); a worker that still cannot load the model stops the
    run at its first sheet (:class:`~engine.sheets.job.ModelLoadError`)."""
    p = Path(model)
    if not p.is_file():
        return
    if p.suffix.lower() == ".onnx":  # its metadata and its graph's inputs/outputs (HRMNet's contract)
        from ..checkpoint import read_info

        read_info(p)
        return
    try:
        import torch
        from safetensors import safe_open

        from ..checkpoint import check_state_dict, is_safetensors

        if not is_safetensors(p):
            return  # a .pth is read whole while planning (read_info)
        with safe_open(str(p), framework="pt") as f:
            shapes = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    except UserError:
        raise
    except Exception:  # a damaged header: planning reads it and says so in one line
        return
    check_state_dict(shapes, str(p))


def _check_review(model, predictor, *outputs) -> None:
    """Review outputs need a model that gives the review (hard-region) score: refused before
    any sheet is computed. HRMNet checkpoints always give it; an ONNX graph when it has the
    ``hard`` output; a stand-in predictor when it says so (``gives_review``)."""
    if not any(outputs):
        return
    from ..detect import gives_review

    if predictor is not None:
        ok, name = gives_review(predictor), "predictor"
    elif str(model).lower().endswith(".onnx"):
        from ..onnx_predictor import read_onnx_metadata

        ok, name = "hard" in read_onnx_metadata(model)["onnx"]["outputs"], str(model)
    else:
        return
    if not ok:
        raise UserError(f"{name}: gives no review (hard-region) score, needed by --out-review and --out-review-areas")


def _compute(run: Path, plan: Plan, jobs: list, results: dict, events: Events, workers, gpus, scheduler,
             scheduler_file, shard) -> None:
    """Run the jobs not done yet; record each result as it arrives."""
    from .execute import run_jobs

    sheets_dir = run / "sheets"
    sheets_dir.mkdir(exist_ok=True)
    remove_stale(sheets_dir)  # a killed run's staging folders (never a live process's)
    todo = []
    for job in jobs:
        record = finished_sheet(sheets_dir / job.name, plan.context.hash, job, events, "computing it again")
        if record is not None:
            _check_unchanged(job, record)
            results[job.id] = {**record, "reused": True}
        else:
            todo.append(job)
    tiles = _tile_counts(plan)
    events.start(sheets=len(plan.jobs), todo=len(todo), done_before=len(jobs) - len(todo),
                 failed_before_start=len(plan.failed), tiles_mosaic=len(plan.context.plan.grid),
                 tiles_sheets=sum(tiles.values()), run=str(run), hash=plan.context.hash,
                 **plan.context.plan.describe())
    total, count = len(jobs), len(jobs) - len(todo)
    events.progress(count, total, "sheets")
    waiting = {j.id for j in todo}
    ticker = _TileProgress(events, sum(tiles[j.id] for j in jobs),
                           sum(tiles[j.id] for j in jobs if j.id not in waiting))

    def on_result(job, result, error) -> None:
        nonlocal count
        if isinstance(error, StopRun):  # every sheet would fail so (model, full disk): stop now, one line
            raise UserError(str(error))
        if error is not None:
            result = {"id": job.id, "status": "failed", "seconds": 0.0, "polygons": 0,
                      "message": f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"}
        results[job.id] = result
        _record_failure(run, job.name, result if result.get("status") == "failed" else None)
        count += 1
        events.emit("sheet", id=job.id, status=result.get("status"), seconds=result.get("seconds"),
                    polygons=result.get("final_polygons", 0) + result.get("border_pieces", 0),
                    message=result.get("message", ""), tiles=result.get("tiles"), pid=result.get("pid"),
                    peak_rss_mib=result.get("peak_rss_mib"))
        if result.get("status") == "failed":
            events.warn(f"sheet {job.id}: failed ({result.get('message')})")
        events.progress(count, total, "sheets")
        ticker.sheet_done(tiles[job.id])

    if shard is not None or (workers is None and not gpus and not (scheduler or scheduler_file) and len(todo) <= 1):
        workers = 1 if not (scheduler or scheduler_file) else workers
    if gpus is None and plan.context.options.device == "cpu" and not (scheduler or scheduler_file):
        gpus = []  # --device cpu: no worker is pinned to a GPU
    try:
        with tile_events(ticker.sheet_events()):  # in-process sheets: tiles as they go
            run_jobs(run_sheet, todo, workers=workers, gpus=gpus, scheduler=scheduler, scheduler_file=scheduler_file,
                     on_result=on_result, is_cancelled=lambda: _cancelled(events), log_file=str(run / DASK_LOG))
    finally:
        remove_stale(sheets_dir)  # also those of workers stopped mid-sheet (a full disk, a cancel)


class _TileProgress:
    """``progress`` events with stage "tiles" over the run's sheets (a halo tile counts once
    per sheet it serves): each finished sheet adds its tiles (failed ones too, so the count
    ends at the total); a sheet computed in this process adds its tiles as they go, a sheet
    on a Dask worker when it ends. Never decreasing.

    Args:
        events: the run's events.
        total: tiles of the sheets this run handles; done: those of sheets done before.
    """

    def __init__(self, events: Events, total: int, done: int) -> None:
        self.events, self.total, self.done, self.shown = events, int(total), int(done), int(done)
        events.progress(self.done, self.total, "tiles")

    def sheet_done(self, tiles: int) -> None:
        self.done += int(tiles)
        self._show(self.done)

    def sheet_events(self) -> Events:
        """Events for the sheet being computed here (its ``detect`` progress: tiles done, its tiles)."""

        def sink(event: dict) -> None:
            if event["event"] == "progress":
                self._show(self.done + min(int(event["done"]), int(event["total"])))

        return Events(sink, lambda: _cancelled(self.events))

    def _show(self, done: int) -> None:
        done = min(done, self.total)
        if done > self.shown:
            self.shown = done
            self.events.progress(done, self.total, "tiles")


def _tile_counts(plan: Plan) -> dict[str, int]:
    """Sheet id -> the tiles its job runs (those touching the sheet: its halo included)."""
    counts = {}
    for job in plan.jobs:
        rows, cols = plan.context.plan.grid.touching(_window(job))
        counts[job.id] = len(rows) * len(cols)
    return counts


def sheet_state(folder: Path, digest: str) -> tuple[Optional[dict], Optional[str]]:
    """(done-record, problem) of a sheet folder: (record, None) when its result files are
    all as the record lists them; (None, problem) when damaged; (None, None) when not done.
    A folder without a valid done-record but with files is damaged: the run renames a sheet
    folder into place complete, record included."""
    record = done_record(folder, digest)
    if record is None:
        if folder.is_dir() and any(folder.iterdir()):
            return None, f"{folder / 'done.json'}: missing or unreadable"
        return None, None
    problem = verify_sheet(folder, record)
    return (None, problem) if problem else (record, None)


def finished_sheet(folder: Path, digest: str, job, events: Events, then: str) -> Optional[dict]:
    """The sheet's verified done-record, or None (a damaged sheet is warned about, naming
    the sheet and the damage; ``then``: what happens now)."""
    record, problem = sheet_state(folder, digest)
    if problem is not None:
        events.warn(f"sheet {job.id}: {problem}; {then}")
    return record


def _cancelled(events: Events) -> bool:
    try:
        events.check_cancel()
    except Cancelled:
        return True
    return False


def _check_unchanged(job, record: dict) -> None:
    """Refuse to resume when a finished sheet's raster changed since it was computed."""
    from .plan import fingerprint

    for path, old in zip(job.inputs, record.get("inputs") or []):
        if old is not None and fingerprint(path) != old:
            raise UserError(f"{path}: changed since sheet {job.id} was computed; use --restart to start over")


def _window(job):
    from rasterio.windows import Window

    return Window(*job.window)


def _finish(run: Path, plan: Plan, specs, skipped, results: dict, targets: dict, inputs, events: Events,
            t0: float, review_threshold: Optional[float] = None) -> SheetsResult:
    """Merge what is done, write the mosaics and the status layer."""
    ctx = plan.context
    done = []
    for job in plan.jobs:
        folder = run / "sheets" / job.name
        if results.get(job.id, {}).get("status") == "done":  # verified or computed by this run
            done.append((job.id, folder, job.window))
            continue
        record, problem = sheet_state(folder, ctx.hash) if job.id not in results else (None, None)
        if problem is not None:  # --merge-only computes nothing: the damaged sheet is left out, loudly
            events.warn(f"sheet {job.id}: {problem}; left out of the merged layer (run the sheets again "
                        "without --merge-only to compute it)")
            results[job.id] = {"id": job.id, "status": "failed", "message": problem}
        elif record is not None:
            results[job.id] = record
            done.append((job.id, folder, job.window))
        elif job.id not in results:
            results[job.id] = _failure(run, job.name) or {"id": job.id, "status": "pending", "message": "not computed yet"}
    events.check_cancel()
    outputs, counts, n_areas = _write_outputs(run, plan, specs, skipped, results, done, targets, inputs,
                                              review_threshold)
    failed = sorted(sid for sid, r in results.items() if r.get("status") != "done")
    stats = {"sheets": len(plan.jobs) + len(plan.failed), "done": len(done), "failed": len(failed),
             "skipped": len(skipped) + len(plan.skipped), "polygons": int(sum(counts.values())),
             "seconds": round(time.perf_counter() - t0, 3)}
    if n_areas is not None:
        stats["review_areas"] = n_areas
    if failed:
        events.warn(f"{len(failed)} sheet(s) failed or not done ({', '.join(failed[:5])}{', ...' if len(failed) > 5 else ''}); "
                    f"the merged layer holds the other {len(done)}; see {run / 'status.gpkg'}; run again to retry")
    events.done(outputs=outputs, stats=stats)
    status = {sid: r.get("status") for sid, r in results.items()}
    status.update({s.id: "skipped" for s in skipped})
    status.update({sid: "skipped" for sid in plan.skipped})
    return SheetsResult(status, outputs, stats, EXIT_SOME_FAILED if failed else 0)


def _write_outputs(run: Path, plan: Plan, specs, skipped, results: dict, done, targets: dict, inputs,
                   review_threshold: Optional[float]) -> tuple[dict, dict, Optional[int]]:
    """Write the merged layer, the mosaics, the review areas, the status layer and the
    record of the outputs, all staged, then rename them into place together: all of them
    or none (a full disk for any of them leaves none). Returns (role -> path, polygons
    per sheet id, review areas or None)."""
    from .merge import write_merged

    ctx, n_areas = plan.context, None
    outputs = {"vector": str(targets["vector"][0]), "probability": None, "mask": None,
               "status": str(run / "status.gpkg")}
    with OutputSet(inputs) as outs:
        staged = {}
        with outs.writing(*targets["vector"]) as path:
            counts = write_merged(ctx, done, path)
        staged[targets["vector"][0]] = path
        for role in ("probability", "mask", "review"):
            if role in targets:
                with outs.writing(*targets[role]) as path:
                    _write_vrt(done, role, path, ctx.plan.probability_dtype)
                outputs[role], staged[targets[role][0]] = str(targets[role][0]), path
        if "review_areas" in targets:
            with outs.writing(*targets["review_areas"]) as path:
                n_areas = _write_review_areas(run, done, ctx, path, review_threshold)
            outputs["review_areas"], staged[targets["review_areas"][0]] = str(targets["review_areas"][0]), path
        with outs.writing(run / "status.gpkg", overwrite=True) as path:
            _write_status_to(path, _status_frame(plan, specs, skipped, results, counts))
        with outs.writing(run / OUTPUTS_JSON, overwrite=True) as path:
            path.write_text(_outputs_record(run, staged), encoding="utf-8")
        outs.commit()
    return outputs, counts, n_areas


def _outputs_record(run: Path, staged: dict) -> str:
    """outputs.json's text: the merged outputs this run folder wrote (path -> inode), these
    ones read from their staged files (a rename keeps the inode)."""
    own = _own_outputs(run)
    own.update({str(target): os.stat(path).st_ino for target, path in staged.items()})
    return json.dumps(own, indent=1)


def _write_vrt(done, role: str, path: Path, dtype: str) -> None:
    """The ``role`` mosaic of the done sheets' GeoTIFFs, written to the staged ``path``."""
    from .mosaic import probe_rasters, write_mosaic

    name = {"probability": "prob.tif", "review": "review.tif"}.get(role, "mask.tif")
    rasters, bad = probe_rasters([(sid, str(folder / name)) for sid, folder, _w in done])
    if bad:
        raise UserError(f"{next(iter(bad.values()))}")
    nodata = 255 if (role == "mask" or dtype == "uint8") else -1.0
    write_mosaic(rasters, Path(path), role, nodata=nodata)


def _write_review_areas(run: Path, done, ctx, path: Path, threshold) -> int:
    """"Look here" areas over the done sheets, read through VRT mosaics of their mask,
    review and probability (as ``detect --out-review-areas`` on the mosaic), written to the
    staged ``path``; the count."""
    from ..vector.review_areas import review_areas_to_file
    from .mosaic import probe_rasters, write_mosaic

    if threshold is None:
        from ..checkpoint import ModelInfo, read_info

        info = ctx.model_info or (read_info(ctx.model) if ctx.model else ModelInfo())
        threshold = float(info.review_threshold)
    folder = run / "review-mosaic"
    folder.mkdir(exist_ok=True)
    vrts = {}
    for name in ("mask.tif", "review.tif", "prob.tif"):
        rasters, bad = probe_rasters([(sid, str(f / name)) for sid, f, _w in done])
        if bad:
            sid = next(iter(bad))
            raise UserError(f"sheet {sid}: no {name} ({bad[sid]}); review areas need a model that gives the review "
                            "score (run again with --restart if the sheets were computed without it)")
        vrts[name] = folder / name.replace(".tif", ".vrt")
        nodata = 255 if (name == "mask.tif" or ctx.plan.probability_dtype == "uint8") else -1.0
        write_mosaic(rasters, vrts[name], name[:-4], nodata=nodata)
    stats = review_areas_to_file(vrts["mask.tif"], vrts["review.tif"], path, threshold,
                                 prob_path=vrts["prob.tif"], min_area_m2=ctx.plan.min_area)
    return int(stats["areas"])


def _write_status(run: Path, plan: Plan, specs, skipped, results: dict, counts: dict, events: Events) -> None:
    """status.gpkg on its own (a cancelled run; see :func:`_write_outputs` otherwise)."""
    with staged_file(run / "status.gpkg", overwrite=True) as staged:
        _write_status_to(staged, _status_frame(plan, specs, skipped, results, counts))


def _status_frame(plan: Plan, specs, skipped, results: dict, counts: dict):
    """The status layer: one feature per sheet of the list (extent, status, seconds,
    polygons, message), in the area's CRS."""
    import geopandas as gpd
    from shapely.geometry import box

    from .job import area_grid

    crs = area_grid(plan.context).crs_string
    rows = []
    order = [s.id for s in specs] + [s.id for s in skipped]
    reasons = {s.id: getattr(s, "reason", "") for s in skipped}
    for sid in order:
        r = results.get(sid, {})
        if sid in reasons or sid in plan.skipped:
            status, msg = "skipped", reasons.get(sid) or plan.skipped.get(sid, "")
        else:
            status, msg = r.get("status", "pending"), r.get("message", "")
        ext = plan.extents.get(sid)
        rows.append({"id": sid, "status": status, "seconds": float(r.get("seconds") or 0.0),
                     "polygons": int(counts.get(sid, 0)), "message": msg or "",
                     "geometry": box(*ext) if ext else None})
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)


def _write_status_to(path: Path, frame) -> None:
    """Write the status ``frame`` to the (staged) GeoPackage ``path``."""
    import warnings

    import pyogrio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyogrio.write_dataframe(frame, path, layer="status", driver="GPKG", geometry_type="Polygon",
                                dataset_options={"VERSION": "1.2"})
