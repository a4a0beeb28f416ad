"""The detect command with the real HRMNet: JSON-lines protocol, output formats, empty
result, overwrite, progress modes."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from .conftest import ORIGIN, PIXEL, changed_pair, jsonl, run_cli


def _base(pair, model, *extra):
    before, after = pair
    return ["--before", before, "--after", after, "--model", model, *extra]


def test_jsonl_protocol_and_all_outputs(tmp_path, checkpoints):
    pair = changed_pair(tmp_path, size=(90, 150))
    out = tmp_path / "out"
    out.mkdir()
    res = run_cli(*_base(pair, checkpoints["random"], "--out-vector", out / "v.gpkg", "--out-probability",
                         out / "p.tif", "--out-mask", out / "m.tif", "--progress", "jsonl"))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    events = jsonl(res.stdout)  # every line is one JSON object
    kinds = [e["event"] for e in events]
    start = events[kinds.index("start")]
    assert (start["width"], start["height"]) == (150, 90)
    assert start["crs"] == "EPSG:32633"
    assert start["tile_size"] == 96 and start["overlap"] == 16  # defaults from the checkpoint's metadata
    assert start["tiles"] == 2 and start["device"] == "cpu" and start["precision"] in ("fp32", "bf16")
    assert start["radiometry"]["before"]["mode"] == "checkpoint"
    prog = [e for e in events if e["event"] == "progress" and e["stage"] == "detect"]
    assert prog[-1] == {"event": "progress", "done": 2, "total": 2, "stage": "detect"}
    done = events[-1]
    assert done["event"] == "done"
    assert done["outputs"] == {"vector": str(out / "v.gpkg"), "probability": str(out / "p.tif"),
                               "mask": str(out / "m.tif")}
    assert done["stats"]["pixels"] == 150 * 90 and done["stats"]["polygons"] >= 0
    assert sorted(p.name for p in out.iterdir()) == ["m.tif", "p.tif", "v.gpkg"]
    with rasterio.open(out / "p.tif") as p, rasterio.open(pair[0]) as b:
        assert p.crs == b.crs and p.transform == b.transform and p.dtypes[0] == "uint8" and p.nodata == 255
        prob = p.read(1)
    assert prob.max() <= 254


@pytest.mark.parametrize("ext", [".shp", ".fgb", ".geojson"])
def test_vector_formats_hold_the_changed_area_in_the_before_crs(tmp_path, checkpoints, ext):
    # the "all" model calls every pixel change: one polygon = the area both dates cover
    before, after = changed_pair(tmp_path, size=(60, 70), square=(5, 5, 10, 10))
    with rasterio.open(after) as ds:
        arr = ds.read()
    from tests.rasters import write_geotiff

    write_geotiff(after, arr[:, 10:, :50], origin=(ORIGIN[0], ORIGIN[1] - 10 * PIXEL))  # 10 rows down, 20 cols fewer
    target = tmp_path / f"changes{ext}"
    res = run_cli(*_base((before, after), checkpoints["all"], "--out-vector", target, "--progress", "none"))
    assert res.returncode == 0, res.stderr
    gdf = gpd.read_file(target)
    assert len(gdf) == 1 and gdf.crs.to_epsg() == 32633
    np.testing.assert_allclose(gdf.total_bounds, (ORIGIN[0], ORIGIN[1] - 60 * PIXEL, ORIGIN[0] + 50 * PIXEL,
                                                  ORIGIN[1] - 10 * PIXEL), atol=1e-6)
    assert gdf["area_m2"].iloc[0] == pytest.approx(50 * 50 * PIXEL ** 2)
    assert gdf["max_prob"].iloc[0] == pytest.approx(1.0, abs=0.01)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_empty_result_is_a_valid_empty_layer(tmp_path, checkpoints):
    pair = changed_pair(tmp_path, size=(60, 64), square=(5, 5, 10, 10))
    res = run_cli(*_base(pair, checkpoints["none"], "--out-vector", tmp_path / "none.gpkg", "--out-mask",
                         tmp_path / "m.tif", "--probability-dtype", "float32", "--progress", "jsonl"))
    assert res.returncode == 0, res.stderr
    gdf = gpd.read_file(tmp_path / "none.gpkg")
    assert len(gdf) == 0 and gdf.crs.to_epsg() == 32633
    assert {"id", "area_m2", "mean_prob", "max_prob"} <= set(gdf.columns)
    done = jsonl(res.stdout)[-1]
    assert done["stats"]["polygons"] == 0 and done["stats"]["changed_area_m2"] == 0
    with rasterio.open(tmp_path / "m.tif") as m:
        assert m.read(1).max() == 0


def test_existing_outputs_are_refused_unless_overwrite(tmp_path, checkpoints):
    pair = changed_pair(tmp_path, size=(60, 70), square=(5, 5, 10, 10))
    target = tmp_path / "p.tif"
    target.write_bytes(b"keep me")
    args = _base(pair, checkpoints["none"], "--out-probability", target, "--progress", "none")
    res = run_cli(*args)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: {target}: exists (use --overwrite to replace it)"]
    assert target.read_bytes() == b"keep me"
    res = run_cli(*args, "--overwrite", "--progress", "bar")
    assert res.returncode == 0, res.stderr
    assert "100%" in res.stderr  # the tqdm bar
    with rasterio.open(target) as ds:
        assert ds.width == 70


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupt_while_running_leaves_nothing(tmp_path, checkpoints, sig):
    import signal
    import subprocess
    import sys

    from .conftest import ROOT

    # 400 small tiles at batch 1: the run is still busy when the signal arrives.
    pair = changed_pair(tmp_path, size=(960, 960))
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "engine", "detect", "--before", pair[0], "--after", pair[1],
                             "--model", checkpoints["random"], "--out-vector", out / "v.shp", "--out-probability",
                             out / "p.tif", "--progress", "jsonl", "--batch-size", "1", "--tile-size", "64",
                             "--overlap", "16"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait until the tiles are being processed
            if '"progress"' in line and '"done": 1' in line:
                break
        assert list(out.iterdir()), "temporary outputs exist while running"
        proc.send_signal(getattr(signal, sig))
        rest, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert '"event": "error"' in rest
    assert list(out.iterdir()) == []
