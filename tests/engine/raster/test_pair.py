"""Pairing the dates on the before's grid (real GeoTIFFs, real CRSs)."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.windows import Window

from engine.errors import UserError
from engine.events import Events
from engine.raster.pair import open_pair
from tests.rasters import textured, write_geotiff

ORIGIN = (500_000.0, 5_000_000.0)


def test_same_grid_reads_directly(tmp_path):
    img = textured(64, 80)
    b = write_geotiff(tmp_path / "b.tif", img)
    a = write_geotiff(tmp_path / "a.tif", img)
    with open_pair(b, a) as pair:
        assert (pair.width, pair.height) == (80, 64)
        assert not pair.after.warped
        rb, ra, valid = pair.read(Window(0, 0, 80, 64))
        np.testing.assert_array_equal(rb, ra)
        assert valid.all()
        assert pair.crs.to_epsg() == 32633


def test_whole_pixel_offset_reads_the_intersection_without_warping(tmp_path):
    img = textured(100, 100)
    b = write_geotiff(tmp_path / "b.tif", img)
    # after starts 10 px right and 20 px down of the before (0.5 m pixels)
    a = write_geotiff(tmp_path / "a.tif", img[:, 20:, 10:], origin=(ORIGIN[0] + 5, ORIGIN[1] - 10))
    with open_pair(b, a) as pair:
        assert not pair.after.warped
        assert (pair.width, pair.height) == (90, 80)
        assert pair.transform.c == ORIGIN[0] + 5 and pair.transform.f == ORIGIN[1] - 10
        rb, ra, _ = pair.read(Window(0, 0, 90, 80))
        np.testing.assert_array_equal(rb, ra)


def test_other_crs_and_resolution_is_warped_and_masked_outside(tmp_path):
    b = write_geotiff(tmp_path / "b.tif", textured(200, 200))
    to32 = Transformer.from_crs("EPSG:32633", "EPSG:32632", always_xy=True)
    x, y = to32.transform(ORIGIN[0] + 20, ORIGIN[1] - 20)
    a = write_geotiff(tmp_path / "a.tif", textured(150, 150, seed=3), crs="EPSG:32632", origin=(x, y), pixel_size=0.7)
    logs = []
    with open_pair(b, a, events=Events(logs.append)) as pair:
        assert pair.after.warped
        assert pair.crs.to_epsg() == 32633 and pair.transform.a == 0.5
        assert 0 < pair.width < 200 and 0 < pair.height < 200
        _, ra, valid = pair.read(Window(0, 0, pair.width, pair.height))
        assert 0.5 < valid.mean() < 1.0  # the rotated footprint does not fill its bounding box
        assert ra[:, valid].mean() > 50
    assert any("resampled" in e.get("message", "") for e in logs)


def test_extent_limits_the_area(tmp_path):
    img = textured(100, 100)
    b = write_geotiff(tmp_path / "b.tif", img)
    a = write_geotiff(tmp_path / "a.tif", img)
    ext = (ORIGIN[0] + 10, ORIGIN[1] - 30, ORIGIN[0] + 20.2, ORIGIN[1] - 5)
    with open_pair(b, a, extent=ext) as pair:
        assert (pair.width, pair.height) == (20, 50)
        assert pair.transform.c == ORIGIN[0] + 10 and pair.transform.f == ORIGIN[1] - 5


def test_no_overlap_is_a_user_error_naming_the_files(tmp_path):
    b = write_geotiff(tmp_path / "b.tif", textured(50, 50))
    a = write_geotiff(tmp_path / "a.tif", textured(50, 50), origin=(ORIGIN[0] + 1000, ORIGIN[1]))
    with pytest.raises(UserError, match=r"a\.tif: does not overlap .*b\.tif"):
        open_pair(b, a)
    with pytest.raises(UserError, match="--extent"):
        open_pair(b, b, extent=(0, 0, 1, 1))


def test_missing_and_unreadable_files(tmp_path):
    b = write_geotiff(tmp_path / "b.tif", textured(50, 50))
    with pytest.raises(UserError, match=r"nope\.tif: after file not found"):
        open_pair(b, tmp_path / "nope.tif")
    junk = tmp_path / "junk.tif"
    junk.write_text("not a raster")
    with pytest.raises(UserError, match=r"junk\.tif: not a raster"):
        open_pair(junk, b)


def test_band_out_of_range_names_the_file(tmp_path):
    b = write_geotiff(tmp_path / "b.tif", textured(50, 50))
    with pytest.raises(UserError, match=r"b\.tif: band 4 out of range"):
        open_pair(b, b, bands_before=[1, 2, 4])


def test_no_georeferencing_pairs_in_pixel_space_with_a_warning(tmp_path):
    b = write_geotiff(tmp_path / "b.tif", textured(60, 70), crs=None)
    a = write_geotiff(tmp_path / "a.tif", textured(50, 80), crs=None)
    logs = []
    with open_pair(b, a, events=Events(logs.append)) as pair:
        assert (pair.width, pair.height) == (70, 50)
        assert pair.crs is None and not pair.georeferenced
    assert any(e["level"] == "warning" and "no georeferencing" in e["message"] for e in logs)


def test_one_band_copied_to_three_is_a_warning_naming_the_file(tmp_path):
    b = write_geotiff(tmp_path / "grey.tif", textured(40, 40)[:1])
    a = write_geotiff(tmp_path / "a.tif", textured(40, 40))
    logs = []
    with open_pair(b, a, events=Events(logs.append)) as pair:
        raw, _, _ = pair.read(Window(0, 0, 40, 40))
        assert raw.shape == (3, 40, 40) and (raw[0] == raw[2]).all()
    warned = [e["message"] for e in logs if e["level"] == "warning"]
    assert warned == [f"{b}: a single band; band 1 is copied to red, green and blue (the model's three inputs: "
                      "a model trained on colour imagery sees a grey image)"]
    logs.clear()
    with open_pair(a, a, bands_after=[2], events=Events(logs.append)):
        pass
    assert [e["message"].split(";")[0] for e in logs if e["level"] == "warning"] == [f"{a}: band 2 of 3 chosen"]
    logs.clear()
    with open_pair(a, a, events=Events(logs.append)):
        pass
    assert not [e for e in logs if e["level"] == "warning"]


def test_nodata_internal_mask_and_alpha_are_invalid(tmp_path):
    img = textured(40, 40)
    img_nd = img.copy()
    img_nd[:, :5, :] = 0
    b = write_geotiff(tmp_path / "b.tif", img_nd, nodata=0)
    # after: RGBA with the last 7 columns transparent
    rgba = np.concatenate([img, np.full((1, 40, 40), 255, np.uint8)])
    rgba[3, :, -7:] = 0
    a = tmp_path / "a.tif"
    write_geotiff(a, rgba)
    with rasterio.open(a, "r+") as ds:
        ds.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                          rasterio.enums.ColorInterp.blue, rasterio.enums.ColorInterp.alpha]
    # a third one with an internal mask
    m = tmp_path / "m.tif"
    write_geotiff(m, img)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(m, "r+") as ds:
        mask = np.full((40, 40), 255, np.uint8)
        mask[-3:, :] = 0
        ds.write_mask(mask)
    with open_pair(b, a) as pair:
        assert pair.after.bands == (1, 2, 3)
        _, _, valid = pair.read(Window(0, 0, 40, 40))
        assert not valid[:5].any() and not valid[:, -7:].any() and valid[5:, :-7].all()
    with open_pair(m, a) as pair:
        _, _, valid = pair.read(Window(0, 0, 40, 40))
        assert not valid[-3:].any() and valid[:-3, :-7].all()


def test_one_band_is_replicated_to_three(tmp_path):
    gray = textured(30, 30, bands=1)
    b = write_geotiff(tmp_path / "b.tif", gray)
    with open_pair(b, b) as pair:
        rb, _, _ = pair.read(Window(0, 0, 30, 30))
        assert rb.shape == (3, 30, 30) and (rb[0] == rb[2]).all()
