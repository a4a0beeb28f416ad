"""A dataset tile damaged after its header (a GeoTIFF cut short, a corrupt PNG) stops
evaluate and train with one line naming the tile, also when DataLoader worker processes
read it (torch re-raises a worker's error with its whole traceback as the message)."""
from __future__ import annotations

import pytest
import rasterio

from tests.engine.train.conftest import engine
from tests.engine.train.test_evaluate import constant_model
from tests.engine.train.tiny_dataset import make_dataset
from tests.cli_errors import one_line_error
from tests.rasters import damaged_geotiff


def _damage(tile, how: str) -> None:
    with rasterio.open(tile) as ds:
        array, transform = ds.read(), ds.transform
    damaged_geotiff(tile, array, how=how, transform=transform)


@pytest.mark.parametrize("workers", ["0", "1"])
@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_evaluate_names_the_damaged_tile(tmp_path, workers, how):
    data = make_dataset(tmp_path / "data", {"test": 3}, size=128, fmt="tif")
    bad = data / "test" / "B" / "t01.tif"
    _damage(bad, how)
    model = constant_model(tmp_path / "m.safetensors", -5.0)
    p = engine("evaluate", "--data", str(data), "--model", str(model), "--device", "cpu", "--workers", workers,
               "--progress", "none")
    one_line_error(p, str(bad), "cannot read", "truncated or damaged", skip_warnings=True)
    assert "See previous exception" not in p.stderr


def test_evaluate_names_a_truncated_png(tmp_path):
    data = make_dataset(tmp_path / "data", {"test": 2}, size=64)
    bad = data / "test" / "A" / "t01.png"
    bad.write_bytes(bad.read_bytes()[:200])
    model = constant_model(tmp_path / "m.safetensors", -5.0)
    p = engine("evaluate", "--data", str(data), "--model", str(model), "--device", "cpu", "--progress", "none")
    one_line_error(p, str(bad), skip_warnings=True)


def test_train_with_worker_processes_names_the_damaged_tile(tmp_path):
    data = make_dataset(tmp_path / "data", {"train": 2}, size=64, fmt="tif")
    bad = data / "train" / "A" / "t01.tif"
    _damage(bad, "corrupt")
    p = engine("train", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "2",
               "--crop", "32", "--device", "cpu", "--workers", "1", "--progress", "none")
    one_line_error(p, str(bad), "cannot read", skip_warnings=True)
