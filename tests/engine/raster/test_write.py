"""GeoTIFF outputs: encoding, tiled + compressed + overviews, grid and CRS, abort."""
from __future__ import annotations

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from engine.raster.write import (GeoTiffStripWriter, decode_probability, encode_probability, temporary_path,
                                 threshold_mask)

TRANSFORM = Affine(0.5, 0, 500_000.0, 0, -0.5, 5_000_000.0)


def test_probability_encoding_round_trips_and_marks_nodata():
    p = np.array([[0.0, 0.5, 1.0, 0.2]], np.float32)
    valid = np.array([[True, True, True, False]])
    u8 = encode_probability(p, valid, "uint8")
    assert u8.tolist() == [[0, 127, 254, 255]]
    back = decode_probability(u8)
    assert np.allclose(back[0, :3], p[0, :3], atol=0.5 / 254) and np.isnan(back[0, 3])
    f32 = encode_probability(p, valid, "float32")
    assert f32.dtype == np.float32 and f32[0, 3] == -1.0 and f32[0, 1] == 0.5


def test_mask_is_0_1_with_255_nodata():
    p = np.array([[0.4, 0.5, 0.6, 0.9]], np.float32)
    valid = np.array([[True, True, True, False]])
    assert threshold_mask(p, valid, 0.5).tolist() == [[0, 0, 1, 255]]


def test_temporary_path_is_in_a_private_folder_beside_the_target_with_its_extension(tmp_path):
    import os
    import stat

    from engine.outputs import release_run

    t = temporary_path(tmp_path / "out.tif", "prob")
    try:
        (folder,) = tmp_path.iterdir()  # mkdtemp: exclusive, unpredictable, 0700
        assert folder.name.startswith(".hrmnet-tmp-") and stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert t.suffix == ".tif" and os.path.samefile(t.parent, folder)
        assert temporary_path(tmp_path / "other.tif", "mask").parent == t.parent  # one folder a run
    finally:
        release_run()
    assert list(tmp_path.iterdir()) == []


def test_writer_writes_tiled_compressed_geotiffs_with_overviews(tmp_path):
    w, h = 600, 520
    prob_path, mask_path = tmp_path / "p.tif", tmp_path / "m.tif"
    writer = GeoTiffStripWriter(w, h, TRANSFORM, CRS.from_epsg(32633), prob_path=prob_path, mask_path=mask_path,
                                threshold=0.5)
    rng = np.random.default_rng(0)
    full = rng.random((h, w)).astype(np.float32)
    for r0 in range(0, h, 100):  # strips not aligned with blocks
        n = min(100, h - r0)
        writer.write(r0, full[r0:r0 + n], np.ones((n, w), bool))
    writer.close()
    with rasterio.open(prob_path) as ds:
        assert ds.crs.to_epsg() == 32633 and ds.transform == TRANSFORM
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255
        assert ds.profile["tiled"] and ds.compression.name.lower() == "deflate"
        assert ds.overviews(1) == [2]
        np.testing.assert_allclose(ds.read(1) / 254.0, full, atol=0.5 / 254 + 1e-6)
    with rasterio.open(mask_path) as ds:
        assert ds.nodata == 255 and ds.overviews(1) == [2]
        np.testing.assert_array_equal(ds.read(1), (full > 0.5).astype(np.uint8))
    assert writer.changed_pixels == int((full > 0.5).sum())


def test_float32_option(tmp_path):
    path = tmp_path / "p.tif"
    writer = GeoTiffStripWriter(40, 30, TRANSFORM, CRS.from_epsg(32633), prob_path=path, prob_dtype="float32")
    writer.write(0, np.full((30, 40), 0.25, np.float32), np.ones((30, 40), bool))
    writer.close()
    with rasterio.open(path) as ds:
        assert ds.dtypes[0] == "float32" and ds.nodata == -1.0
        assert (ds.read(1) == 0.25).all()


def test_abort_leaves_nothing(tmp_path):
    writer = GeoTiffStripWriter(40, 30, TRANSFORM, None, prob_path=tmp_path / "p.tif", mask_path=tmp_path / "m.tif")
    writer.write(0, np.zeros((10, 40), np.float32), np.ones((10, 40), bool))
    writer.abort()
    assert list(tmp_path.iterdir()) == []
