"""``sheets --out-review --out-review-areas``: the review (hard-region) score over map sheets
equals ``detect`` on the mosaic: raster, polygons' ``review`` field (merged exactly across sheet
edges) and "look here" areas."""
from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio

from engine.detect import detect
from engine.sheets.run import run_sheets

from .standins import BlurDifference, blob_scene, cut

TILING = {"tile_size": 64, "overlap": 16}


class BlurReview(BlurDifference):
    """The blurred difference, with review = 1 - |2p - 1| (high where undecided)."""

    gives_review = True

    def __call__(self, batch: np.ndarray):
        prob = super().__call__(batch)
        return prob, (1.0 - np.abs(2.0 * prob - 1.0)).astype(np.float32)


def test_review_over_sheets_equals_detect_on_the_mosaic(tmp_path):
    before, after = blob_scene(150, 170)
    sheets = cut(before, after, tmp_path / "in", [50, 97], [60, 111])
    run = tmp_path / "run"
    res = run_sheets(sheets, run, predictor=BlurReview(), out_vector=tmp_path / "merged.gpkg",
                     out_review=tmp_path / "review.vrt", out_review_areas=tmp_path / "areas.gpkg",
                     review_threshold=0.5, workers=1, **TILING)
    assert res.exit_code == 0 and res.outputs["review"] == str(tmp_path / "review.vrt")
    detect(next(run.glob("mosaic/before-*.vrt")), next(run.glob("mosaic/after-*.vrt")), predictor=BlurReview(),
           out_vector=tmp_path / "detect.gpkg", out_review=tmp_path / "detect_review.tif",
           out_review_areas=tmp_path / "detect_areas.gpkg", review_threshold=0.5, **TILING)
    with rasterio.open(tmp_path / "review.vrt") as a, rasterio.open(tmp_path / "detect_review.tif") as b:
        assert (a.transform, a.shape, a.nodata) == (b.transform, b.shape, b.nodata)
        assert a.read(1).tobytes() == b.read(1).tobytes()
    merged = pyogrio.read_dataframe(tmp_path / "merged.gpkg")
    polygons = pyogrio.read_dataframe(tmp_path / "detect.gpkg")
    assert list(merged.columns) == ["id", "area_m2", "mean_prob", "max_prob", "review", "sheet", "geometry"]
    assert len(merged) == len(polygons) > 10 and merged.review.between(0, 1).all()
    assert len(set(merged.sheet)) > 1
    for a, b in zip(merged.itertuples(), polygons.itertuples()):
        assert a.id == b.id and a.review == pytest.approx(b.review, abs=1e-9)
    areas, expected = pyogrio.read_dataframe(tmp_path / "areas.gpkg"), pyogrio.read_dataframe(tmp_path / "detect_areas.gpkg")
    assert res.stats["review_areas"] == len(areas) == len(expected) > 0
    assert all(a.equals(b) for a, b in zip(areas.geometry, expected.geometry))
    assert not areas.intersects(merged.union_all() if hasattr(merged, "union_all") else merged.unary_union).any()
