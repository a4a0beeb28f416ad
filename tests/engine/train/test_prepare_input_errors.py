"""prepare refuses what would silently make a useless dataset or a traceback: rasters
damaged in a late tile (one line naming the file and window) and vector labels that touch
no sheet (one line with both extents); nothing is left behind."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
from rasterio.features import shapes
from shapely.affinity import translate
from shapely.geometry import shape

from engine.train.synth import write_scene_pair
from tests.cli_errors import one_line_error
from tests.rasters import damaged_geotiff

from .conftest import engine


def _vector_labels(label_tif: Path, out: Path, shift_x: float = 0.0) -> Path:
    """The change areas of a label raster as polygons (moved ``shift_x`` metres east)."""
    with rasterio.open(label_tif) as ds:
        polys = [translate(shape(g), xoff=shift_x) for g, v in shapes(ds.read(1), transform=ds.transform) if v > 0]
        crs = ds.crs
    assert polys
    gpd.GeoDataFrame({"id": range(len(polys))}, geometry=polys, crs=crs).to_file(out)
    return out


def _nothing_left(folder: Path, out: Path) -> None:
    assert not out.exists() and not list(folder.glob(f".{out.name}*"))


@pytest.fixture()
def scene(tmp_path) -> dict:
    return write_scene_pair(tmp_path, "s", 256, seed=5, origin=(400_000.0, 5_100_000.0))


def _prepare(scene: dict, out: Path, **paths) -> object:
    p = {**scene, **paths}
    return engine("prepare", "--before", str(p["before"]), "--after", str(p["after"]), "--labels", str(p["label"]),
                  "--out", str(out), "--tile-size", "64", "--progress", "jsonl")


@pytest.mark.parametrize("role", ["before", "after", "label"])
@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_damaged_late_tile_is_one_line_naming_file_and_window(tmp_path, scene, role, how):
    with rasterio.open(scene[role]) as ds:
        array, transform = ds.read(), ds.transform
    bad = damaged_geotiff(tmp_path / f"{role}_{how}.tif", array, how=how, transform=transform)
    out = tmp_path / "ds"
    res = _prepare(scene, out, **{role: bad})
    line = one_line_error(res, str(bad), "cannot read", "truncated or damaged")
    assert "cols 192-255, rows 192-255" in line  # the last tile of the sheet: it failed late
    assert any(e["event"] == "progress" and e["done"] > 0 for e in map(json.loads, res.stdout.splitlines()))
    _nothing_left(tmp_path, out)


def test_vector_labels_that_touch_no_sheet_are_refused_with_both_extents(tmp_path, scene):
    far = _vector_labels(scene["label"], tmp_path / "far.gpkg", shift_x=50_000.0)
    out = tmp_path / "ds"
    line = one_line_error(_prepare(scene, out, label=far), str(far), "no label feature touches the sheet",
                           "raster extent (400000, 5099872, 400128, 5100000)", "EPSG:32633")
    assert "labels extent (45" in line  # the labels' own extent, 50 km east
    _nothing_left(tmp_path, out)


def test_vector_labels_on_the_sheet_still_work(tmp_path, scene):
    near = _vector_labels(scene["label"], tmp_path / "near.gpkg")
    out = tmp_path / "ds"
    res = _prepare(scene, out, label=near)
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "dataset.json").read_text())
    assert sum(meta["counts"][sp]["change_pixels"] for sp in ("train", "val", "test")) > 0


def _pairs(folder: Path, n: int, misplaced: set[int]) -> Path:
    rows = []
    for i in range(n):
        p = write_scene_pair(folder, f"m{i}", 128, seed=200 + i, index=i)
        labels = _vector_labels(p["label"], folder / f"m{i}.gpkg", shift_x=50_000.0 if i in misplaced else 0.0)
        rows.append({"before": p["before"].name, "after": p["after"].name, "labels": labels.name})
    table = folder / "sheets.csv"
    with open(table, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["before", "after", "labels"])
        w.writeheader()
        w.writerows(rows)
    return table


def test_pairs_warn_per_sheet_whose_labels_touch_nothing(tmp_path):
    table = _pairs(tmp_path, 3, misplaced={1})
    out = tmp_path / "ds"
    res = engine("prepare", "--pairs", str(table), "--out", str(out), "--tile-size", "64", "--progress", "jsonl")
    assert res.returncode == 0, res.stderr
    warnings = [e["message"] for e in map(json.loads, res.stdout.splitlines())
                if e["event"] == "log" and e["level"] == "warning"]
    flagged = [w for w in warnings if "no label feature touches" in w]
    assert len(flagged) == 1 and "m1.gpkg" in flagged[0] and "sheet m1 " in flagged[0], warnings


def test_pairs_refused_when_no_sheet_has_a_label(tmp_path):
    table = _pairs(tmp_path, 3, misplaced={0, 1, 2})
    out = tmp_path / "ds"
    res = engine("prepare", "--pairs", str(table), "--out", str(out), "--tile-size", "64", "--progress", "none")
    one_line_error(res, "m0.gpkg", "no label feature touches the sheet", "raster extent")
    _nothing_left(tmp_path, out)
