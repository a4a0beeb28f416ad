"""Radiometry: 8-bit as the checkpoint says, stretch for 16-bit/float, nodata, bands."""
from __future__ import annotations

import numpy as np
import pytest

from engine.checkpoint import ModelInfo
from engine.errors import UserError
from engine.raster.radiometry import (choose_radiometry, model_input, needs_stretch, normalize, percentiles,
                                      sample_windows, select_bands)

SCALING = ModelInfo().scaling  # uint8, 1/255, ImageNet mean/std


def test_uint8_uses_the_checkpoint_scaling_exactly():
    rad = choose_radiometry("uint8", SCALING)
    assert rad.mode == "checkpoint"
    raw = np.array([0, 128, 255], np.uint8).reshape(3, 1, 1) * np.ones((3, 2, 2), np.uint8)
    got = normalize(raw, rad)
    mean = np.array(SCALING["mean"])[:, None, None]
    std = np.array(SCALING["std"])[:, None, None]
    np.testing.assert_allclose(got, (raw / 255.0 - mean) / std, atol=1e-5)


def test_uint16_without_matching_checkpoint_scaling_is_stretched_2_98():
    assert needs_stretch("uint16", SCALING)
    assert not needs_stretch("uint8", SCALING)
    rng = np.random.default_rng(1)
    raw = rng.integers(100, 4000, (3, 64, 64)).astype(np.uint16)
    low, high = percentiles([(raw, np.ones((64, 64), bool))])
    np.testing.assert_allclose(low, np.percentile(raw.reshape(3, -1), 2, axis=1))
    rad = choose_radiometry("uint16", SCALING, low, high)
    assert rad.mode == "stretch" and rad.describe()["low"] == pytest.approx(low, rel=1e-6)
    x = normalize(raw, rad)
    v = x * np.array(SCALING["std"])[:, None, None] + np.array(SCALING["mean"])[:, None, None]
    assert v.min() >= -1e-5 and v.max() <= 1 + 1e-5
    assert abs((v <= 1e-5).mean() - 0.02) < 0.01 and abs((v >= 1 - 1e-5).mean() - 0.02) < 0.01


def test_checkpoint_scaling_for_uint16_is_used_when_the_types_match():
    scaling = {"dtype": "uint16", "scale": [1 / 10000.0] * 3, "mean": [0.1] * 3, "std": [0.2] * 3}
    rad = choose_radiometry("uint16", scaling)
    assert rad.mode == "checkpoint"
    got = normalize(np.full((3, 1, 1), 5000, np.uint16), rad)
    np.testing.assert_allclose(got, (0.5 - 0.1) / 0.2, atol=1e-5)
    assert choose_radiometry("uint8", scaling).mode == "8-bit"


def test_percentiles_ignore_nodata_and_nan():
    raw = np.full((1, 10, 10), np.nan, np.float32)
    raw[0, :5] = np.linspace(0, 1, 50).reshape(5, 10)
    valid = np.zeros((10, 10), bool)
    valid[:6] = True  # row 5 is valid but NaN
    low, high = percentiles([(raw, valid)])
    assert low[0] == pytest.approx(0.02, abs=0.01) and high[0] == pytest.approx(0.98, abs=0.01)


def test_invalid_pixels_are_equal_in_both_dates():
    rad = choose_radiometry("uint8", SCALING)
    b = np.zeros((3, 4, 4), np.uint8)
    a = np.full((3, 4, 4), 255, np.uint8)
    valid = np.ones((4, 4), bool)
    valid[0, 0] = False
    x = model_input(b, a, valid, rad, rad)
    assert x.shape == (6, 4, 4) and x.dtype == np.float32
    assert (x[:, 0, 0] == 0).all()
    assert (x[:3, 1, 1] != x[3:, 1, 1]).all()


def test_band_selection_defaults_and_errors():
    assert select_bands("a.tif", 4, None, "--bands-before") == (1, 2, 3)
    assert select_bands("a.tif", 1, None, "--bands-before") == (1,)
    assert select_bands("a.tif", 2, None, "--bands-before", ["gray", "alpha"]) == (1,)
    assert select_bands("a.tif", 4, [3, 2, 1], "--bands-before") == (3, 2, 1)
    with pytest.raises(UserError, match=r"a\.tif: band 5 out of range"):
        select_bands("a.tif", 4, [1, 2, 5], "--bands-after")
    with pytest.raises(UserError, match="1 or 3"):
        select_bands("a.tif", 4, [1, 2], "--bands-after")


def test_sample_windows_spread_and_fit():
    ws = sample_windows(1000, 600, size=256, count=16)
    assert len(ws) == 16
    assert all(w.col_off + w.width <= 1000 and w.row_off + w.height <= 600 for w in ws)
    assert sample_windows(50, 40) [0].width == 50
