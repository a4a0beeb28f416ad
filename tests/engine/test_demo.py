"""The demonstration: bundled data present, scoring and preview, and the full `demo` command."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from PIL import Image

from engine.demo import DEMO_DATA, DEMO_MODEL
from engine.demo.run import preview, score_mask

from ..rasters import textured, write_geotiff

ROOT = Path(__file__).resolve().parents[2]


def test_bundled_scene_is_a_georeferenced_2048_pair():
    for name in ("before", "after", "truth"):
        with rasterio.open(DEMO_DATA / f"{name}.tif") as src:
            assert src.width >= 2048 and src.height >= 2048
            assert src.crs.to_epsg() == 32633


def test_score_mask_counts_pixels(tmp_path):
    truth = np.zeros((64, 64), np.uint8)
    truth[10:20, 10:20] = 1
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 15:25] = 1  # half overlap: tp 50, fp 50, fn 50
    mask[0, :] = 255  # nodata counts as no change
    write_geotiff(tmp_path / "t.tif", truth)
    write_geotiff(tmp_path / "m.tif", mask)
    s = score_mask(tmp_path / "m.tif", tmp_path / "t.tif", window_rows=7)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(0.5) and s["f1"] == pytest.approx(0.5)


def test_preview_is_three_panels(tmp_path):
    img = textured(200, 300)
    write_geotiff(tmp_path / "b.tif", img)
    write_geotiff(tmp_path / "a.tif", img)
    mask = np.zeros((200, 300), np.uint8)
    mask[50:100, 50:100] = 1
    write_geotiff(tmp_path / "m.tif", mask)
    preview(tmp_path / "b.tif", tmp_path / "a.tif", tmp_path / "m.tif", tmp_path / "m.tif", tmp_path / "p.png", edge=150)
    with Image.open(tmp_path / "p.png") as png:
        w, h = png.size
    assert w > 3 * 150 and h > 100


@pytest.mark.skipif(not DEMO_MODEL.exists(), reason="demo model not trained yet")
def test_demo_command_end_to_end(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "engine", "demo", "--out", str(out), "--progress", "none"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "polygons found" in r.stdout and "F1 vs truth" in r.stdout
    for name in ("changes.gpkg", "changes.shp", "changes.dbf", "probability.tif", "mask.tif", "preview.png"):
        assert (out / name).is_file(), name
    polys = gpd.read_file(out / "changes.shp")
    assert len(polys) > 50 and polys.crs.to_epsg() == 32633
    f1 = float(r.stdout.split("F1 vs truth")[1].split(":")[1].split()[0])
    assert f1 >= 0.8  # measured 0.876 (see README: the demo model)
