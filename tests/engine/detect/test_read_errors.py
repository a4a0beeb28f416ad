"""Rasters that open fine but fail while their pixels are read (a GeoTIFF cut short, a
damaged late tile), and scenes without valid pixels: one line naming the file, exit 2,
nothing left behind; a warning for an all-nodata date."""
from __future__ import annotations

import re

import numpy as np
import pytest

from tests.rasters import damaged_geotiff, textured, write_geotiff

from .conftest import jsonl, run_cli


def _detect(before, after, model, out, *extra):
    return run_cli("--before", before, "--after", after, "--model", model, "--out-vector", out / "v.gpkg",
                   "--out-probability", out / "p.tif", "--out-mask", out / "m.tif", "--progress", "jsonl", *extra)


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
@pytest.mark.parametrize("date", ["before", "after"])
def test_damaged_late_tile_is_one_line_naming_the_file(tmp_path, checkpoints, how, date):
    image = textured(200, 200)
    good = write_geotiff(tmp_path / "good.tif", image)
    bad = damaged_geotiff(tmp_path / f"{how}.tif", image, how=how)
    out = tmp_path / "out"
    out.mkdir()
    before, after = (bad, good) if date == "before" else (good, bad)
    res = _detect(before, after, checkpoints["none"], out)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert str(bad) in lines[0] and "cannot read" in lines[0] and "truncated or damaged" in lines[0]
    assert re.search(r"cols \d+-199, rows \d+-199", lines[0])  # the window: the bottom-right tile
    events = jsonl(res.stdout)
    assert any(e["event"] == "progress" and e["done"] > 0 for e in events)  # it failed late, not on opening
    assert events[-1]["event"] == "error" and str(bad) in events[-1]["message"]
    assert not list(out.iterdir()) and not list(tmp_path.glob(".*"))


def test_damaged_tile_with_several_read_threads(tmp_path, checkpoints):
    image = textured(200, 200)
    good = write_geotiff(tmp_path / "good.tif", image)
    bad = damaged_geotiff(tmp_path / "bad.tif", image)
    out = tmp_path / "out"
    out.mkdir()
    res = _detect(good, bad, checkpoints["none"], out, "--read-threads", "3")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert str(bad) in res.stderr and "cannot read" in res.stderr
    assert not list(out.iterdir())


def test_damaged_16bit_raster_fails_while_sampling_percentiles(tmp_path, checkpoints):
    image = (textured(200, 200).astype(np.uint16) * 40)
    good = write_geotiff(tmp_path / "good.tif", image)
    bad = damaged_geotiff(tmp_path / "bad.tif", image)
    out = tmp_path / "out"
    out.mkdir()
    res = _detect(good, bad, checkpoints["none"], out)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert str(bad) in res.stderr and "cannot read" in res.stderr
    assert not list(out.iterdir())


def test_a_date_that_is_entirely_nodata_is_named_in_a_warning(tmp_path, checkpoints):
    image = textured(100, 100)
    before = write_geotiff(tmp_path / "before.tif", image)
    after = write_geotiff(tmp_path / "empty.tif", np.zeros_like(image), nodata=0)
    out = tmp_path / "out"
    out.mkdir()
    res = _detect(before, after, checkpoints["none"], out)
    assert res.returncode == 0, res.stderr
    warnings = [e["message"] for e in jsonl(res.stdout) if e["event"] == "log" and e["level"] == "warning"]
    assert any(str(after) in w and "entirely nodata" in w for w in warnings), warnings
    assert not any(str(before) in w and "entirely nodata" in w for w in warnings), warnings


def test_no_nodata_warning_for_a_normal_scene(tmp_path, checkpoints):
    image = textured(100, 100)
    image[:, :50] = 0  # half nodata is fine
    before = write_geotiff(tmp_path / "before.tif", image, nodata=0)
    after = write_geotiff(tmp_path / "after.tif", textured(100, 100, seed=1))
    out = tmp_path / "out"
    out.mkdir()
    res = _detect(before, after, checkpoints["none"], out)
    assert res.returncode == 0, res.stderr
    assert not [e for e in jsonl(res.stdout) if e["event"] == "log" and e["level"] == "warning" and "nodata" in e["message"]]
