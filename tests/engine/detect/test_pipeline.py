"""The pipeline from Python, with a stand-in model whose output is |after - before|:
geometry (squares at known map coordinates, across tile seams, three kinds of CRS pairs),
nodata, radiometry reporting, progress and cancel."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from pyproj import Geod, Transformer
from rasterio.warp import Resampling, reproject
from shapely.geometry import box

from engine.core.predictors import DifferencePredictor
from engine.detect import detect
from engine.errors import Cancelled
from tests.rasters import textured, write_geotiff

from .conftest import ORIGIN, changed_pair, square_bounds

SQUARE = (60, 70, 40, 40)  # cols 60-99, rows 70-109: across the seams at 80-96 (tile 96, overlap 16)


def _run(before, after, out_dir, **kw):
    kw.setdefault("tile_size", 96)
    kw.setdefault("overlap", 16)
    return detect(before, after, predictor=DifferencePredictor(), out_vector=out_dir / "changes.gpkg",
                  out_probability=out_dir / "prob.tif", out_mask=out_dir / "mask.tif", **kw)


def test_square_in_utm_is_one_polygon_at_its_map_coordinates_across_a_seam(tmp_path):
    before, after = changed_pair(tmp_path, square=SQUARE)
    out = tmp_path / "out"
    out.mkdir()
    result = _run(before, after, out)
    assert result.stats["tiles"] == 9
    gdf = gpd.read_file(out / "changes.gpkg")
    assert len(gdf) == 1
    assert gdf.crs.to_epsg() == 32633
    assert list(gdf.columns[:4]) == ["id", "area_m2", "mean_prob", "max_prob"]
    np.testing.assert_allclose(gdf.total_bounds, square_bounds(SQUARE), atol=1e-6)
    assert gdf.geometry[0].equals(box(*square_bounds(SQUARE)))
    assert gdf.area_m2[0] == pytest.approx(400.0)
    assert gdf.mean_prob[0] > 0.99
    assert result.stats["polygons"] == 1 and result.stats["changed_area_m2"] == pytest.approx(400.0)
    with rasterio.open(out / "mask.tif") as m, rasterio.open(before) as b:
        assert m.transform == b.transform and m.crs == b.crs
        mask = m.read(1)
    assert mask.sum() == 40 * 40 and mask[70:110, 60:100].all()
    assert sorted(p.name for p in out.iterdir()) == ["changes.gpkg", "mask.tif", "prob.tif"]  # no temporaries left


def test_geographic_crs_min_area_in_square_metres(tmp_path):
    px = 5e-6  # degrees: about 0.39 m east-west, 0.56 m north-south at 45 N
    origin = (15.0, 45.0)
    h = w = 160
    before = textured(h, w)
    before[:, 50:90, 50:90] = 20  # big square
    before[:, 120:124, 120:124] = 20  # small square, ~3.5 m²
    after = before.copy()
    after[:, 50:90, 50:90] = 235
    after[:, 120:124, 120:124] = 235
    b = write_geotiff(tmp_path / "b.tif", before, crs="EPSG:4326", origin=origin, pixel_size=px)
    a = write_geotiff(tmp_path / "a.tif", after, crs="EPSG:4326", origin=origin, pixel_size=px)
    _run(b, a, tmp_path, min_area=10.0)
    gdf = gpd.read_file(tmp_path / "changes.gpkg")
    assert len(gdf) == 1
    assert gdf.crs.to_epsg() == 4326
    xmin, ymin, xmax, ymax = 15 + 50 * px, 45 - 90 * px, 15 + 90 * px, 45 - 50 * px
    np.testing.assert_allclose(gdf.total_bounds, (xmin, ymin, xmax, ymax), atol=1e-9)
    geodesic = abs(Geod(ellps="WGS84").geometry_area_perimeter(box(xmin, ymin, xmax, ymax))[0])
    assert gdf.area_m2[0] == pytest.approx(geodesic, rel=0.01)


def test_after_in_another_crs_and_resolution_is_warped_onto_the_before(tmp_path):
    # smooth scene so double resampling creates no false change; square at known map place
    h = w = 200
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([100 + 0.2 * xx, 110 + 0.1 * yy, 120 + 0.05 * (xx + yy)]).astype(np.uint8)
    before = base.copy()
    before[:, 70:110, 60:100] = 20
    after_scene = base.copy()
    after_scene[:, 70:110, 60:100] = 235
    b = write_geotiff(tmp_path / "b.tif", before)
    # the after: the same ground in UTM 32N at 0.7 m
    to32 = Transformer.from_crs("EPSG:32633", "EPSG:32632", always_xy=True)
    xs, ys = to32.transform([ORIGIN[0] - 10, ORIGIN[0] + 110, ORIGIN[0] - 10, ORIGIN[0] + 110],
                            [ORIGIN[1] + 10, ORIGIN[1] + 10, ORIGIN[1] - 110, ORIGIN[1] - 110])
    a_origin = (min(xs), max(ys))
    aw, ah = int((max(xs) - min(xs)) / 0.7), int((max(ys) - min(ys)) / 0.7)
    a_transform = rasterio.transform.from_origin(a_origin[0], a_origin[1], 0.7, 0.7)
    after = np.zeros((3, ah, aw), np.uint8)
    with rasterio.open(b) as src:
        reproject(after_scene, after, src_transform=src.transform, src_crs=src.crs, dst_transform=a_transform,
                  dst_crs="EPSG:32632", resampling=Resampling.bilinear, dst_nodata=0)
    a = write_geotiff(tmp_path / "a.tif", after, crs="EPSG:32632", transform=a_transform, nodata=0)
    result = _run(b, a, tmp_path)
    assert result.info["warped_after"] is True
    gdf = gpd.read_file(tmp_path / "changes.gpkg")
    big = gdf[gdf.area_m2 > 50]
    assert len(big) == 1, gdf
    assert gdf.crs.to_epsg() == 32633
    np.testing.assert_allclose(big.total_bounds, square_bounds(SQUARE), atol=1.0)  # within 2 before pixels
    assert big.area_m2.iloc[0] == pytest.approx(400.0, rel=0.1)
    assert gdf.area_m2.sum() < 450


def test_nodata_in_either_date_is_no_change_and_nodata_in_the_outputs(tmp_path):
    before, after = changed_pair(tmp_path, square=SQUARE)
    with rasterio.open(after, "r+") as ds:  # the square's left half becomes nodata in the after
        ds.nodata = 0
        arr = ds.read()
        arr[:, 70:110, 60:80] = 0
        ds.write(arr)
    _run(before, after, tmp_path)
    with rasterio.open(tmp_path / "prob.tif") as p, rasterio.open(tmp_path / "mask.tif") as m:
        prob, mask = p.read(1), m.read(1)
        assert p.nodata == 255 and m.nodata == 255
    assert (prob[70:110, 60:80] == 255).all() and (mask[70:110, 60:80] == 255).all()
    assert (mask == 1).sum() == 40 * 20
    gdf = gpd.read_file(tmp_path / "changes.gpkg")
    assert len(gdf) == 1
    np.testing.assert_allclose(gdf.total_bounds, square_bounds((80, 70, 20, 40)), atol=1e-6)


def test_scene_smaller_than_a_tile_and_extent(tmp_path):
    before, after = changed_pair(tmp_path, size=(70, 50), square=(10, 20, 8, 8))
    result = _run(before, after, tmp_path, tile_size=512, overlap=128)
    assert result.stats["tiles"] == 1 and result.info["tile_shape"] == (96, 64)
    assert len(gpd.read_file(tmp_path / "changes.gpkg")) == 1
    # an extent that leaves the square out
    ext = (ORIGIN[0], ORIGIN[1] - 35, ORIGIN[0] + 25, ORIGIN[1] - 15)  # rows 30-70 of before
    result = _run(before, after, tmp_path, extent=ext, overwrite=True)
    assert result.stats["pixels"] == 50 * 40
    assert len(gpd.read_file(tmp_path / "changes.gpkg")) == 0
    with rasterio.open(tmp_path / "prob.tif") as p:
        assert (p.width, p.height) == (50, 40) and p.bounds.top == ORIGIN[1] - 15


def test_uint16_dates_are_stretched_and_reported(tmp_path):
    small = (84, 84, 12, 12)  # under 2 % of the scene, so it barely moves the percentiles
    before, after = changed_pair(tmp_path, square=small)
    for p in (before, after):
        with rasterio.open(p) as ds:
            arr = ds.read().astype(np.uint16) * 40 + 300
        write_geotiff(p, arr)
    events = []
    _run(before, after, tmp_path, on_event=events.append)
    start = next(e for e in events if e["event"] == "start")
    assert start["radiometry"]["before"]["mode"] == "stretch"
    assert len(start["radiometry"]["after"]["low"]) == 3
    assert any("percentile" in e.get("message", "") for e in events if e["event"] == "log")
    gdf = gpd.read_file(tmp_path / "changes.gpkg")
    assert len(gdf) == 1
    np.testing.assert_allclose(gdf.total_bounds, square_bounds(small), atol=1e-6)


def test_progress_events_and_stats(tmp_path, pair):
    events = []
    result = _run(*pair, tmp_path, on_event=events.append)
    kinds = [e["event"] for e in events]
    assert kinds.count("start") == 1 and kinds[-1] == "done"
    start = events[kinds.index("start")]
    for key in ("before", "after", "width", "height", "crs", "tiles", "tile_size", "overlap", "batch_size", "device",
                "precision", "radiometry"):
        assert key in start, key
    assert start["crs"] == "EPSG:32633" and start["width"] == 200
    prog = [e for e in events if e["event"] == "progress" and e["stage"] == "detect"]
    assert [p["done"] for p in prog] == sorted(p["done"] for p in prog)
    assert prog[-1]["done"] == prog[-1]["total"] == start["tiles"]
    done = events[-1]
    assert set(done["outputs"]) == {"vector", "probability", "mask"}
    for key in ("polygons", "changed_area_m2", "pixels", "seconds", "tiles_per_s"):
        assert key in done["stats"], key
    assert done["stats"] == result.stats


def test_cancel_leaves_nothing_behind(tmp_path, pair):
    out = tmp_path / "out"
    out.mkdir()
    seen = []
    with pytest.raises(Cancelled):
        _run(*pair, out, on_event=seen.append, is_cancelled=lambda: any(e["event"] == "progress" and e["done"] > 0
                                                                       for e in seen))
    assert list(out.iterdir()) == []


def test_a_failing_model_leaves_nothing_behind(tmp_path, pair):
    out = tmp_path / "out"
    out.mkdir()
    calls = []

    def broken(batch):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("device lost")
        return np.zeros((batch.shape[0],) + batch.shape[2:], np.float32)

    with pytest.raises(RuntimeError, match="device lost"):
        detect(*pair, predictor=broken, out_vector=out / "v.shp", out_probability=out / "p.tif", tile_size=64,
               overlap=16)
    assert list(out.iterdir()) == []


class _Pipelined(DifferencePredictor):
    """Stand-in with submit/result, as the CUDA model predictor offers."""

    def __init__(self):
        super().__init__()
        self.in_flight = 0
        self.max_in_flight = 0

    def submit(self, batch):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return self(batch)

    def result(self, handle):
        self.in_flight -= 1
        return handle


@pytest.mark.parametrize("threads", [1, 3])
def test_read_threads_and_pipelined_predictor_give_the_same_outputs(tmp_path, threads):
    before, after = changed_pair(tmp_path, size=(230, 210), square=SQUARE)
    ref = tmp_path / "ref"
    ref.mkdir()
    _run(before, after, ref)
    out = tmp_path / "out"
    out.mkdir()
    pred = _Pipelined()
    result = detect(before, after, predictor=pred, out_probability=out / "prob.tif", out_mask=out / "mask.tif",
                    tile_size=96, overlap=16, batch_size=2, read_threads=threads)
    assert pred.max_in_flight == 2 and pred.in_flight == 0  # batch k+1 started before batch k was blended
    assert result.info["batch_size"] == 2
    for name in ("prob.tif", "mask.tif"):
        with rasterio.open(ref / name) as a, rasterio.open(out / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())


def test_rasters_without_georeferencing_work_in_pixel_space(tmp_path):
    before, after = changed_pair(tmp_path, size=(100, 120), square=SQUARE[:2] + (20, 20), crs=None)
    events = []
    result = _run(before, after, tmp_path, on_event=events.append)
    assert any(e["event"] == "log" and e["level"] == "warning" and "no georeferencing" in e["message"] for e in events)
    gdf = gpd.read_file(tmp_path / "changes.gpkg")
    assert len(gdf) == 1 and gdf.crs is None
    np.testing.assert_allclose(gdf.total_bounds, (60, 70, 80, 90))  # pixel coordinates, y down
    assert result.stats["changed_area_m2"] is None and result.stats["changed_pixels"] == 400


def test_cog_and_vrt_inputs(tmp_path):
    import rasterio.shutil

    before, after = changed_pair(tmp_path, square=SQUARE)
    cog, vrt = tmp_path / "before_cog.tif", tmp_path / "after.vrt"
    rasterio.shutil.copy(before, cog, driver="COG", blocksize=64)
    rasterio.shutil.copy(after, vrt, driver="VRT")
    out = tmp_path / "out"
    out.mkdir()
    _run(cog, vrt, out)
    gdf = gpd.read_file(out / "changes.gpkg")
    assert len(gdf) == 1
    np.testing.assert_allclose(gdf.total_bounds, square_bounds(SQUARE), atol=1e-6)
