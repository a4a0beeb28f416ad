"""Dataset preparation: sheets -> the authors' tile layout, on real GeoTIFFs."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import shapes
from shapely.geometry import shape

from engine.errors import UserError
from engine.events import Events
from engine.train.prepare import (
    Sheet,
    assign_bands,
    assign_bands_multi,
    assign_sheets,
    parse_split,
    prepare_dataset,
    read_pairs,
    tile_origins,
)
from engine.train.synth import make_scene, write_scene_pair
from tests.rasters import write_geotiff

ROOT = Path(__file__).resolve().parents[3]
SPLITS = ("train", "val", "test")


def run_engine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def sheet(tmp_path_factory) -> dict:
    """One 256x256 synthetic sheet (UTM 33N, 0.5 m) with its arrays."""
    folder = tmp_path_factory.mktemp("sheet")
    scene = make_scene(256, seed=11)
    paths = write_scene_pair(folder, "s", 256, seed=11, scene=scene, origin=(400_000.0, 5_100_000.0))
    return {**paths, "scene": scene, "folder": folder}


def tiles_of(out: Path, split: str) -> list[str]:
    return (out / split / "list" / f"{split}.txt").read_text().split()


def collect(out: Path) -> dict:
    return {sp: tiles_of(out, sp) for sp in SPLITS}


def recording_events() -> tuple[Events, list]:
    seen: list = []
    return Events(seen.append), seen


# ----------------------------------------------------------------------------- pure helpers

def test_tile_origins_cover_the_sheet_and_end_flush():
    assert tile_origins(256, 64, 64) == [0, 64, 128, 192]
    assert tile_origins(300, 128, 128) == [0, 128, 172]
    assert tile_origins(100, 128, 128) == []


def test_bands_of_one_sheet_never_overlap_across_splits():
    starts = tile_origins(1000, 64, 32)
    splits = assign_bands(starts, 64, (0.6, 0.3, 0.1), seed=0)
    assert set(splits) - {-1} == {0, 1, 2}
    kept = [(s, sp) for s, sp in zip(starts, splits) if sp >= 0]
    for s1, a in kept:
        for s2, b in kept:
            if a != b:
                assert abs(s1 - s2) >= 64


def test_bands_are_pooled_over_sheets_so_small_sheets_still_fill_every_split():
    result = assign_bands_multi([[0, 64], [0, 64]], 64, (0.6, 0.3, 0.1), seed=0)
    assert sorted(sp for rows in result for sp in rows) == [0, 0, 1, 2]


def test_whole_sheets_go_to_splits_in_about_the_requested_shares():
    result = assign_sheets([10] * 20, (0.6, 0.3, 0.1), seed=1)
    assert [result.count(i) for i in range(3)] == [12, 6, 2]
    assert assign_sheets([10] * 20, (0.6, 0.3, 0.1), seed=1) == result  # seeded


@pytest.mark.parametrize("text", ["0.5,0.5", "0.7,0.4,0.1", "a,b,c", "0,0.5,0.5", "-0.1,0.6,0.5"])
def test_bad_split_is_refused(text):
    with pytest.raises(UserError, match="--split"):
        parse_split(text)


# ----------------------------------------------------------------------------- one sheet

def test_one_sheet_is_split_by_regions_into_georeferenced_tiles(sheet, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    counts = prepare_dataset([Sheet(sheet["before"], sheet["after"], sheet["label"])], out, tile_size=64,
                             stride=64, split=(0.5, 0.25, 0.25), seed=3)
    tiles = collect(out)
    assert all(tiles[sp] for sp in SPLITS)
    assert sum(len(t) for t in tiles.values()) == 16  # 4 x 4 tiles, stride = tile: nothing dropped
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["split_by"] == "region" and meta["crs"] == "EPSG:32633" and meta["gsd"] == 0.5
    assert meta["bands"]["count"] == 3 and meta["bands"]["dtype"] == "uint8"
    assert {sp: meta["counts"][sp]["tiles"] for sp in SPLITS} == {sp: len(tiles[sp]) for sp in SPLITS} == \
        {sp: counts[sp]["tiles"] for sp in SPLITS}
    rows = {sp: set() for sp in SPLITS}
    scene = sheet["scene"]
    for sp in SPLITS:
        for name in tiles[sp]:
            with rasterio.open(out / sp / "A" / name) as a, rasterio.open(out / sp / "label" / name) as lab, \
                    rasterio.open(out / sp / "B" / name) as b:
                assert a.crs.to_epsg() == 32633 and a.res == (0.5, 0.5) and a.shape == (64, 64)
                # the tile sits where it was cut from, and holds those pixels
                col = int(round((a.bounds.left - 400_000.0) / 0.5))
                row = int(round((5_100_000.0 - a.bounds.top) / 0.5))
                np.testing.assert_array_equal(a.read(), scene.before[:, row:row + 64, col:col + 64])
                np.testing.assert_array_equal(b.read(), scene.after[:, row:row + 64, col:col + 64])
                np.testing.assert_array_equal(lab.read(1), scene.label[row:row + 64, col:col + 64])
                assert lab.dtypes[0] == "uint8"
                rows[sp].add(row)
    # a band of tile rows belongs to one split only
    assert not (rows["train"] & rows["val"] or rows["train"] & rows["test"] or rows["val"] & rows["test"])


def test_overlapping_tiles_never_cross_a_split_border(sheet, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    counts = prepare_dataset([Sheet(sheet["before"], sheet["after"], sheet["label"])], out, tile_size=64,
                             stride=32, split=(0.6, 0.3, 0.1), seed=0)
    boxes = {sp: [] for sp in SPLITS}
    for sp in SPLITS:
        for name in tiles_of(out, sp):
            with rasterio.open(out / sp / "A" / name) as ds:
                boxes[sp].append(ds.bounds)
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                for p in boxes[a]:
                    for q in boxes[b]:
                        overlap_x = min(p.right, q.right) - max(p.left, q.left)
                        overlap_y = min(p.top, q.top) - max(p.bottom, q.bottom)
                        assert overlap_x <= 0 or overlap_y <= 0
    assert counts["dropped"]["split_border"] > 0


def test_vector_labels_in_another_crs_are_rasterized_onto_the_before(sheet, tmp_path):
    with rasterio.open(sheet["label"]) as ds:
        polys = [shape(g) for g, v in shapes(ds.read(1), transform=ds.transform) if v > 0]
        crs = ds.crs
    assert polys
    gdf = gpd.GeoDataFrame({"id": range(len(polys))}, geometry=polys, crs=crs).to_crs("EPSG:3857")
    vector = tmp_path / "changes.gpkg"
    gdf.to_file(vector)
    out = tmp_path / "ds"
    out.mkdir()
    prepare_dataset([Sheet(sheet["before"], sheet["after"], vector)], out, tile_size=128, stride=128,
                    split=(1.0, 0.0, 0.0), seed=0)
    got = np.zeros((256, 256), np.uint8)
    for name in tiles_of(out, "train"):
        row, col = (int(v) for v in Path(name).stem.rsplit("_", 2)[1:])
        with rasterio.open(out / "train" / "label" / name) as ds:
            got[row:row + 128, col:col + 128] = ds.read(1)
    truth = sheet["scene"].label > 0
    mask = got > 0
    assert set(np.unique(got)) <= {0, 255}
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9


def test_after_on_another_grid_is_read_on_the_before_grid(sheet, tmp_path):
    scene = sheet["scene"]
    # the after covers a larger area starting 8 px (4 m) further west and north
    bigger = np.pad(scene.after, ((0, 0), (8, 8), (8, 8)), mode="edge")
    after = write_geotiff(tmp_path / "after_big.tif", bigger, origin=(400_000.0 - 4, 5_100_000.0 + 4))
    out = tmp_path / "ds"
    out.mkdir()
    prepare_dataset([Sheet(sheet["before"], after, sheet["label"])], out, tile_size=128, stride=128,
                    split=(1.0, 0.0, 0.0), seed=0)
    for name in tiles_of(out, "train"):
        row, col = (int(v) for v in Path(name).stem.rsplit("_", 2)[1:])
        with rasterio.open(out / "train" / "B" / name) as ds:
            np.testing.assert_array_equal(ds.read(), scene.after[:, row:row + 128, col:col + 128])


def test_tiles_outside_the_after_are_dropped(sheet, tmp_path):
    # the after covers only the western half of the before
    half = write_geotiff(tmp_path / "after_half.tif", np.ascontiguousarray(sheet["scene"].after[:, :, :128]),
                         origin=(400_000.0, 5_100_000.0))
    out = tmp_path / "ds"
    out.mkdir()
    counts = prepare_dataset([Sheet(sheet["before"], half, sheet["label"])], out, tile_size=64, stride=64,
                             split=(1.0, 0.0, 0.0), seed=0)
    assert counts["dropped"]["nodata"] == 8 and counts["train"]["tiles"] == 8
    assert all(int(Path(n).stem.rsplit("_", 1)[1]) < 128 for n in tiles_of(out, "train"))


def test_keep_empty_zero_drops_every_tile_without_change(sheet, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    counts = prepare_dataset([Sheet(sheet["before"], sheet["after"], sheet["label"])], out, tile_size=64,
                             stride=64, split=(1.0, 0.0, 0.0), seed=0, keep_empty=0.0)
    names = tiles_of(out, "train")
    assert names and counts["dropped"]["empty"] > 0
    assert counts["train"]["empty_tiles"] == 0
    for name in names:
        with rasterio.open(out / "train" / "label" / name) as ds:
            assert ds.read().any()


def test_label_values_other_than_0_255_count_as_change_with_a_warning(sheet, tmp_path):
    odd = (sheet["scene"].label > 0).astype(np.uint8) * 7
    with rasterio.open(sheet["before"]) as ds:
        labels = write_geotiff(tmp_path / "odd.tif", odd, transform=ds.transform)
    out = tmp_path / "ds"
    out.mkdir()
    events, seen = recording_events()
    prepare_dataset([Sheet(sheet["before"], sheet["after"], labels)], out, tile_size=128, stride=128,
                    split=(1.0, 0.0, 0.0), seed=0, events=events)
    assert any(e["event"] == "log" and e["level"] == "warning" and "odd.tif" in e["message"] for e in seen)
    values = set()
    for name in tiles_of(out, "train"):
        with rasterio.open(out / "train" / "label" / name) as ds:
            values |= set(np.unique(ds.read()).tolist())
    assert values == {0, 255}


# ----------------------------------------------------------------------------- CLI

def _sheets_csv(folder: Path, n: int) -> Path:
    rows = []
    for i in range(n):
        p = write_scene_pair(folder, f"m{i}", 128, seed=100 + i, index=i)
        rows.append({"before": p["before"].name, "after": p["after"].name, "labels": p["label"].name})
    path = folder / "sheets.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["before", "after", "labels"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_cli_pairs_assign_whole_sheets_to_splits(tmp_path):
    table = _sheets_csv(tmp_path, 5)
    out = tmp_path / "ds"
    res = run_engine("prepare", "--pairs", str(table), "--out", str(out), "--tile-size", "64", "--progress", "jsonl")
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert events[-1]["event"] == "done"
    tiles = collect(out)
    sheets_in = {sp: {n.rsplit("_", 2)[0] for n in tiles[sp]} for sp in SPLITS}
    assert all(sheets_in[sp] for sp in SPLITS)
    assert sum(len(v) for v in sheets_in.values()) == 5  # each sheet in exactly one split
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["split_by"] == "sheet"
    assert sorted(s["name"] for s in meta["sources"]) == [f"m{i}" for i in range(5)]
    assert not list(tmp_path.glob(".ds.part*"))


def test_cli_single_sheet_and_refusal_of_a_non_empty_output(sheet, tmp_path):
    out = tmp_path / "ds"
    args = ["prepare", "--before", str(sheet["before"]), "--after", str(sheet["after"]), "--labels",
            str(sheet["label"]), "--out", str(out), "--tile-size", "128", "--progress", "none"]
    assert run_engine(*args).returncode == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    again = run_engine(*args)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--overwrite" in again.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


@pytest.mark.parametrize("case", ["missing", "size", "columns"])
def test_cli_bad_input_fails_with_one_line_and_writes_nothing(sheet, tmp_path, case):
    before, after, label = str(sheet["before"]), str(sheet["after"]), str(sheet["label"])
    extra: list[str] = []
    expect = ""
    if case == "missing":
        after = str(tmp_path / "nope.tif")
        expect = "nope.tif"
    elif case == "size":  # a label raster of another size, without georeference to match it
        label = str(write_geotiff(tmp_path / "small.tif", np.zeros((100, 120), np.uint8), crs=None))
        expect = "small.tif"
    elif case == "split":
        extra = ["--split", "0.7,0.4,0.1"]
        expect = "--split"
    elif case == "columns":
        table = tmp_path / "t.csv"
        table.write_text("before,after\na.tif,b.tif\n")
        expect = "labels"
    out = tmp_path / "ds"
    if case == "columns":
        args = ["prepare", "--pairs", str(table), "--out", str(out)]
    else:
        args = ["prepare", "--before", before, "--after", after, "--labels", label, "--out", str(out), *extra]
    res = run_engine(*args, "--tile-size", "64", "--progress", "none")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and expect in res.stderr and "Traceback" not in res.stderr
    assert not out.exists() and not list(tmp_path.glob(".ds.part*"))


def test_read_pairs_resolves_paths_relative_to_the_table(tmp_path):
    table = _sheets_csv(tmp_path, 2)
    sheets = read_pairs(table)
    assert [s.before for s in sheets] == [tmp_path / "m0_before.tif", tmp_path / "m1_before.tif"]
    (tmp_path / "m1_after.tif").unlink()
    out = tmp_path / "ds"
    out.mkdir()
    with pytest.raises(UserError, match="m1_after.tif"):
        prepare_dataset(read_pairs(table), out, tile_size=64, stride=64)


def test_labels_elsewhere_or_without_crs_are_refused(sheet, tmp_path):
    far = write_geotiff(tmp_path / "far.tif", sheet["scene"].label, origin=(600_000.0, 5_100_000.0))
    gpkg = tmp_path / "nocrs.gpkg"
    gpd.GeoDataFrame({"id": [1]}, geometry=[shape({"type": "Polygon", "coordinates": [[
        (400_010, 5_099_990), (400_020, 5_099_990), (400_020, 5_099_980), (400_010, 5_099_990)]]})]).to_file(gpkg)
    for labels, words in ((far, "does not overlap"), (gpkg, "no CRS")):
        out = tmp_path / f"ds_{labels.stem}"
        out.mkdir()
        with pytest.raises(UserError, match=words) as err:
            prepare_dataset([Sheet(sheet["before"], sheet["after"], labels)], out, tile_size=64, stride=64)
        assert str(err.value).startswith(str(labels))
        assert not any(out.iterdir())
