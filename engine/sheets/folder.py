"""The run folder's record and manifest: what a run created, and ``--restart`` removing
exactly that.

``run.json`` holds the settings, their hash, the mosaics and a ``manifest``: every path the
run writes, relative to the run folder::

    {"files": ["run.json", "status.gpkg", "outputs.json", "dask.log", "mosaic/before-1a2b.vrt", ...],
     "sheet_folders": ["sheets/r0c0", ...],        # each holds at most "sheet_files"
     "sheet_files": ["prob.tif", ..., "done.json"],
     "failed": ["failed/r0c0.json", ...],
     "folders": ["sheets", "failed", "mosaic", "review-mosaic"]}   # removed only when empty

:func:`restart` removes the listed files (and a sheet folder's listed files), then the
listed folders that are left empty, ``run.json`` last (a restart that dies half-way can be
run again). Anything else in the folder stays: a user's file in ``mosaic/``, a note in a
sheet folder, a staging folder of a live run. A ``run.json`` that is not a sheets run's
record makes the folder "not a run": refused in one line, nothing touched.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UserError
from ..outputs import remove_stale

__all__ = ["RUN_JSON", "DASK_LOG", "TOP_FILES", "FOLDERS", "is_run_record", "read_run_record", "make_manifest", "manifest_of",
           "restart", "doomed_files"]

RUN_JSON = "run.json"
#: Dask's own log lines (kept out of the terminal).
DASK_LOG = "dask.log"
#: Files of the run folder itself (status layer, the merged outputs this run wrote, Dask's log).
TOP_FILES = (RUN_JSON, "status.gpkg", "outputs.json", DASK_LOG)
#: Files of the review-areas mosaics (``review-mosaic/``).
REVIEW_MOSAIC = ("review-mosaic/mask.vrt", "review-mosaic/review.vrt", "review-mosaic/prob.vrt")
#: Folders a run creates; removed by a restart only when nothing else is left in them.
FOLDERS = ("sheets", "failed", "mosaic", "review-mosaic")


def is_run_record(record) -> bool:
    """Whether ``record`` (parsed run.json) is a sheets run's record."""
    return (isinstance(record, dict) and isinstance(record.get("hash"), str)
            and isinstance(record.get("settings"), dict) and isinstance(record.get("mosaics"), list)
            and isinstance(record["settings"].get("sheets"), list))


def read_run_record(run: Path) -> Optional[dict]:
    """The run record of ``run`` (None when there is no run.json).

    Raises:
        UserError: run.json is there but is not a sheets run's record (one line).
    """
    path = run / RUN_JSON
    if not path.exists() and not path.is_symlink():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        record = None
    if not is_run_record(record):
        raise UserError(f"{path}: not a sheets run record; this folder holds no sheets run "
                        "(use an empty or new --run folder)")
    return record


def make_manifest(run: Path, sheet_ids: Sequence[str], mosaics: Sequence[str]) -> dict:
    """The manifest of a run with these sheets and mosaics (absolute paths in ``run``)."""
    from .job import RESULT_NAMES
    from .plan import folder_name

    names = [folder_name(str(sid)) for sid in sheet_ids]
    inside = [Path(m).relative_to(run).as_posix() for m in mosaics if _inside(Path(m), run)]
    return {"files": [*TOP_FILES, *sorted(set(inside)), *REVIEW_MOSAIC],
            "sheet_folders": [f"sheets/{n}" for n in names], "sheet_files": list(RESULT_NAMES),
            "failed": [f"failed/{n}.json" for n in names], "folders": list(FOLDERS)}


def manifest_of(run: Path, record: dict) -> dict:
    """The record's manifest (one derived from its sheets and mosaics for records written
    before manifests existed)."""
    manifest = record.get("manifest")
    if isinstance(manifest, dict) and all(isinstance(manifest.get(k), list) for k in
                                          ("files", "sheet_folders", "sheet_files", "failed", "folders")):
        return manifest
    return make_manifest(run, [s[0] for s in record["settings"]["sheets"]], record.get("mosaics") or [])


def _inside(path: Path, run: Path) -> bool:
    try:
        path.relative_to(run)
    except ValueError:
        return False
    return ".." not in path.parts


def _safe(run: Path, rel: str) -> Optional[Path]:
    """``run / rel`` when ``rel`` is a plain relative path inside the run folder."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return None
    return run / p


def doomed_files(run: Path, manifest: dict) -> list[Path]:
    """The files a restart removes (those that exist), ``run.json`` last."""
    files = [_safe(run, f) for f in manifest["files"] + manifest["failed"]]
    for folder in manifest["sheet_folders"]:
        base = _safe(run, folder)
        if base is not None:
            files += [_safe(base, name) for name in manifest["sheet_files"]]
    found = [f for f in files if f is not None and (f.exists() or f.is_symlink()) and not f.is_dir()]
    return sorted(found, key=lambda f: f == run / RUN_JSON)


def restart(run: Path, record: dict, is_input) -> None:
    """Remove what the run of ``record`` created in ``run`` and nothing else.

    Args:
        is_input: path -> the input it is, or None; an input among the files is refused.

    Raises:
        UserError: a file to remove is one of the run's inputs (nothing removed).
    """
    manifest = manifest_of(run, record)
    doomed = doomed_files(run, manifest)
    hit = next((f for f in doomed if is_input(f) is not None), None)
    if hit is not None:
        raise UserError(f"{run}: --restart would delete the input {is_input(hit)} (keep inputs out of the run folder)")
    for f in doomed:
        if f.name != RUN_JSON:
            f.unlink(missing_ok=True)
    for folder in [*manifest["sheet_folders"], *manifest["folders"]]:
        path = _safe(run, folder)
        if path is not None and path.is_dir() and not path.is_symlink():
            remove_stale(path)  # staging folders of runs that died (a live one stays, and its folder)
            _rmdir_if_empty(path)
    remove_stale(run)
    (run / RUN_JSON).unlink(missing_ok=True)


def _rmdir_if_empty(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError:  # not empty: something that is not the run's stays
        pass
