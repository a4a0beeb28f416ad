"""The review layer (HRMNet's hard-region score): the raster on the probability's grid and
unseamed across tiles, the polygons' ``review`` field, "look here" areas that never overlap
change polygons, option mistakes, and, with the demo model on a crop of the demo pair, how
well the score points at the model's errors."""
from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize

from engine.checkpoint import MetadataError, ModelInfo, check_info
from engine.core.predictors import DifferencePredictor
from engine.detect import detect
from engine.errors import UserError
from tests.rasters import textured, write_geotiff

from .conftest import ROOT, run_cli, square_bounds

INFO = ModelInfo(tile_size=64, overlap=16)
# DifferencePredictor: p = mean |after - before| of ImageNet-normalised channels; review = 1 - |2p - 1|.
# A raw difference of 35 gives p ~ 0.61 (change, review ~ 0.79); 23 gives p ~ 0.40 (no change, review ~ 0.80).
CHANGE = (40, 50, 40, 30)  # col, row, width, height: across tile seams (tile 64, overlap 16: starts 0, 48, 96...)
FAINT = (170, 160, 30, 30)  # undecided, no change: a "look here" area


def _scene(folder, size: int = 256):
    """before/after (size x size, UTM 33N) with a change square ringed by an undecided band
    (touching the change: no area) and a separate undecided square (an area)."""
    before = textured(size, size)
    after = before.copy()
    c, r, w, h = CHANGE
    for band, (b, a) in ((3, (100, 123)), (0, (100, 135))):  # the ring first, the change inside it
        before[:, r - band:r + h + band, c - band:c + w + band] = b
        after[:, r - band:r + h + band, c - band:c + w + band] = a
    c, r, w, h = FAINT
    before[:, r:r + h, c:c + w] = 100
    after[:, r:r + h, c:c + w] = 123
    return write_geotiff(folder / "before.tif", before), write_geotiff(folder / "after.tif", after)


def _detect(pair, out, **kw):
    kw.setdefault("tile_size", 64)
    kw.setdefault("overlap", 16)
    return detect(*pair, predictor=DifferencePredictor(review=True), model_info=INFO, **kw)


def test_review_raster_is_on_the_probability_grid_and_unseamed_across_tiles(tmp_path):
    pair = _scene(tmp_path, 512)  # big enough for overviews
    tiled, whole = tmp_path / "tiled", tmp_path / "whole"
    tiled.mkdir(), whole.mkdir()
    result = _detect(pair, tiled, out_probability=tiled / "p.tif", out_review=tiled / "r.tif")
    assert result.stats["tiles"] == 121 and result.outputs["review"] == str(tiled / "r.tif")
    _detect(pair, whole, out_review=whole / "r.tif", tile_size=512, overlap=0)  # one tile: no seams
    with rasterio.open(tiled / "p.tif") as p, rasterio.open(tiled / "r.tif") as r:
        for key in ("crs", "transform", "width", "height", "dtypes", "nodata", "block_shapes"):
            assert getattr(r, key) == getattr(p, key), key
        assert r.compression == p.compression and r.block_shapes[0] == (256, 256)
        assert r.overviews(1) == p.overviews(1) == [2]
        tiled_review = r.read(1)
    with rasterio.open(whole / "r.tif") as r:
        whole_review = r.read(1)
    assert tiled_review.max() <= 254  # review in [0, 1] as score * 254
    np.testing.assert_allclose(tiled_review.astype(int), whole_review.astype(int), atol=1)
    c, r0, w, h = CHANGE
    assert tiled_review[r0:r0 + h, c:c + w].mean() == pytest.approx(0.79 * 254, abs=6)  # across the seams


def test_float32_review_and_a_field_that_is_the_mean_score_inside_each_polygon(tmp_path):
    pair = _scene(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    _detect(pair, out, out_vector=out / "v.gpkg", out_review=out / "r.tif", probability_dtype="float32")
    with rasterio.open(out / "r.tif") as ds:
        review, transform = ds.read(1), ds.transform
        assert ds.dtypes[0] == "float32" and ds.nodata == -1
    assert 0.0 <= review.min() and review.max() <= 1.0
    gdf = gpd.read_file(out / "v.gpkg")
    assert "review" in gdf.columns and len(gdf) == 1
    assert gdf.review.between(0, 1).all()
    inside = rasterize([gdf.geometry[0]], out_shape=review.shape, transform=transform).astype(bool)
    assert gdf.review[0] == pytest.approx(review[inside].mean(), abs=1e-4)
    np.testing.assert_allclose(gdf.total_bounds, square_bounds(CHANGE), atol=1e-6)


def test_review_areas_hold_no_change_and_never_overlap_change_polygons(tmp_path):
    pair = _scene(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    result = _detect(pair, out, out_vector=out / "v.gpkg", out_review_areas=out / "areas.gpkg")
    changes, areas = gpd.read_file(out / "v.gpkg"), gpd.read_file(out / "areas.gpkg")
    assert len(changes) == 1 and result.stats["review_areas"] == len(areas) == 1  # the ring touches the change
    np.testing.assert_allclose(areas.total_bounds, square_bounds(FAINT), atol=1e-6)
    assert areas.review[0] == pytest.approx(0.8, abs=0.03) and areas.max_prob[0] < 0.5
    assert not areas.intersects(changes.union_all() if hasattr(changes, "union_all") else changes.unary_union).any()
    assert sorted(p.name for p in out.iterdir()) == ["areas.gpkg", "v.gpkg"]  # the review temporaries are gone
    # a threshold above every score: no area, still a valid layer
    _detect(pair, out, out_review_areas=out / "none.gpkg", review_threshold=0.9, overwrite=True)
    assert len(gpd.read_file(out / "none.gpkg")) == 0


def test_review_option_mistakes_are_one_line(tmp_path):
    pair = _scene(tmp_path)
    with pytest.raises(UserError, match="gives no review"):
        detect(*pair, predictor=DifferencePredictor(), model_info=INFO, out_review=tmp_path / "r.tif")
    with pytest.raises(UserError, match="--review-threshold 1.5: must be between 0 and 1"):
        _detect(pair, tmp_path, out_review_areas=tmp_path / "a.gpkg", review_threshold=1.5)
    with pytest.raises(UserError, match="unsupported review format"):
        _detect(pair, tmp_path, out_review=tmp_path / "r.png")
    with pytest.raises(MetadataError, match="review_threshold = 0"):
        check_info(ModelInfo(review_threshold=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after.tif", "before.tif"]  # nothing half-written
    # a stand-in without review still writes polygons, without the field
    detect(*pair, predictor=DifferencePredictor(), model_info=INFO, out_vector=tmp_path / "v.gpkg", tile_size=64,
           overlap=16)
    assert "review" not in gpd.read_file(tmp_path / "v.gpkg").columns


DEMO = ROOT / "engine" / "demo"
CROP = (640000.0, 5799488.0, 640256.0, 5799744.0)  # 512 x 512 px: rows 512-1023, cols 0-511 of the demo pair


@pytest.mark.skipif(not (DEMO / "hrmnet_demo.safetensors").exists(), reason="no demo model")
def test_demo_model_review_points_at_its_errors(tmp_path):
    from rasterio.windows import from_bounds

    from engine.train.review_metrics import ReviewStats

    res = run_cli("--before", DEMO / "data" / "before.tif", "--after", DEMO / "data" / "after.tif", "--model",
                  DEMO / "hrmnet_demo.safetensors", "--extent", ",".join(map(str, CROP)), "--out-mask",
                  tmp_path / "m.tif", "--out-review", tmp_path / "r.tif", "--out-vector", tmp_path / "v.gpkg",
                  "--out-review-areas", tmp_path / "a.gpkg", "--progress", "jsonl", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    done = json.loads(res.stdout.splitlines()[-1])
    assert done["outputs"]["review"] == str(tmp_path / "r.tif")
    with rasterio.open(tmp_path / "m.tif") as m, rasterio.open(tmp_path / "r.tif") as r:
        pred, review = m.read(1) == 1, r.read(1).astype(np.float32) / 254
        assert (r.transform, r.shape) == (m.transform, m.shape)
    with rasterio.open(DEMO / "data" / "truth.tif") as t:
        truth = t.read(1, window=from_bounds(*CROP, transform=t.transform)) > 0
    stats = ReviewStats()
    stats.update(pred, truth, review)
    report = stats.result()
    top1 = report["top_1pct"]
    assert top1["error_rate"] >= 10 * top1["rest_error_rate"]  # measured 31x on this crop (README)
    polygons = report["polygons"]
    assert polygons["false_positives"] > 0 and polygons["top_fp_share"] > polygons["rest_fp_share"]
    changes, areas = gpd.read_file(tmp_path / "v.gpkg"), gpd.read_file(tmp_path / "a.gpkg")
    assert changes.review.between(0, 1).all() and len(areas) > 0
    assert not areas.intersects(changes.union_all() if hasattr(changes, "union_all") else changes.unary_union).any()
