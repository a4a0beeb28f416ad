"""Vectorization throughput and memory: polygonize_to_file on large synthetic change masks.

The mask (UTM 33N, 0.5 m pixels) holds building-sized blobs (rectangles and L-shapes,
6-80 px a side, many crossing strip seams) at a fixed density (3000 on 8192 x 8192), with
a uint8 probability raster; both are tiled, compressed GeoTIFFs written strip by strip to
a temporary folder. The timing covers reading both rasters in strips, labelling,
polygonizing, merging across seams, statistics, areas and writing a GeoPackage.

Peak memory is measured in a child process that only polygonizes (ru_maxrss), at two
scene sizes: it should not grow with the scene.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

BLOBS_PER_MPX = 3000 / (8192 * 8192 / 1e6)
_STRIP = 1024


def _rectangles(size: int, seed: int = 0) -> np.ndarray:
    """Blob rectangles (row, col, height, width) for a ``size``² scene; L-shapes are two of them."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(BLOBS_PER_MPX * size * size / 1e6)))
    hw = rng.integers(6, 80, size=(n, 2))
    rc = rng.integers(0, max(1, size - 120), size=(n, 2))
    rects = [np.column_stack([rc, hw])]
    ell = rng.random(n) < 0.3  # an L: a wing off one side
    wing = np.column_stack([rc[ell, 0] + hw[ell, 0] // 2, rc[ell, 1], hw[ell, 0], np.maximum(3, hw[ell, 1] // 3)])
    rects.append(wing)
    return np.concatenate(rects)


def write_synthetic(folder: Path, size: int, seed: int = 0) -> tuple[Path, Path]:
    """Write mask.tif and prob.tif (``size``², uint8, nodata 255) strip by strip; returns their paths."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rects = _rectangles(size, seed)
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500_000.0, 5_000_000.0, 0.5, 0.5), nodata=255, tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate")
    mask_path, prob_path = folder / "mask.tif", folder / "prob.tif"
    with rasterio.open(mask_path, "w", **profile) as m, rasterio.open(prob_path, "w", **profile) as p:
        for r0 in range(0, size, _STRIP):
            n = min(_STRIP, size - r0)
            strip = np.zeros((n, size), np.uint8)
            hit = (rects[:, 0] < r0 + n) & (rects[:, 0] + rects[:, 2] > r0)
            for r, c, h, w in rects[hit]:
                strip[max(0, r - r0):min(n, r + h - r0), c:c + w] = 1
            window = Window(0, r0, size, n)
            m.write(strip, 1, window=window)
            p.write(np.where(strip == 1, 220, 12).astype(np.uint8), 1, window=window)
    return mask_path, prob_path


def measure(size: int = 8192, window_rows: int = 1024, out_ext: str = ".gpkg", repeat: int = 1) -> dict:
    """Time polygonize_to_file on a ``size``² synthetic mask; returns seconds, Mpx/s, polygons."""
    from engine.vector import polygonize_to_file

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        mask_path, prob_path = write_synthetic(tmp_path, size)
        polygonize_to_file(mask_path, None, tmp_path / f"warm{out_ext}", window_rows=64)  # imports, caches
        times, stats = [], {}
        for i in range(repeat):
            out = tmp_path / f"out{i}{out_ext}"
            t0 = time.perf_counter()
            stats = polygonize_to_file(mask_path, prob_path, out, window_rows=window_rows)
            times.append(time.perf_counter() - t0)
    seconds = sorted(times)[len(times) // 2]
    return {"size": size, "window_rows": window_rows, "format": out_ext, "polygons": stats["polygons"],
            "seconds": round(seconds, 3), "mpx_per_s": round(size * size / seconds / 1e6, 1)}


_CHILD = """
import json, resource, sys, time
from engine.vector import polygonize_to_file
t0 = time.perf_counter()
stats = polygonize_to_file(sys.argv[1], sys.argv[2], sys.argv[3])
print(json.dumps({"seconds": time.perf_counter() - t0, "polygons": stats["polygons"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def peak_rss(size: int) -> dict:
    """Peak RSS (MB) of a process that polygonizes a ``size``² synthetic mask (default options)."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        mask_path, prob_path = write_synthetic(tmp_path, size)
        done = subprocess.run([sys.executable, "-c", _CHILD, str(mask_path), str(prob_path), str(tmp_path / "o.gpkg")],
                              cwd=root, capture_output=True, text=True, check=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {"size": size, "polygons": row["polygons"], "peak_rss_mb": round(row["peak_rss_mb"], 1),
            "mpx_per_s": round(size * size / row["seconds"] / 1e6, 1)}


def run(device: str = "cpu", sizes: tuple[int, ...] = (4096, 16384)) -> Iterator[dict]:
    """Rows for ``python -m benchmarks --only vector`` (CPU only; ``device`` is ignored)."""
    yield {"name": "vectorize_mpx_per_s", **measure()}
    for size in sizes:
        yield {"name": "vectorize_peak_rss", **peak_rss(size)}


if __name__ == "__main__":
    for result in run():
        print(json.dumps(result), flush=True)
