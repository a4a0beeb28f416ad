"""Seam merge: sheets polygonized alone (interior final, border pieces raw) and merged give
exactly the polygons of the whole raster polygonized at once, numbered the same way."""
from __future__ import annotations

import numpy as np
import pyogrio
import pytest
from affine import Affine
from scipy import ndimage

from engine.core.options import DetectOptions
from engine.core.plan import AreaPlan
from engine.sheets.job import _polygonize
from engine.sheets.merge import link_pieces, merge_polygons
from engine.sheets.plan import RunContext, SheetJob
from engine.vector import polygonize_to_file
from tests.rasters import write_geotiff

TRANSFORM = Affine(0.5, 0, 500_000.0, 0, -0.5, 5_000_000.0)
ROWS, COLS = [0, 37, 90, 131], [0, 52, 61, 140]  # uneven sheets, one only 9 px wide


def _scene(seed: int):
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(ROWS[-1], COLS[-1])), 3.0)
    mask = noise > np.quantile(noise, 0.72)
    for r in ROWS[1:-1]:  # blobs on every inner sheet corner
        for c in COLS[1:-1]:
            mask[r - 4:r + 4, c - 5:c + 3] = True
    prob = np.where(mask, rng.integers(130, 255, mask.shape), rng.integers(0, 120, mask.shape)).astype(np.uint8)
    return mask, prob


def _context(tmp_path, min_area, simplify) -> RunContext:
    plan = AreaPlan(None, None, None, 64, 16, 0.5, 2, 1, min_area, simplify, "uint8")
    area = (COLS[-1], ROWS[-1], tuple(TRANSFORM)[:6], "EPSG:32633")
    return RunContext(str(tmp_path), "", "", DetectOptions(), None, None, None, plan, area, "h")


@pytest.mark.parametrize("seed,min_area,simplify,band,batch", [(0, 0.0, 0.0, 512, 2048), (1, 3.0, 0.6, 512, 2048),
                                                           (2, 0.0, 0.0, 512, 2048), (1, 3.0, 0.6, 17, 3),
                                                           (2, 0.0, 0.0, 40, 1)])
def test_merged_sheets_equal_the_whole_raster(tmp_path, monkeypatch, seed, min_area, simplify, band, batch):
    """Also streamed in bands of a few rows, a few polygons read at a time: the same layer."""
    import engine.sheets.merge as merge

    monkeypatch.setattr(merge, "BAND_ROWS", band)
    monkeypatch.setattr(merge, "BATCH", batch)
    mask, prob = _scene(seed)
    missing = (1, 2)  # this sheet is not there: its pixels are no change for the reference
    mask[ROWS[1]:ROWS[2], COLS[2]:COLS[3]] = False
    ctx = _context(tmp_path, min_area, simplify)
    done = []
    for i in range(3):
        for j in range(3):
            if (i, j) == missing:
                continue
            r0, r1, c0, c1 = ROWS[i], ROWS[i + 1], COLS[j], COLS[j + 1]
            folder = tmp_path / f"s{i}{j}"
            folder.mkdir()
            t = TRANSFORM * Affine.translation(c0, r0)
            write_geotiff(folder / "mask.tif", mask[r0:r1, c0:c1].astype(np.uint8), transform=t, nodata=255)
            write_geotiff(folder / "prob.tif", prob[r0:r1, c0:c1], transform=t, nodata=255)
            _polygonize(SheetJob(ctx, f"s{i}{j}", f"s{i}{j}", (c0, r0, c1 - c0, r1 - r0)), folder)
            done.append((f"s{i}{j}", folder, (c0, r0, c1 - c0, r1 - r0)))
    merged = merge_polygons(ctx, done)

    write_geotiff(tmp_path / "mask.tif", mask.astype(np.uint8), transform=TRANSFORM, nodata=255)
    write_geotiff(tmp_path / "prob.tif", prob, transform=TRANSFORM, nodata=255)
    polygonize_to_file(tmp_path / "mask.tif", tmp_path / "prob.tif", tmp_path / "whole.gpkg", min_area_m2=min_area,
                       simplify_m=simplify, window_rows=17)
    whole = pyogrio.read_dataframe(tmp_path / "whole.gpkg")
    assert len(merged) == len(whole) > 30
    assert list(merged["id"]) == list(whole["id"])
    for a, b in zip(merged.itertuples(), whole.itertuples()):
        assert a.geometry.equals(b.geometry), a.id
        assert a.area_m2 == pytest.approx(b.area_m2)
        assert a.mean_prob == pytest.approx(b.mean_prob) and a.max_prob == pytest.approx(b.max_prob)
    # polygons crossing sheet edges are whole; the sheet named is the one of the first pixel
    xs = [TRANSFORM.c + 0.5 * c for c in COLS[1:-1]]
    assert sum(any(g.bounds[0] < x < g.bounds[2] for x in xs) for g in merged.geometry) >= 5
    assert set(merged["sheet"]) <= {sid for sid, _f, _w in done}


def test_link_pieces_right_and_down_neighbours_only():
    # pieces 0 and 1 side by side, 2 below 1, 3 diagonal to 2 (not linked), 4 at the next row's start
    piece = np.array([0, 1, 2, 3, 4])
    row = np.array([5, 5, 6, 7, 6])
    col = np.array([9, 10, 10, 11, 0])
    assert sorted(link_pieces(piece, row, col, width=11)) == [(0, 1), (1, 2)]


def test_mosaic_refuses_overlapping_and_misaligned_sheets(tmp_path):
    from engine.errors import UserError
    from engine.sheets.mosaic import probe_rasters, write_mosaic

    arr = np.zeros((3, 20, 30), np.uint8)
    write_geotiff(tmp_path / "a.tif", arr, origin=(500_000.0, 5_000_000.0))
    write_geotiff(tmp_path / "b.tif", arr, origin=(500_015.0, 5_000_000.0))  # 30 px right: touches a
    write_geotiff(tmp_path / "c.tif", arr, origin=(500_014.5, 4_999_995.0))  # overlaps a and b
    write_geotiff(tmp_path / "d.tif", arr, origin=(500_030.25, 5_000_000.0))  # half a pixel off
    good, bad = probe_rasters([(k, str(tmp_path / f"{k}.tif")) for k in "abcd"])
    assert not bad
    grid = write_mosaic(good[:2], tmp_path / "ab.vrt", "before")
    assert (grid.width, grid.height) == (60, 20)
    with pytest.raises(UserError, match=r"c\.tif: overlaps .*a\.tif"):  # c reaches 1 px into a
        write_mosaic(good[:3], tmp_path / "abc.vrt", "before")
    with pytest.raises(UserError, match=r"d\.tif: not on .*pixel grid"):
        write_mosaic([good[0], good[3]], tmp_path / "ad.vrt", "before")


@pytest.mark.parametrize("name", ["merged.gpkg", "merged.shp"])
def test_streamed_merge_in_narrow_bands_equals_detect_on_the_mosaic(tmp_path, monkeypatch, name):
    """The merge writes band by band (here 16 rows, 2 polygons read at a time): the layer is
    still the one ``detect`` gives on the mosaic, ids and order included."""
    import engine.sheets.merge as merge
    from engine.detect import detect
    from engine.sheets.run import run_sheets

    from .standins import BlurDifference, blob_scene, cut

    monkeypatch.setattr(merge, "BAND_ROWS", 16)
    monkeypatch.setattr(merge, "BATCH", 2)
    before, after = blob_scene(150, 170)
    scene = cut(before, after, tmp_path / "in", [50, 97], [60, 111])
    run, tiling = tmp_path / "run", {"tile_size": 64, "overlap": 16}
    res = run_sheets(scene, run, predictor=BlurDifference(), out_vector=tmp_path / name, workers=1, min_area=2.0,
                     **tiling)
    assert res.exit_code == 0
    detect(next(run.glob("mosaic/before-*.vrt")), next(run.glob("mosaic/after-*.vrt")), predictor=BlurDifference(),
           out_vector=tmp_path / "detect.gpkg", min_area=2.0, **tiling)
    merged, whole = pyogrio.read_dataframe(tmp_path / name), pyogrio.read_dataframe(tmp_path / "detect.gpkg")
    assert len(merged) == len(whole) > 10 and res.stats["polygons"] == len(whole)
    assert list(merged["id"]) == list(whole["id"]) == list(range(1, len(whole) + 1))
    for a, b in zip(merged.itertuples(), whole.itertuples()):
        assert a.geometry.equals(b.geometry) and a.area_m2 == pytest.approx(b.area_m2)
        assert a.mean_prob == pytest.approx(b.mean_prob) and a.max_prob == pytest.approx(b.max_prob)
    status = pyogrio.read_dataframe(run / "status.gpkg")
    assert status["polygons"].sum() == len(whole)


def test_a_piece_file_damaged_after_verification_is_one_line_naming_it(tmp_path):
    """The merge reads what was verified; a file damaged in between (a disk error) is one line."""
    from engine.errors import UserError
    from engine.sheets.merge import merge_to_file

    mask, prob = _scene(3)
    ctx = _context(tmp_path, 0.0, 0.0)
    done = []
    for i, (r0, r1) in enumerate([(0, 60), (60, ROWS[-1])]):
        folder = tmp_path / f"s{i}"
        folder.mkdir()
        t = TRANSFORM * Affine.translation(0, r0)
        write_geotiff(folder / "mask.tif", mask[r0:r1].astype(np.uint8), transform=t, nodata=255)
        write_geotiff(folder / "prob.tif", prob[r0:r1], transform=t, nodata=255)
        _polygonize(SheetJob(ctx, f"s{i}", f"s{i}", (0, r0, COLS[-1], r1 - r0)), folder)
        done.append((f"s{i}", folder, (0, r0, COLS[-1], r1 - r0)))
    for name in ("final.fgb", "border.fgb", "edges.npz"):
        victim = tmp_path / "s1" / name
        data = victim.read_bytes()
        victim.write_bytes(data[:40])
        with pytest.raises(UserError) as err:
            merge_to_file(ctx, done, tmp_path / "merged.gpkg", overwrite=True)
        assert str(err.value).startswith(f"{victim}: damaged sheet result") and "\n" not in str(err.value)
        assert not (tmp_path / "merged.gpkg").exists()
        victim.write_bytes(data)


@pytest.mark.parametrize("band", [512, 7])
def test_sheets_laid_like_bricks_merge_edge_by_edge_to_the_whole_raster(tmp_path, monkeypatch, band):
    """Sheets that do not form rows (each starts at its own row): components are closed only
    once every sheet that could touch them is open; the layer is still the whole raster's."""
    import engine.sheets.merge as merge

    monkeypatch.setattr(merge, "BAND_ROWS", band)
    mask, prob = _scene(4)
    h, w = ROWS[-1], COLS[-1]
    bricks = [(0, 40, 0, 70), (0, 90, 70, 140), (40, 131, 0, 30), (40, 100, 30, 70), (90, 131, 70, 140),
              (100, 131, 30, 70)]  # (r0, r1, c0, c1): a cover of the area without overlap
    covered = np.zeros((h, w), int)
    for r0, r1, c0, c1 in bricks:
        covered[r0:r1, c0:c1] += 1
    assert (covered == 1).all()
    ctx = _context(tmp_path, 0.0, 0.0)
    done = []
    for k, (r0, r1, c0, c1) in enumerate(bricks):
        folder = tmp_path / f"b{k}"
        folder.mkdir()
        t = TRANSFORM * Affine.translation(c0, r0)
        write_geotiff(folder / "mask.tif", mask[r0:r1, c0:c1].astype(np.uint8), transform=t, nodata=255)
        write_geotiff(folder / "prob.tif", prob[r0:r1, c0:c1], transform=t, nodata=255)
        _polygonize(SheetJob(ctx, f"b{k}", f"b{k}", (c0, r0, c1 - c0, r1 - r0)), folder)
        done.append((f"b{k}", folder, (c0, r0, c1 - c0, r1 - r0)))
    merged = merge_polygons(ctx, done)
    write_geotiff(tmp_path / "mask.tif", mask.astype(np.uint8), transform=TRANSFORM, nodata=255)
    write_geotiff(tmp_path / "prob.tif", prob, transform=TRANSFORM, nodata=255)
    polygonize_to_file(tmp_path / "mask.tif", tmp_path / "prob.tif", tmp_path / "whole.gpkg", window_rows=17)
    whole = pyogrio.read_dataframe(tmp_path / "whole.gpkg")
    assert len(merged) == len(whole) > 30 and list(merged["id"]) == list(whole["id"])
    for a, b in zip(merged.itertuples(), whole.itertuples()):
        assert a.geometry.equals(b.geometry), a.id
        assert a.mean_prob == pytest.approx(b.mean_prob) and a.max_prob == pytest.approx(b.max_prob)
