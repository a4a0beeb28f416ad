"""The sheets command end to end: a synthetic scene cut into 3x3 uneven sheets gives the
mask bytes and polygons of one ``detect`` on the mosaic (Dask, 2 workers, a stand-in
model whose output depends on neighbouring pixels); a killed run resumes without touching
finished sheets; a corrupt sheet fails alone (exit 3); other settings are refused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyogrio
import pytest
import rasterio

from engine.detect import detect
from engine.errors import Cancelled, UserError
from engine.sheets.run import run_sheets

from .standins import BlurDifference, blob_scene, cut, sheets_cli

ROOT = Path(__file__).resolve().parents[3]
TILING = {"tile_size": 64, "overlap": 16}


@pytest.fixture()
def scene(tmp_path) -> Path:
    before, after = blob_scene(150, 170)
    return cut(before, after, tmp_path / "in", [50, 97], [60, 111])


def _detect_on_mosaic(run: Path, out: Path, **kw):
    detect(next(run.glob("mosaic/before-*.vrt")), next(run.glob("mosaic/after-*.vrt")), predictor=BlurDifference(),
           out_vector=out / "detect.gpkg", out_mask=out / "detect_mask.tif", **TILING, **kw)
    with rasterio.open(out / "detect_mask.tif") as ds:
        return ds.read(1), pyogrio.read_dataframe(out / "detect.gpkg")


def test_three_by_three_sheets_on_two_dask_workers_equal_detect_on_the_mosaic(scene, tmp_path):
    run, events = tmp_path / "run", []
    res = run_sheets(scene, run, predictor=BlurDifference(), out_vector=tmp_path / "merged.shp",
                     out_mask=tmp_path / "mask.vrt", out_probability=tmp_path / "prob.vrt", workers=2,
                     min_area=2.0, simplify=0.6, on_event=events.append, **TILING)
    assert res.exit_code == 0 and set(res.status.values()) == {"done"} and len(res.status) == 9
    mask, polygons = _detect_on_mosaic(run, tmp_path, min_area=2.0, simplify=0.6)
    with rasterio.open(tmp_path / "mask.vrt") as ds:
        assert ds.read(1).tobytes() == mask.tobytes()
    merged = pyogrio.read_dataframe(tmp_path / "merged.shp")  # shapefile output works
    assert len(merged) == len(polygons) > 10
    assert list(merged.columns) == ["id", "area_m2", "mean_prob", "max_prob", "sheet", "geometry"]
    for a, b in zip(merged.itertuples(), polygons.itertuples()):
        assert a.id == b.id and a.geometry.equals(b.geometry)
        assert a.area_m2 == pytest.approx(b.area_m2) and a.mean_prob == pytest.approx(b.mean_prob)
    sheet_events = [e for e in events if e["event"] == "sheet"]
    assert sorted(e["id"] for e in sheet_events) == sorted(res.status)
    start = next(e for e in events if e["event"] == "start")
    assert start["tiles_sheets"] > start["tiles_mosaic"]  # the halo's extra tiles
    tiles = [e["done"] for e in events if e["event"] == "progress" and e["stage"] == "tiles"]
    assert tiles == sorted(set(tiles)) and tiles[-1] == start["tiles_sheets"]  # on Dask: per finished sheet
    assert len(tiles) <= 10
    status = pyogrio.read_dataframe(run / "status.gpkg")
    assert set(status["status"]) == {"done"} and status["polygons"].sum() == len(merged)
    assert status.geometry.notna().all()
    assert sorted(p.name for p in (run / "sheets").iterdir()) == sorted(res.status)  # no temporaries


_KILLED_RUN = """
import sys, time
sys.path.insert(0, {root!r})
from tests.engine.sheets.standins import BlurDifference
import engine.core.runner
from engine.sheets.run import run_sheets

fast = engine.core.runner.run_window

def slow(*args, **kw):  # the same model, slower: the kill lands mid-run
    time.sleep(0.5)
    return fast(*args, **kw)

engine.core.runner.run_window = slow
run_sheets({csv!r}, {run!r}, predictor=BlurDifference(), out_vector={out!r}, workers=1, tile_size=64, overlap=16)
"""


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_killed_run_resumes_without_touching_finished_sheets(scene, tmp_path):
    run = tmp_path / "run"
    code = _KILLED_RUN.format(root=str(ROOT), csv=str(scene), run=str(run), out=str(tmp_path / "m.gpkg"))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(run.glob("sheets/*/done.json"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = [p.parent for p in run.glob("sheets/*/done.json")]
    assert 2 <= len(finished) < 9, "the run should have been killed mid-way"
    before = {f.name: _snapshot(f) for f in finished}

    res = run_sheets(scene, run, predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", workers=1, **TILING)
    assert res.exit_code == 0 and set(res.status.values()) == {"done"}
    for f in finished:
        assert _snapshot(f) == before[f.name]  # same inodes, same mtimes: not rewritten
    assert not [p for p in (run / "sheets").iterdir() if p.name.startswith(".")]  # stale temporaries gone
    mask, polygons = _detect_on_mosaic(run, tmp_path)
    assert len(pyogrio.read_dataframe(tmp_path / "m.gpkg")) == len(polygons)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from tests.engine.detect.conftest import _checkpoint

    return _checkpoint(tmp_path_factory.mktemp("model") / "m.safetensors", None)


def test_corrupt_sheet_fails_alone_exit_3_then_other_settings_refused(scene, tmp_path, model):
    bad = scene.parent / "after_r1c1.tif"
    bad.write_bytes(b"II*\x00 this is not a GeoTIFF any more")
    run, out = tmp_path / "run", tmp_path / "merged.gpkg"
    res = sheets_cli("--sheets", scene, "--run", run, "--model", model, "--out-vector", out, "--workers", "1",
               "--progress", "jsonl")
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    sheets = {e["id"]: e for e in events if e["event"] == "sheet"}
    assert len(sheets) == 8 and all(e["status"] == "done" for e in sheets.values())
    assert any(e["event"] == "log" and e["level"] == "warning" and "r1c1" in e["message"] for e in events)
    status = pyogrio.read_dataframe(run / "status.gpkg").set_index("id")
    assert status.loc["r1c1", "status"] == "failed" and str(bad) in status.loc["r1c1", "message"]
    assert (status.drop(index="r1c1")["status"] == "done").all()
    assert out.exists() and events[-1]["event"] == "done" and events[-1]["stats"]["failed"] == 1

    done = {p.name: _snapshot(p) for p in (run / "sheets").iterdir()}
    res = sheets_cli("--sheets", scene, "--run", run, "--model", model, "--out-vector", out, "--threshold", "0.3")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "other settings" in res.stderr and "threshold" in res.stderr and "--restart" in res.stderr
    other = tmp_path / "other.gpkg"
    other.write_bytes(b"someone else's file")
    res = sheets_cli("--sheets", scene, "--run", run, "--model", model, "--out-vector", other, "--progress", "none")
    assert res.returncode == 2 and "exists" in res.stderr and "--overwrite" in res.stderr

    # the same command again: resumes (the corrupt sheet fails again), replaces its own merged layer
    res = sheets_cli("--sheets", scene, "--run", run, "--model", model, "--out-vector", out, "--progress", "none")
    assert res.returncode == 3, res.stderr
    assert {p.name: _snapshot(p) for p in (run / "sheets").iterdir()} == done

    # the file repaired: only that sheet is computed now
    before, after = blob_scene(150, 170)
    from tests.rasters import write_geotiff

    from .standins import ORIGIN, PIXEL

    bad.unlink()
    write_geotiff(bad, after[:, 50:97, 60:111], origin=(ORIGIN[0] + 60 * PIXEL, ORIGIN[1] - 50 * PIXEL), pixel_size=PIXEL)
    res = sheets_cli("--sheets", scene, "--run", run, "--model", model, "--out-vector", out, "--progress", "none")
    assert res.returncode == 0, res.stderr
    assert all(_snapshot(run / "sheets" / name) == snap for name, snap in done.items())
    assert (run / "sheets" / "r1c1" / "done.json").exists() and not (run / "failed" / "r1c1.json").exists()


def test_option_mistakes_before_any_work(scene, tmp_path):
    with pytest.raises(UserError, match="--min-area"):
        run_sheets(scene, tmp_path / "run", predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg",
                   min_area=float("nan"))
    with pytest.raises(UserError, match=r"\.vrt"):
        run_sheets(scene, tmp_path / "run", predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg",
                   out_mask=tmp_path / "mask.tif")
    assert not (tmp_path / "run").exists()


def test_shards_then_merge_only_equal_one_run(scene, tmp_path):
    run = tmp_path / "run"
    for i in (1, 2, 3):
        res = run_sheets(scene, run, predictor=BlurDifference(), shard=(i, 3), **TILING)
        assert res.exit_code == 0 and len(res.status) == 3 and set(res.status.values()) == {"done"}
    assert not (run / "status.gpkg").exists()  # shards compute; the merge writes the status
    res = run_sheets(scene, run, predictor=BlurDifference(), out_vector=tmp_path / "m.fgb", merge_only=True,
                     **TILING)
    assert res.exit_code == 0 and res.stats["done"] == 9
    mask, polygons = _detect_on_mosaic(run, tmp_path)
    merged = pyogrio.read_dataframe(tmp_path / "m.fgb").sort_values("id")  # FlatGeobuf stores by its index
    assert len(merged) == len(polygons) and list(merged["id"]) == list(polygons["id"])
    assert all(a.equals(b) for a, b in zip(merged.geometry, polygons.geometry))


def test_cancel_leaves_a_resumable_run(scene, tmp_path):
    run, seen = tmp_path / "run", []

    def cancel_after_three(event):
        seen.append(event)

    with pytest.raises(Cancelled):
        run_sheets(scene, run, predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", workers=1,
                   on_event=cancel_after_three, is_cancelled=lambda: sum(e["event"] == "sheet" for e in seen) >= 3,
                   **TILING)
    status = pyogrio.read_dataframe(run / "status.gpkg")
    assert sorted(status["status"].value_counts().items()) == [("done", 3), ("pending", 6)]
    assert not (tmp_path / "m.gpkg").exists()
    res = run_sheets(scene, run, predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", workers=1, **TILING)
    assert res.exit_code == 0 and sum(r == "done" for r in res.status.values()) == 9


def test_vector_sheet_index_with_templates(scene, tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    ids = ["r0c0", "r0c1", "r1c0", "r1c1"]
    index = gpd.GeoDataFrame({"sheet_no": ids}, geometry=[box(0, 0, 1, 1)] * 4, crs="EPSG:32633")
    index.to_file(tmp_path / "grid.gpkg", driver="GPKG")
    res = run_sheets(tmp_path / "grid.gpkg", tmp_path / "run", predictor=BlurDifference(), id_field="sheet_no",
                     before=str(scene.parent / "before_{sheet_no}.tif"), after=str(scene.parent / "after_{sheet_no}.tif"),
                     out_vector=tmp_path / "m.gpkg", workers=1, **TILING)
    assert res.exit_code == 0 and sorted(res.status) == ids
    assert set(pyogrio.read_dataframe(tmp_path / "m.gpkg")["sheet"]) <= set(ids)


def test_one_band_of_the_sheets_is_a_warning_naming_them(scene, tmp_path):
    events = []
    res = run_sheets(scene, tmp_path / "run", predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg",
                     workers=1, bands_before=[2], bands_after=[2], on_event=events.append, **TILING)
    assert res.exit_code == 0
    warned = [e["message"] for e in events if e["event"] == "log" and e["level"] == "warning"]
    assert [m.split(":")[0] for m in warned] == [f"the before sheets ({scene.parent / 'before_r0c0.tif'}, …)",
                                                 f"the after sheets ({scene.parent / 'after_r0c0.tif'}, …)"], warned
    assert all("band 2 of 3 chosen; band 2 is copied to red, green and blue" in m for m in warned)


def test_a_raster_changed_after_its_sheet_finished_is_refused(scene, tmp_path):
    kw = dict(predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", workers=1, **TILING)
    run_sheets(scene, tmp_path / "run", **kw)
    changed = scene.parent / "after_r2c2.tif"
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(UserError, match="after_r2c2.tif: changed since sheet r2c2"):
        run_sheets(scene, tmp_path / "run", **kw)


def test_after_on_another_grid_is_warped_exactly_and_no_change_gives_an_empty_layer(tmp_path):
    from tests.rasters import write_geotiff

    from .standins import PIXEL

    before, after = blob_scene(120, 130, seed=4)
    csv_path = cut(before, after, tmp_path / "in", [41], [70])
    for sid in ("r0c0", "r0c1", "r1c0", "r1c1"):  # the after sheets shifted by 0.3 px: warped
        path = tmp_path / "in" / f"after_{sid}.tif"
        with rasterio.open(path) as ds:
            arr, t = ds.read(), ds.transform
        write_geotiff(path, arr, origin=(t.c + 0.3 * PIXEL, t.f), pixel_size=PIXEL)
    run, events = tmp_path / "run", []
    res = run_sheets(csv_path, run, predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg",
                     out_mask=tmp_path / "m.vrt", workers=1, on_event=events.append, **TILING)
    assert res.exit_code == 0
    # The log names the user's sheets, not the run's mosaic VRTs.
    said = [e["message"] for e in events if e["event"] == "log"]
    first_after = sorted((tmp_path / "in").glob("after_*.tif"))[0]
    assert f"the after sheets ({first_after}, …): resampled onto the before's grid (bilinear)" in said, said
    assert not [m for m in said if ".vrt" in m]
    mask, polygons = _detect_on_mosaic(run, tmp_path)
    with rasterio.open(tmp_path / "m.vrt") as ds:
        assert ds.read(1).tobytes() == mask.tobytes()
    merged = pyogrio.read_dataframe(tmp_path / "m.gpkg")
    assert len(merged) == len(polygons) > 3
    assert all(a.equals(b) for a, b in zip(merged.geometry, polygons.geometry))

    res = run_sheets(csv_path, tmp_path / "run0", predictor=BlurDifference(gain=0.0), out_vector=tmp_path / "e.shp",
                     workers=1, **TILING)
    empty = pyogrio.read_dataframe(tmp_path / "e.shp")
    assert res.exit_code == 0 and len(empty) == 0 and "sheet" in empty.columns


@pytest.mark.slow
def test_ctrl_c_exit_130_and_the_same_command_resumes(tmp_path, model):
    before, after = blob_scene(100, 110)
    scene = cut(before, after, tmp_path / "in", [50], [60])  # 2 x 2 sheets
    run, out = tmp_path / "run", tmp_path / "m.gpkg"
    argv = [sys.executable, "-m", "engine", "sheets", "--sheets", str(scene), "--run", str(run), "--model", str(model),
            "--out-vector", str(out), "--workers", "1", "--tile-size", "64", "--overlap", "16", "--progress", "jsonl"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if json.loads(line)["event"] == "sheet":
            proc.send_signal(signal.SIGINT)
            break
    proc.stdout.read()
    assert proc.wait(timeout=120) == 130, proc.stderr.read()
    assert not out.exists()
    finished = {p.parent.name: _snapshot(p.parent) for p in run.glob("sheets/*/done.json")}
    assert 1 <= len(finished) < 4
    res = subprocess.run(argv[:-2] + ["--progress", "none"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert all(_snapshot(run / "sheets" / name) == snap for name, snap in finished.items())
    assert out.exists()


def test_a_worker_lost_mid_sheet_all_sheets_finish(scene, tmp_path):
    from .standins import DieOnce

    marker = tmp_path / "died"
    res = run_sheets(scene, tmp_path / "run", predictor=DieOnce(str(marker)), out_vector=tmp_path / "m.gpkg",
                     workers=2, **TILING)
    assert marker.exists()  # a worker did die mid-sheet
    assert res.exit_code == 0 and set(res.status.values()) == {"done"} and len(res.status) == 9
    assert not [p for p in (tmp_path / "run" / "sheets").iterdir() if p.name.startswith(".")]


def test_skip_missing_reports_the_sheet_as_skipped(scene, tmp_path):
    (scene.parent / "after_r0c2.tif").unlink()
    with pytest.raises(UserError, match="r0c2"):
        run_sheets(scene, tmp_path / "run", predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", **TILING)
    res = run_sheets(scene, tmp_path / "run", predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", workers=1,
                     skip_missing=True, **TILING)
    assert res.exit_code == 0 and res.status["r0c2"] == "skipped"
    status = pyogrio.read_dataframe(tmp_path / "run" / "status.gpkg").set_index("id")
    assert status.loc["r0c2", "status"] == "skipped" and "after_r0c2.tif" in status.loc["r0c2", "message"]
