"""prepare with partial labels (--labelled-area), footprints of two dates, --gsd for rasters
without georeference, and chosen validation sheets; real GeoTIFFs and PNGs, the real CLI."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from PIL import Image
from shapely.geometry import box

from engine.train.footprints import change_polygons
from engine.train.synth import write_scene_pair
from tests.engine.train.test_prepare import run_engine
from tests.rasters import UTM33N, textured, write_geotiff

X0, Y0 = 400_000.0, 5_100_000.0  # top-left corner of the sheet; 0.5 m pixels


@pytest.fixture(scope="module")
def sheet(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("sheet")
    return write_scene_pair(folder, "s", 256, seed=11, origin=(X0, Y0))


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def listed(out: Path, split: str) -> list[str]:
    return (out / split / "list" / f"{split}.txt").read_text().split()


def test_an_extent_cuts_tiles_only_where_they_meet_it_and_masks_the_rest(sheet, tmp_path):
    out = tmp_path / "ds"
    # columns 0..140, rows 0..128 of the sheet (0.5 m pixels)
    area = f"{X0},{Y0 - 64},{X0 + 70},{Y0}"
    res = run_engine("prepare", "--before", str(sheet["before"]), "--after", str(sheet["after"]), "--labels",
                     str(sheet["label"]), "--out", str(out), "--tile-size", "64", "--split", "1,0,0",
                     "--labelled-area", area, "--progress", "none")
    assert res.returncode == 0, res.stderr
    names = sorted(listed(out, "train"))
    assert names == sorted(f"s_{r}_{c}.tif" for r in (0, 64) for c in (0, 64, 128))
    full = read(sheet["label"]) > 0
    for name in names:
        r, c = (int(v) for v in Path(name).stem.split("_")[1:])
        mask, label = read(out / "train" / "labelled" / name), read(out / "train" / "label" / name)
        expect = np.zeros((64, 64), bool)
        expect[:, : max(0, min(64, 140 - c))] = True
        assert np.array_equal(mask == 255, expect), name
        assert np.array_equal(label == 255, full[r:r + 64, c:c + 64] & expect), name  # no change outside
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["label"]["labelled"] == {"folder": "{split}/labelled/NAME.tif", "labelled": 255,
                                         "not_labelled": 0, "area": area}
    assert meta["counts"]["train"]["unlabelled_pixels"] == 2 * 64 * (64 - 12)


def test_a_vector_area_in_another_crs_and_an_area_off_the_rasters(sheet, tmp_path):
    area = tmp_path / "checked.gpkg"
    # the bottom-right quadrant, drawn in WGS 84
    quad = gpd.GeoSeries([box(X0 + 64, Y0 - 128, X0 + 128, Y0 - 64)], crs=UTM33N).to_crs("EPSG:4326")
    gpd.GeoDataFrame(geometry=quad).to_file(area)
    out = tmp_path / "ds"
    args = ["prepare", "--before", str(sheet["before"]), "--after", str(sheet["after"]), "--labels",
            str(sheet["label"]), "--tile-size", "128", "--split", "1,0,0", "--progress", "none"]
    res = run_engine(*args, "--out", str(out), "--labelled-area", str(area))
    assert res.returncode == 0, res.stderr
    assert listed(out, "train") == ["s_128_128.tif"]
    assert read(out / "train" / "labelled" / "s_128_128.tif").mean() > 250  # nearly all of it (reprojected)
    far = run_engine(*args, "--out", str(tmp_path / "far"), "--labelled-area", "0,0,10,10")
    assert far.returncode == 2 and far.stderr.count("\n") <= 2 and "meets no sheet" in far.stderr
    assert not (tmp_path / "far").exists()


def _png_pair(folder: Path) -> dict:
    folder.mkdir()
    paths = {}
    for role, seed in (("A", 1), ("B", 2)):
        paths[role] = folder / f"{role}.png"
        Image.fromarray(np.moveaxis(textured(128, 128, 3, seed=seed), 0, -1).copy()).save(paths[role])
    label = np.zeros((128, 128), np.uint8)
    label[10:30, 10:30] = 255
    label[100:120, 10:30] = 255
    paths["label"] = folder / "label.png"
    Image.fromarray(label).save(paths["label"])
    return paths


def test_rasters_without_georeference_need_gsd_and_read_areas_in_pixels(tmp_path):
    png = _png_pair(tmp_path / "png")
    args = ["prepare", "--before", str(png["A"]), "--after", str(png["B"]), "--labels", str(png["label"]),
            "--tile-size", "64", "--split", "1,0,0", "--progress", "none"]
    refused = run_engine(*args, "--out", str(tmp_path / "no"))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--gsd" in refused.stderr
    assert str(png["A"]) in refused.stderr and not (tmp_path / "no").exists()
    out = tmp_path / "ds"
    res = run_engine(*args, "--out", str(out), "--gsd", "0.5", "--labelled-area", "0,0,128,64")  # the top half
    assert res.returncode == 0, res.stderr
    assert "NotGeoreferencedWarning" not in res.stderr and "Traceback" not in res.stderr
    assert [line for line in res.stderr.splitlines() if "no georeference" in line] == [
        f"warning: {png['A']}: no georeference; tiles are written without one, at the --gsd 0.5 m given, and "
        "vector labels or areas are read in pixels (x = column, y = row from the top)"]
    assert json.loads((out / "dataset.json").read_text())["gsd"] == 0.5
    assert sorted(listed(out, "train")) == ["A_0_0.tif", "A_0_64.tif"]
    assert read(out / "train" / "label" / "A_0_0.tif")[10:30, 10:30].min() == 255  # the top square kept
    # Reading the tiles (training, evaluation) prints no rasterio warning about their missing georeference.
    from tests.engine.train.test_evaluate import constant_model

    model = constant_model(tmp_path / "m.safetensors", 0.0)
    ev = run_engine("evaluate", "--data", str(out), "--split", "train", "--model", str(model), "--device", "cpu",
                    "--progress", "none")
    assert ev.returncode == 0 and ev.stderr == "", ev.stderr
    georef = run_engine("prepare", "--before", str(write_geotiff(tmp_path / "g.tif", textured(64, 64, 3))),
                        "--after", str(write_geotiff(tmp_path / "g2.tif", textured(64, 64, 3, seed=3))),
                        "--labels", str(write_geotiff(tmp_path / "gl.tif", np.zeros((64, 64), np.uint8))),
                        "--tile-size", "64", "--gsd", "0.5", "--out", str(tmp_path / "g"), "--progress", "none")
    assert georef.returncode == 2 and "only for rasters without georeference" in georef.stderr


def test_validation_sheets_by_name_or_by_a_split_column(tmp_path):
    rows = []
    for i in range(3):
        p = write_scene_pair(tmp_path, f"m{i}", 128, seed=100 + i, index=i)
        rows.append({"before": p["before"].name, "after": p["after"].name, "labels": p["label"].name,
                     "split": "val" if i == 0 else ""})
    table = tmp_path / "sheets.csv"
    with open(table, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["before", "after", "labels", "split"])
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "by_column"
    res = run_engine("prepare", "--pairs", str(table), "--out", str(out), "--tile-size", "64", "--progress", "none")
    assert res.returncode == 0, res.stderr
    sources = {s["name"]: s["split"] for s in json.loads((out / "dataset.json").read_text())["sources"]}
    assert sources == {"m0": "val", "m1": "train", "m2": "train"}
    out = tmp_path / "by_name"
    res = run_engine("prepare", "--pairs", str(table), "--out", str(out), "--tile-size", "64", "--val", "m2",
                     "--test", "m1", "--progress", "none")
    assert res.returncode == 0, res.stderr
    sources = {s["name"]: s["split"] for s in json.loads((out / "dataset.json").read_text())["sources"]}
    assert sources == {"m0": "val", "m1": "test", "m2": "val"}  # the column and --val both count
    bad = run_engine("prepare", "--pairs", str(table), "--out", str(tmp_path / "bad"), "--val", "m9",
                     "--progress", "none")
    assert bad.returncode == 2 and "--val m9: no such sheet (sheets: m0, m1, m2)" in bad.stderr


# ----------------------------------------------------------------------------- footprints


def test_what_counts_as_change_between_two_footprint_layers():
    old = box(0, 0, 10, 10)
    redrawn = box(0.6, -0.4, 10.5, 9.7)  # the same building, outline within 1 m
    gone = box(40, 0, 50, 10)
    new = box(20, 20, 30, 30)
    extended = box(60, 0, 70, 10)
    extension = box(60, 0, 76, 10)  # 6 m added on one side
    before = gpd.GeoSeries([old, gone, extended], crs=UTM33N)
    after = gpd.GeoSeries([redrawn, new, extension], crs=UTM33N)
    changes = change_polygons(before, after, 1.0)
    appeared = changes[changes["change"] == "appeared"].geometry
    vanished = changes[changes["change"] == "vanished"].geometry
    assert len(vanished) == 1 and vanished.iloc[0].equals(gone)
    assert len(appeared) == 2
    assert any(g.equals(new) for g in appeared)  # a new building: all of it
    part = [g for g in appeared if not g.equals(new)][0]
    assert part.bounds == pytest.approx((71, 0, 76, 10))  # the extension, less the 1 m tolerance
    assert change_polygons(before, after, 0.0).geometry.area.sum() > changes.geometry.area.sum()


def test_prepare_from_footprints_labels_appeared_and_vanished_buildings(sheet, tmp_path):
    def building(col, row, size=20):  # a square of `size` px at (col, row) px of the sheet
        return box(X0 + col * 0.5, Y0 - (row + size) * 0.5, X0 + (col + size) * 0.5, Y0 - row * 0.5)

    kept = building(20, 20)
    corners = [building(0, 0, 4), building(196, 196, 4)]  # in both layers: their common extent is 0..200 px
    before = gpd.GeoDataFrame(geometry=[kept, building(150, 20)] + corners, crs=UTM33N)
    redrawn = kept.buffer(0.3, join_style=2)  # the same building drawn 0.3 m larger
    after = gpd.GeoDataFrame(geometry=[redrawn, building(20, 150)] + corners, crs=UTM33N)
    b, a = tmp_path / "b.gpkg", tmp_path / "a.fgb"
    before.to_crs("EPSG:4326").to_file(b)  # any CRS, any format GDAL writes
    after.to_file(a)
    out = tmp_path / "ds"
    res = run_engine("prepare", "--before", str(sheet["before"]), "--after", str(sheet["after"]),
                     "--footprints-before", str(b), "--footprints-after", str(a), "--tile-size", "64", "--split",
                     "1,0,0", "--out", str(out), "--progress", "jsonl")
    assert res.returncode == 0, res.stderr
    assert any("1 appeared, 1 vanished" in e for e in res.stdout.splitlines()), res.stdout
    label = np.zeros((256, 256), bool)
    mask = np.zeros((256, 256), bool)
    for name in listed(out, "train"):
        r, c = (int(v) for v in Path(name).stem.split("_")[1:])
        label[r:r + 64, c:c + 64] = read(out / "train" / "label" / name) == 255
        mask[r:r + 64, c:c + 64] = read(out / "train" / "labelled" / name) == 255
    assert not label[15:45, 15:45].any()  # redrawn: no change
    assert label[22:38, 152:168].all() and label[152:168, 22:38].all()  # vanished, appeared
    # labelled: the layers' common extent, rows and columns 0..200 (the corner squares)
    assert mask[:200, :200].all() and not mask[200:, :].any() and not mask[:, 200:].any()
    assert label.sum() == 2 * 20 * 20
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["label"]["footprints"]["tolerance_m"] == 1.0
    assert meta["label"]["labelled"]["area"] == "the footprint layers' common extent"
    assert all(s["labels"] == "footprints" for s in meta["sources"])

