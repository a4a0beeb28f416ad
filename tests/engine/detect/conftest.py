"""Fixtures for detection tests: scenes with a known changed square, real HRMNet checkpoints,
and a helper that runs the real CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rasters import textured, write_geotiff

ROOT = Path(__file__).resolve().parents[3]
ORIGIN = (500_000.0, 5_000_000.0)
PIXEL = 0.5
FINAL_BIAS = "kr_decoder.mask_generation.mask_generation.3"


def changed_pair(folder: Path, size: tuple[int, int] = (200, 200), square: tuple[int, int, int, int] = (60, 70, 40, 40),
                 **geo) -> tuple[Path, Path]:
    """before/after GeoTIFFs (UTM 33N, 0.5 m unless ``geo`` says otherwise) that are
    identical except for a square (col, row, width, height): dark before, bright after."""
    h, w = size
    before = textured(h, w)
    c, r, sw, sh = square
    before[:, r:r + sh, c:c + sw] = 20
    after = before.copy()
    after[:, r:r + sh, c:c + sw] = 235
    return (write_geotiff(folder / "before.tif", before, **geo), write_geotiff(folder / "after.tif", after, **geo))


def _checkpoint(path: Path, bias: float | None) -> Path:
    import torch

    from engine.checkpoint import ModelInfo, save_checkpoint
    from engine.model import HRMNet

    torch.manual_seed(0)
    net = HRMNet()
    if bias is not None:  # the final logit becomes a constant: all change or none
        with torch.no_grad():
            getattr(net.kr_decoder.mask_generation.mask_generation, "3").weight.zero_()
            getattr(net.kr_decoder.mask_generation.mask_generation, "3").bias.fill_(bias)
    save_checkpoint(path, net, ModelInfo(tile_size=96, overlap=16), dtype=torch.float16)
    return path


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Real HRMNet checkpoints (tile 96, overlap 16): ``random``, ``all`` (every pixel
    changed) and ``none`` (no pixel changed)."""
    d = tmp_path_factory.mktemp("models")
    return {"random": _checkpoint(d / "random.safetensors", None), "all": _checkpoint(d / "all.safetensors", 20.0),
            "none": _checkpoint(d / "none.safetensors", -20.0)}


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m engine detect ARGS`` in the repository root."""
    return subprocess.run([sys.executable, "-m", "engine", "detect", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def jsonl(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def square_bounds(square, origin=ORIGIN, pixel=PIXEL) -> tuple[float, float, float, float]:
    c, r, w, h = square
    return (origin[0] + c * pixel, origin[1] - (r + h) * pixel, origin[0] + (c + w) * pixel, origin[1] - r * pixel)


@pytest.fixture()
def pair(tmp_path) -> tuple[Path, Path]:
    return changed_pair(tmp_path)


@pytest.fixture()
def setup(tmp_path):
    """A small changed pair and an empty output folder: (before, after, out)."""
    before, after = changed_pair(tmp_path, size=(40, 50), square=(5, 5, 10, 10))
    out = tmp_path / "out"
    out.mkdir()
    return before, after, out
