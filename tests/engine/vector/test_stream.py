"""Polygonizer: mask strips fed from memory (as a pipeline produces them) → vector file."""
from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import shapely
from rasterio.transform import from_origin
from scipy import ndimage

from engine.errors import UserError
from engine.vector import Polygonizer, decode_mask, decode_prob, polygonize_to_file
from tests.rasters import UTM33N, write_geotiff

TRANSFORM = from_origin(500_000.0, 5_000_000.0, 0.5, 0.5)


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(300, 220)), 3.0)
    mask = (noise > np.quantile(noise, 0.75)).astype(np.uint8)
    prob = np.where(mask == 1, rng.integers(130, 255, mask.shape), rng.integers(0, 120, mask.shape)).astype(np.uint8)
    return mask, prob


def _canonical(path) -> list:
    frame = pyogrio.read_dataframe(path)
    rows = [(shapely.normalize(g).wkb, round(a, 6), round(m, 9), round(x, 9))
            for g, a, m, x in zip(frame.geometry, frame.area_m2, frame.mean_prob, frame.max_prob)]
    return sorted(rows)


def test_strips_of_any_height_from_memory_match_the_file_reader(tmp_path):
    mask, prob = _scene()
    write_geotiff(tmp_path / "mask.tif", mask, transform=TRANSFORM, nodata=255)
    write_geotiff(tmp_path / "prob.tif", prob, transform=TRANSFORM, nodata=255)
    reference = polygonize_to_file(tmp_path / "mask.tif", tmp_path / "prob.tif", tmp_path / "ref.gpkg")
    with Polygonizer(tmp_path / "mem.gpkg", transform=TRANSFORM, crs=UTM33N, width=220, height=300) as poly:
        r0 = 0
        for rows in (7, 1, 50, 64, 100, 78):  # uneven strips, as a tile blender finishes them
            poly.add(decode_mask(mask[r0:r0 + rows], 255), decode_prob(prob[r0:r0 + rows], 255))
            r0 += rows
        stats = poly.close()
    assert stats == reference
    assert _canonical(tmp_path / "mem.gpkg") == _canonical(tmp_path / "ref.gpkg")


def test_an_error_inside_leaves_nothing(tmp_path, monkeypatch):
    import engine.vector.stream as stream

    monkeypatch.setattr(stream, "BATCH", 1)  # write as soon as polygons are finished
    mask, _ = _scene()
    with pytest.raises(RuntimeError, match="boom"):
        with Polygonizer(tmp_path / "out.shp", transform=TRANSFORM, crs=UTM33N, width=220, height=300) as poly:
            poly.add(decode_mask(mask[:200]))
            assert poly.count > 0 and any(tmp_path.iterdir())
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_rows_must_fit_the_grid_and_options_are_checked(tmp_path):
    with pytest.raises(UserError, match="--simplify"):
        Polygonizer(tmp_path / "x.gpkg", transform=TRANSFORM, crs=UTM33N, width=4, height=4, simplify_m=float("nan"))
    with Polygonizer(tmp_path / "out.gpkg", transform=TRANSFORM, crs=UTM33N, width=4, height=4) as poly:
        with pytest.raises(ValueError, match="more rows"):
            poly.add(np.zeros((5, 4), bool))
        poly.add(np.ones((4, 4), bool))
        assert poly.close()["polygons"] == 1


def test_decoders_follow_the_agreed_encodings():
    np.testing.assert_array_equal(decode_mask(np.array([[0, 1, 255, 7]], np.uint8), 255), [[False, True, False, True]])
    np.testing.assert_array_equal(decode_mask(np.array([[0.0, 1.0, np.nan]], np.float32)), [[False, True, False]])
    p = decode_prob(np.array([[0, 127, 254, 255]], np.uint8), 255)
    np.testing.assert_allclose(p[0, :3], [0.0, 0.5, 1.0])
    assert np.isnan(p[0, 3])
    f = decode_prob(np.array([[0.25, -1.0, np.nan, 1.0]], np.float32), -1.0)
    assert f[0, 0] == 0.25 and f[0, 3] == 1.0 and np.isnan(f[0, 1]) and np.isnan(f[0, 2])


def test_a_big_strip_is_labelled_in_parts(tmp_path, monkeypatch):
    import engine.vector.stream as stream

    mask, prob = _scene(1)
    with Polygonizer(tmp_path / "one.gpkg", transform=TRANSFORM, crs=UTM33N, width=220, height=300) as poly:
        poly.add(decode_mask(mask), decode_prob(prob))
        whole = poly.close()
    monkeypatch.setattr(stream, "MAX_STRIP_PIXELS", 220 * 16)  # 16 rows at a time
    fed = []
    original = stream.StripMerger.feed

    def feed(self, m, *args, **kwargs):
        fed.append(len(m))
        return original(self, m, *args, **kwargs)

    monkeypatch.setattr(stream.StripMerger, "feed", feed)
    with Polygonizer(tmp_path / "parts.gpkg", transform=TRANSFORM, crs=UTM33N, width=220, height=300) as poly:
        poly.add(decode_mask(mask), decode_prob(prob))
        parts = poly.close()
    assert max(fed) == 16 and sum(fed) == 300
    assert parts == whole
    assert _canonical(tmp_path / "parts.gpkg") == _canonical(tmp_path / "one.gpkg")
