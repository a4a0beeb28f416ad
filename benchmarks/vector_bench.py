"""Vectorization throughput: Mpx/s of polygonize_to_file on a large synthetic change mask.

The mask is 8192 x 8192 (UTM 33N, 0.5 m pixels) with a few thousand building-sized
blobs (rectangles and L-shapes, 6-80 px a side, some crossing strip seams) plus a uint8
probability raster; both are tiled, compressed GeoTIFFs written to a temporary folder.
The timing covers reading both rasters in strips, labelling, polygonizing, merging
across seams, statistics, areas and writing a GeoPackage.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np


def synthetic_mask(size: int = 8192, blobs: int = 3000, seed: int = 0) -> np.ndarray:
    """A (size, size) uint8 mask with about ``blobs`` rectangles and L-shapes of 1s."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(blobs):
        h, w = rng.integers(6, 80, size=2)
        r, c = rng.integers(0, size - 80, size=2)
        mask[r:r + h, c:c + w] = 1
        if rng.random() < 0.3:  # an L: a wing off one side
            mask[r + h // 2:r + h + h // 2, c:c + max(3, w // 3)] = 1
    return mask


def _write(path: Path, array: np.ndarray, nodata: int) -> None:
    import rasterio
    from rasterio.transform import from_origin

    profile = dict(driver="GTiff", width=array.shape[1], height=array.shape[0], count=1, dtype="uint8",
                   crs="EPSG:32633", transform=from_origin(500_000.0, 5_000_000.0, 0.5, 0.5), nodata=nodata,
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def measure(size: int = 8192, blobs: int = 3000, window_rows: int = 1024, out_ext: str = ".gpkg",
            repeat: int = 1) -> dict:
    """Time polygonize_to_file on a ``size``² synthetic mask; returns seconds, Mpx/s, polygons."""
    from engine.vector import polygonize_to_file

    mask = synthetic_mask(size, blobs)
    prob = np.where(mask == 1, 220, 12).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        _write(tmp_path / "mask.tif", mask, nodata=255)
        _write(tmp_path / "prob.tif", prob, nodata=255)
        del mask, prob
        _write(tmp_path / "warm.tif", np.eye(64, dtype=np.uint8), nodata=255)
        polygonize_to_file(tmp_path / "warm.tif", None, tmp_path / f"warm{out_ext}")  # imports, caches
        times, stats = [], {}
        for i in range(repeat):
            out = tmp_path / f"out{i}{out_ext}"
            t0 = time.perf_counter()
            stats = polygonize_to_file(tmp_path / "mask.tif", tmp_path / "prob.tif", out, window_rows=window_rows)
            times.append(time.perf_counter() - t0)
    seconds = sorted(times)[len(times) // 2]
    return {"size": size, "blobs": blobs, "window_rows": window_rows, "format": out_ext,
            "polygons": stats["polygons"], "seconds": round(seconds, 3),
            "mpx_per_s": round(size * size / seconds / 1e6, 1)}


def run(device: str = "cpu") -> Iterator[dict]:
    """Rows for ``python -m benchmarks --only vector`` (CPU only; ``device`` is ignored)."""
    yield {"name": "vectorize_mpx_per_s", **measure()}


if __name__ == "__main__":
    import json

    for row in run():
        print(json.dumps(row))
