"""A finished sheet is verified before it is reused or merged (issue 18): its done-record
holds each result file's size and SHA-256; a missing, truncated or altered result file is
computed again with a warning naming the sheet, and the merged layer is the same as before
(never a silently smaller layer). Only the damaged sheet is computed again: a sheet job
reads its neighbours' *input* rasters through the mosaic (its halo), never their results,
so the neighbours' results do not depend on the damaged files and stay as they are."""
from __future__ import annotations

import json
from pathlib import Path

import pyogrio
import pytest

from engine.sheets.run import run_sheets

from .standins import BlurDifference, blob_scene, cut

TILING = {"tile_size": 64, "overlap": 16}


@pytest.fixture()
def scene(tmp_path) -> Path:
    before, after = blob_scene(150, 170)
    return cut(before, after, tmp_path / "in", [50, 97], [60, 111])


def _snapshot(folder: Path) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def _layer(path: Path) -> list:
    frame = pyogrio.read_dataframe(path)
    return [(r.id, r.sheet, round(r.area_m2, 6), round(r.mean_prob, 6), r.geometry.wkb) for r in frame.itertuples()]


def test_done_record_lists_each_result_file_with_size_and_hash(scene, tmp_path):
    import hashlib

    run_sheets(scene, tmp_path / "run", predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", workers=1,
               **TILING)
    folder = tmp_path / "run" / "sheets" / "r1c1"
    files = json.loads((folder / "done.json").read_text())["files"]
    assert {"prob.tif", "mask.tif", "final.fgb", "border.fgb", "edges.npz"} <= set(files)
    for name, meta in files.items():
        data = (folder / name).read_bytes()
        assert meta == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_missing_or_truncated_result_is_computed_again_with_a_warning_and_the_same_layer(scene, tmp_path):
    run, out = tmp_path / "run", tmp_path / "m.gpkg"
    kw = dict(predictor=BlurDifference(), out_vector=out, workers=1, min_area=2.0, **TILING)
    assert run_sheets(scene, run, **kw).exit_code == 0
    reference = _layer(out)
    files = {sid: json.loads((run / "sheets" / sid / "done.json").read_text())["files"] for sid in ("r1c1", "r1c0")}
    # a wrong rm of the largest piece file, a truncated one, and a rewritten mask of the same size
    (run / "sheets" / "r1c1" / "border.fgb").unlink()
    final = run / "sheets" / "r1c0" / "final.fgb"
    final.write_bytes(final.read_bytes()[:300])
    mask = run / "sheets" / "r2c0" / "mask.tif"
    data = bytearray(mask.read_bytes())
    data[-10] ^= 0xFF
    mask.write_bytes(bytes(data))
    untouched = {p.name: _snapshot(p) for p in (run / "sheets").iterdir() if p.name not in ("r1c1", "r1c0", "r2c0")}

    events = []
    res = run_sheets(scene, run, on_event=events.append, **kw)
    assert res.exit_code == 0 and set(res.status.values()) == {"done"}
    warnings = [e["message"] for e in events if e["event"] == "log" and e["level"] == "warning"]
    assert any(w.startswith("sheet r1c1: ") and "border.fgb: missing" in w and "computing it again" in w
               for w in warnings), warnings
    assert any(w.startswith("sheet r1c0: ") and "final.fgb: 300 bytes" in w for w in warnings), warnings
    assert any(w.startswith("sheet r2c0: ") and "mask.tif: damaged" in w for w in warnings), warnings
    assert len(warnings) == 3
    start = next(e for e in events if e["event"] == "start")
    assert start["todo"] == 3  # the damaged sheets only: their neighbours never read their results
    assert {p.name: _snapshot(p) for p in (run / "sheets").iterdir() if p.name in untouched} == untouched
    assert _layer(out) == reference  # not a polygon lost
    for sid, before in files.items():  # computed again from the same inputs: the same bytes
        assert json.loads((run / "sheets" / sid / "done.json").read_text())["files"] == before

    # a missing done-record (the folder still there) is computed again too, with a warning
    (run / "sheets" / "r2c2" / "done.json").unlink()
    events.clear()
    assert run_sheets(scene, run, on_event=events.append, **kw).exit_code == 0
    assert [e["message"] for e in events if e["event"] == "log" and e["level"] == "warning"] == [
        f"sheet r2c2: {run / 'sheets' / 'r2c2' / 'done.json'}: missing or unreadable; computing it again"]
    assert _layer(out) == reference


def test_merge_only_leaves_a_damaged_sheet_out_loudly(scene, tmp_path):
    run = tmp_path / "run"
    for i in (1, 2):
        run_sheets(scene, run, predictor=BlurDifference(), shard=(i, 2), **TILING)
    (run / "sheets" / "r1c1" / "edges.npz").write_bytes(b"")
    events = []
    res = run_sheets(scene, run, predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", merge_only=True,
                     on_event=events.append, **TILING)
    assert res.exit_code == 3 and res.status["r1c1"] == "failed" and res.stats["done"] == 8
    assert any(e["event"] == "log" and e["level"] == "warning" and e["message"].startswith("sheet r1c1: ")
               and "edges.npz: 0 bytes" in e["message"] for e in events)
    status = pyogrio.read_dataframe(run / "status.gpkg").set_index("id")
    assert status.loc["r1c1", "status"] == "failed" and "edges.npz" in status.loc["r1c1", "message"]
    # the same command without --merge-only computes it again: all done
    res = run_sheets(scene, run, predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", **TILING, workers=1)
    assert res.exit_code == 0 and res.stats["done"] == 9
