"""Map sheets benchmark (issue 8): N x N sheets of 1024² with the demo model.

Rows (sheets/s and CPU-seconds of the whole process tree):

* ``loop``: one ``python -m engine detect`` process per sheet, one after another (what
  QGIS batch mode does): every sheet pays start-up and model load;
* ``sheets_w1``: ``python -m engine sheets --workers 1`` (in-process, model loaded once);
* ``sheets_w2``: ``--workers 2`` (a local Dask cluster of two worker processes);

plus the halo's extra tiles (tiles the sheet jobs ran / tiles of one run on the mosaic) and
the peak RSS of each worker process after its first and its last sheet (flat = memory does
not grow with the number of sheets).

Memory (issue 18): ``rss_sheets`` rows, the peak RSS of one ``sheets --workers 1`` process
(in-process: computing and the merge in one process) over 4, 16 (and with
``HRMNET_BENCH_BIG=1``, 64) sheets of 2048², with :class:`ManyBlobs`, a stand-in model that
returns at once and gives tens of thousands of polygons per sheet; then the same command
again (every sheet done: verification and the streaming merge alone). Each in a fresh
process, the peak (VmHWM) reset just before ``run_sheets``.

``python -m benchmarks --only sheets`` (``make bench``), or alone:
``python -m benchmarks.sheets_bench [--grid 4] [--size 1024] [--device cpu]``,
``python -m benchmarks.sheets_bench --rss 4,16,64 [--size 2048]``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess  # nosec B404 - the benchmark runs the engine's own CLI (list argv, no shell)
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODEL = ROOT / "engine" / "demo" / "hrmnet_demo.safetensors"


def _sheets(folder: Path, grid: int, size: int) -> Path:
    """``grid`` x ``grid`` sheet pairs of ``size``² (UTM 33N, 0.5 m) and their CSV."""
    from tests.rasters import textured, write_geotiff

    rows = []
    rng = np.random.default_rng(5)
    for i in range(grid):
        for j in range(grid):
            before = textured(size, size, seed=i * grid + j)
            after = before.copy()
            for _ in range(8):
                r, c = rng.integers(0, size - 60, 2)
                after[:, r:r + 40, c:c + 50] = 240
            origin = (500_000.0 + j * size * 0.5, 5_000_000.0 - i * size * 0.5)
            sid = f"{i}_{j}"
            write_geotiff(folder / f"b_{sid}.tif", before, origin=origin)
            write_geotiff(folder / f"a_{sid}.tif", after, origin=origin)
            rows.append([sid, f"b_{sid}.tif", f"a_{sid}.tif"])
    path = folder / "sheets.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["id", "before", "after"], *rows])
    return path


def _timed(argv: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall s, CPU s of the child tree, result)."""
    c0 = os.times()
    t0 = time.perf_counter()
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)  # nosec B603 - our own CLI
    wall = time.perf_counter() - t0
    c1 = os.times()
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}: exit {res.returncode}: {res.stderr[-2000:]}")
    return wall, (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system), res


def run(device: str = "cpu", grid: int = 4, size: int = 1024) -> Iterator[dict]:
    n = grid * grid
    py = [sys.executable, "-m", "engine"]
    with tempfile.TemporaryDirectory(prefix="hrmnet-sheets-bench-") as tmp:
        folder = Path(tmp)
        sheets = _sheets(folder, grid, size)
        common = ["--model", str(MODEL), "--device", device, "--progress", "none"]

        wall, cpu = 0.0, 0.0
        for row in list(csv.reader(open(sheets)))[1:]:
            w, c, _ = _timed(py + ["detect", "--before", str(folder / row[1]), "--after", str(folder / row[2]),
                                   "--out-vector", str(folder / f"loop_{row[0]}.gpkg")] + common)
            wall, cpu = wall + w, cpu + c
        yield {"bench": "loop", "sheets": n, "size": size, "seconds": round(wall, 2),
               "sheets_per_s": round(n / wall, 4), "cpu_s": round(cpu, 1)}

        for workers in (1, 2):
            argv = py + ["sheets", "--sheets", str(sheets), "--run", str(folder / f"run{workers}"), "--workers",
                         str(workers), "--out-vector", str(folder / f"sheets{workers}.gpkg")] + common
            argv[argv.index("none")] = "jsonl"
            w, c, res = _timed(argv)
            events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
            start = next(e for e in events if e["event"] == "start")
            rss: dict = {}
            for e in events:
                if e["event"] == "sheet":
                    rss.setdefault(e["pid"], []).append(e["peak_rss_mib"])
            yield {"bench": f"sheets_w{workers}", "sheets": n, "size": size, "seconds": round(w, 2),
                   "sheets_per_s": round(n / w, 4), "cpu_s": round(c, 1),
                   "tiles_mosaic": start["tiles_mosaic"], "tiles_sheets": start["tiles_sheets"],
                   "halo_extra": round(start["tiles_sheets"] / start["tiles_mosaic"] - 1, 3),
                   "peak_rss_mib_first_last": {str(pid): [v[0], v[-1], len(v)] for pid, v in rss.items()}}
    yield from rss_rows((4, 16, 64) if os.environ.get("HRMNET_BENCH_BIG") == "1" else (4, 16))


class ManyBlobs:
    """Stand-in model that returns at once: change where the after's first band is bright
    (the 8 px blocks of :func:`tests.rasters.textured`), so a 2048² sheet gives tens of
    thousands of polygons; the same pixels give the same answer in every tile."""

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.where(batch[:, 3] > 0.45, np.float32(0.9), np.float32(0.1))

    def describe(self) -> dict:
        return {"device": "cpu (instant stand-in)", "precision": "fp32"}


def _vrt_sheets(folder: Path, count: int, size: int) -> Path:
    """``count`` (a square) sheet pairs of ``size``²: small VRTs placing one textured
    source pair at each sheet's position (distinct files, little disk)."""
    import rasterio

    from tests.rasters import textured, write_geotiff

    grid = int(round(count ** 0.5))
    before = textured(size, size, seed=11)
    after = textured(size, size, seed=12)
    src = {d: write_geotiff(folder / f"src_{d}.tif", arr) for d, arr in (("b", before), ("a", after))}
    with rasterio.open(src["b"]) as ds:
        crs, x0, y0, px = ds.crs.to_wkt(), ds.transform.c, ds.transform.f, ds.transform.a
    rows = []
    for i in range(grid):
        for j in range(grid):
            sid = f"{i}_{j}"
            for d in ("b", "a"):
                bands = "".join(
                    f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="0">'
                    f'{src[d]}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>'
                    for b in (1, 2, 3))
                (folder / f"{d}_{sid}.vrt").write_text(
                    f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>{crs}</SRS><GeoTransform>'
                    f'{x0 + j * size * px}, {px}, 0, {y0 - i * size * px}, 0, {-px}</GeoTransform>{bands}</VRTDataset>')
            rows.append([sid, f"b_{sid}.vrt", f"a_{sid}.vrt"])
    path = folder / "sheets.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["id", "before", "after"], *rows])
    return path


def rss_run(folder: Path) -> dict:
    """One ``run_sheets --workers 1`` over the sheets in ``folder`` (call in a fresh process)."""
    from benchmarks.detect_bench import _reset_peak, _status_mib
    from engine.sheets.run import run_sheets

    t0 = time.perf_counter()
    _reset_peak()
    rss_before = _status_mib("VmRSS")
    res = run_sheets(folder / "sheets.csv", folder / "run", predictor=ManyBlobs(), out_vector=folder / "changes.gpkg",
                     workers=1, tile_size=512, overlap=64, batch_size=4, overwrite=True)
    return {"sheets": res.stats["sheets"], "polygons": res.stats["polygons"], "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mib": round(_status_mib("VmHWM")), "rss_before_run_mib": round(rss_before)}


def rss_rows(counts: tuple = (4, 16), size: int = 2048) -> Iterator[dict]:
    """Peak RSS of computing + merging ``count`` sheets, then of the merge alone (a re-run)."""
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="hrmnet-sheets-rss-") as tmp:
            _vrt_sheets(Path(tmp), count, size)
            for phase in ("compute+merge", "merge"):
                res = subprocess.run([sys.executable, "-m", "benchmarks.sheets_bench", "--rss-in", tmp],  # nosec B603
                                     cwd=ROOT, capture_output=True, text=True)
                if res.returncode != 0:
                    raise RuntimeError(res.stderr[-2000:])
                yield {"bench": "rss_sheets", "phase": phase, "size": size,
                       **json.loads(res.stdout.strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sheets_bench")
    p.add_argument("--device", default="cpu")
    p.add_argument("--grid", type=int, default=4, help="sheets per side (default 4: 16 sheets)")
    p.add_argument("--size", type=int, default=1024, help="sheet edge in pixels")
    p.add_argument("--rss", metavar="4,16,64", help="only the memory rows, for these sheet counts (2048² sheets)")
    p.add_argument("--rss-in", metavar="FOLDER", help=argparse.SUPPRESS)  # one measured run (a fresh process)
    args = p.parse_args(argv)
    if args.rss_in:
        print(json.dumps(rss_run(Path(args.rss_in))), flush=True)
        return 0
    rows = (rss_rows(tuple(int(v) for v in args.rss.split(",")), 2048 if args.size == 1024 else args.size) if args.rss
            else run(args.device, args.grid, args.size))
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
