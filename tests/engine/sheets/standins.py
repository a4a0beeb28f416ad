"""Stand-in models and scenes for the sheets tests (importable by Dask worker processes)."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from tests.rasters import write_geotiff

ROOT = Path(__file__).resolve().parents[3]
ORIGIN = (500_000.0, 5_000_000.0)
PIXEL = 0.5


class BlurDifference:
    """|after - before| averaged over channels, then a 9x9 box blur: each output pixel
    depends on its neighbours, so sheet edges are exact only with a halo."""

    def __init__(self, gain: float = 1.5, size: int = 9) -> None:
        self.gain, self.size = gain, size

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        d = np.abs(batch[:, 3:] - batch[:, :3]).mean(axis=1)
        d = ndimage.uniform_filter(d, size=(1, self.size, self.size), mode="reflect")
        return np.clip(d * self.gain, 0.0, 1.0).astype(np.float32)

    def describe(self) -> dict:
        return {"device": "cpu (stand-in)", "precision": "fp32"}


def blob_scene(rows: int, cols: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(before, after) uint8 (3, rows, cols): a texture and the same with random bright blobs."""
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.normal(120, 30, (3, rows, cols)), (0, 2, 2))
    before = np.clip(base, 0, 255).astype(np.uint8)
    noise = ndimage.gaussian_filter(rng.normal(size=(rows, cols)), 4.0)
    blobs = noise > np.quantile(noise, 0.8)
    after = before.copy()
    after[:, blobs] = 250
    return before, after


def cut(before: np.ndarray, after: np.ndarray, folder: Path, row_cuts, col_cuts, drop=()) -> Path:
    """Cut both dates into sheets at the given pixel rows/cols; write a CSV id,before,after.
    Sheets in ``drop`` (ids "r{i}c{j}") are left out of the list."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [0, *row_cuts, before.shape[1]]
    cols = [0, *col_cuts, before.shape[2]]
    lines = []
    for i in range(len(rows) - 1):
        for j in range(len(cols) - 1):
            sid = f"r{i}c{j}"
            if sid in drop:
                continue
            r0, r1, c0, c1 = rows[i], rows[i + 1], cols[j], cols[j + 1]
            origin = (ORIGIN[0] + c0 * PIXEL, ORIGIN[1] - r0 * PIXEL)
            for date, arr in (("before", before), ("after", after)):
                write_geotiff(folder / f"{date}_{sid}.tif", arr[:, r0:r1, c0:c1], origin=origin, pixel_size=PIXEL)
            lines.append([sid, f"before_{sid}.tif", f"after_{sid}.tif"])
    csv_path = folder / "sheets.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "before", "after"])
        w.writerows(lines)
    return csv_path


class DieOnce(BlurDifference):
    """Like :class:`BlurDifference`, but the first call in any process kills that process
    (a worker lost mid-sheet) unless ``marker`` exists; it creates ``marker`` first."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import os

        if not os.path.exists(self.marker):
            Path(self.marker).write_text("died once\n")
            os._exit(9)
        return super().__call__(batch)


class Noisy(BlurDifference):
    """Like :class:`BlurDifference`, but each call logs an error on Dask's worker logger (the
    noise of a heartbeat that failed while the cluster closed)."""

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import logging

        logging.getLogger("distributed.worker").error("hrmnet-test: Failed to communicate with scheduler during heartbeat")
        return super().__call__(batch)


def sheets_cli(*args, command: str = "sheets") -> subprocess.CompletedProcess:
    """``python -m engine COMMAND ARGS`` from the repository root (output captured, 5 min limit)."""
    return subprocess.run([sys.executable, "-m", "engine", command, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
