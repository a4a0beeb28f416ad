"""Pixels that cannot be read (a GeoTIFF cut short, a damaged tile) become one line naming
the file and the window; what the reads saw tells whether a date is all nodata."""
from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from engine.errors import UserError
from engine.raster.pair import open_pair
from engine.raster.read_errors import gdal_message, reading
from tests.rasters import damaged_geotiff, textured, write_geotiff

ORIGIN = (500_000.0, 5_000_000.0)


@pytest.mark.parametrize("how,words", [("truncated", "Read error"), ("corrupt", "Decoding error")])
def test_damaged_late_tile_fails_only_when_read_and_names_file_and_window(tmp_path, how, words):
    img = textured(128, 128)
    good = write_geotiff(tmp_path / "good.tif", img)
    bad = damaged_geotiff(tmp_path / f"{how}.tif", img, how=how)
    with open_pair(good, bad) as pair:
        pair.read(Window(0, 0, 64, 64))  # the first tile is fine
        with pytest.raises(UserError) as exc:
            pair.read(Window(64, 64, 64, 64))
    msg = str(exc.value)
    assert msg.startswith(f"{bad}: cannot read cols 64-127, rows 64-127 (the file may be truncated or damaged): ")
    assert words in msg and "\n" not in msg and "See previous exception" not in msg


def test_damaged_after_on_another_grid_is_named_too(tmp_path):
    img = textured(128, 128)
    good = write_geotiff(tmp_path / "good.tif", img)
    # 1 m pixels: the after is resampled onto the before's 0.5 m grid
    bad = damaged_geotiff(tmp_path / "coarse.tif", img, pixel_size=1.0)
    with open_pair(good, bad) as pair:
        assert pair.after.warped
        with pytest.raises(UserError) as exc:
            pair.read(Window(0, 0, 128, 128))
    msg = str(exc.value)
    assert msg.startswith(f"{bad}: cannot read") and "resampled onto the before's grid" in msg and "\n" not in msg


def test_reading_leaves_other_errors_alone(tmp_path):
    with pytest.raises(ValueError):
        with reading(tmp_path / "x.tif"):
            raise ValueError("a bug, not a bad file")
    assert gdal_message(RuntimeError("")) == "RuntimeError"


def test_nodata_warnings_name_an_empty_date_or_disjoint_data(tmp_path):
    img = textured(64, 64)
    full = write_geotiff(tmp_path / "full.tif", img)
    empty = write_geotiff(tmp_path / "empty.tif", np.zeros_like(img), nodata=0)
    with open_pair(full, empty) as pair:
        pair.read(Window(0, 0, 64, 64))
        (warning,) = pair.nodata_warnings()
        assert warning.startswith(f"{empty}: entirely nodata") and "after" in warning
    left, right = img.copy(), img.copy()
    left[:, :, 32:] = 0
    right[:, :, :32] = 0
    a = write_geotiff(tmp_path / "left.tif", left, nodata=0)
    b = write_geotiff(tmp_path / "right.tif", right, nodata=0)
    with open_pair(a, b) as pair:
        other = pair.reopen()  # a reader thread's copy: what it reads counts too
        pair.read(Window(0, 0, 32, 64))
        other.read(Window(32, 0, 32, 64))
        (warning,) = pair.nodata_warnings()
        assert "never coincide" in warning and str(b) in warning
        other.close()
    with open_pair(full, a) as pair:
        pair.read(Window(0, 0, 64, 64))
        assert pair.nodata_warnings() == []
