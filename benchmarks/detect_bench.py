"""Detection pipeline benchmarks (issue 3).

1. ``efficiency``: the same tiles end-to-end (read, tile, model, blend, write, vectorize)
   versus model-only forward passes, in one run: ``model_s / end_to_end_s`` (goal >= 0.9).
   The row also gives the same ratio in CPU seconds of the process (on a CPU device,
   robust to other load on a shared machine).
2. ``overhead``: a stand-in model that returns at once: Mpx/s of read + tile + blend +
   write + vectorize, on a 4096 x 4096 scene.
3. ``peak_rss``: peak resident memory of a whole detection (stand-in model) at 4096² and,
   with ``big=True`` (``--big``, or ``HRMNET_BENCH_BIG=1`` under ``make bench``), at
   16384²; each size in its own process. Goal: within 20 % of each other.

The large scenes are VRTs that repeat one generated 1024 x 1024 GeoTIFF pair (UTM 33N,
0.5 m), so they cost no disk; outputs (probability, mask, GeoPackage) are real files in a
temporary folder.

``python -m benchmarks --only detect`` runs it through ``make bench``; ``python -m
benchmarks.detect_bench [--big] [--device cpu]`` alone prints the same JSON rows.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess  # nosec B404 - each RSS size runs in a fresh interpreter (list argv, no shell)
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TILE = 1024  # edge of the generated source pair the VRTs repeat


def _source_pair(folder: Path) -> tuple[Path, Path]:
    """A 1024² pair: textured before; after with 8 bright squares changed."""
    from tests.rasters import textured, write_geotiff

    before = textured(TILE, TILE, seed=7)
    after = before.copy()
    rng = np.random.default_rng(3)
    for _ in range(8):
        r, c = rng.integers(0, TILE - 60, 2)
        after[:, r:r + 40, c:c + 50] = 240
    b = write_geotiff(folder / "src_before.tif", before)
    a = write_geotiff(folder / "src_after.tif", after)
    return b, a


def _mosaic_vrt(src: Path, n: int, out: Path) -> Path:
    """A VRT of ``n`` x ``n`` copies of ``src`` (same CRS, 0.5 m pixels)."""
    import rasterio

    with rasterio.open(src) as ds:
        count, crs = ds.count, ds.crs.to_wkt()
        x0, y0, px = ds.transform.c, ds.transform.f, ds.transform.a
    size = TILE * n
    bands = []
    for b in range(1, count + 1):
        sources = "".join(
            f'<SimpleSource><SourceFilename relativeToVRT="0">{src}</SourceFilename><SourceBand>{b}</SourceBand>'
            f'<SrcRect xOff="0" yOff="0" xSize="{TILE}" ySize="{TILE}"/>'
            f'<DstRect xOff="{j * TILE}" yOff="{i * TILE}" xSize="{TILE}" ySize="{TILE}"/></SimpleSource>'
            for i in range(n) for j in range(n))
        bands.append(f'<VRTRasterBand dataType="Byte" band="{b}">{sources}</VRTRasterBand>')
    xml = (f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>{crs}</SRS>'
           f'<GeoTransform>{x0}, {px}, 0, {y0}, 0, {-px}</GeoTransform>{"".join(bands)}</VRTDataset>')
    out.write_text(xml)
    return out


class InstantPredictor:
    """Stand-in that returns at once: a fixed pattern of four changed squares per tile."""

    def __init__(self) -> None:
        self._cache: dict = {}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        shape = batch.shape[2:]
        if shape not in self._cache:
            p = np.zeros(shape, np.float32)
            h, w = shape
            for fy, fx in ((0.2, 0.2), (0.2, 0.6), (0.6, 0.2), (0.6, 0.6)):
                p[int(fy * h):int(fy * h) + h // 10, int(fx * w):int(fx * w) + w // 8] = 0.9
            self._cache[shape] = p
        return np.broadcast_to(self._cache[shape], (batch.shape[0],) + shape)

    def describe(self) -> dict:
        return {"device": "cpu (instant stand-in)", "precision": "fp32"}


def _scene(folder: Path, size: int) -> tuple[Path, Path]:
    b, a = _source_pair(folder)
    n = max(1, size // TILE)
    return _mosaic_vrt(b, n, folder / f"before_{size}.vrt"), _mosaic_vrt(a, n, folder / f"after_{size}.vrt")


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_run(size: int) -> dict:
    """One detection of a ``size``² scene with the instant stand-in (call in a fresh
    process: the peak RSS is the process's)."""
    import engine.checkpoint  # noqa: F401 - imports outside the timing (the CLI has them loaded too)
    import engine.vector.polygonize  # noqa: F401
    from engine.detect import detect

    with tempfile.TemporaryDirectory(prefix="hrmnet-bench-") as tmp:
        folder = Path(tmp)
        before, after = _scene(folder, size)
        # Peak of the detection itself: imports (torch, GDAL, ...) can briefly peak higher.
        _reset_peak()
        rss_before = _status_mib("VmRSS")
        t0, c0 = time.perf_counter(), os.times()
        result = detect(before, after, predictor=InstantPredictor(), out_vector=folder / "changes.gpkg",
                        out_probability=folder / "prob.tif", out_mask=folder / "mask.tif", tile_size=512, overlap=128,
                        batch_size=4)
        seconds = time.perf_counter() - t0
        c1 = os.times()
    cpu = c1.user - c0.user + c1.system - c0.system
    peak = _status_mib("VmHWM")
    return {"size": size, "megapixels": round(size * size / 1e6, 1), "seconds": round(seconds, 2),
            "mpx_per_s": round(size * size / 1e6 / seconds, 2), "cpu_s": round(cpu, 2),
            "mpx_per_cpu_s": round(size * size / 1e6 / cpu, 2), "polygons": result.stats.get("polygons"),
            "peak_rss_mib": round(peak), "rss_before_run_mib": round(rss_before)}


def _rss_subprocess(size: int) -> dict:
    res = subprocess.run([sys.executable, "-m", "benchmarks.detect_bench", "--rss", str(size)], cwd=ROOT,  # nosec B603
                         capture_output=True, text=True)
    if res.returncode != 0:
        return {"size": size, "error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def efficiency(device: str = "cpu", size: int = 896, tile: int = 512, overlap: int = 128, batch: int = 2,
               repeats: int = 2) -> dict:
    """End-to-end versus model-only on the same tiles (real HRMNet, random weights)."""
    import torch

    from engine.core.predictors import ModelPredictor
    from engine.detect import detect
    from engine.model import HRMNet
    from engine.raster.tiles import make_grid
    from engine.runtime import select_runtime

    runtime = select_runtime(device, "auto")
    predictor = ModelPredictor(HRMNet().eval(), runtime)
    grid = make_grid(size, size, tile, overlap)
    n_batches = -(-len(grid) // batch)
    x = np.random.default_rng(0).standard_normal((batch, 6) + grid.shape).astype(np.float32)
    predictor(x)  # warm-up
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()

    def cpu() -> float:
        t = os.times()
        return t.user + t.system

    def model_only() -> float:
        t0, c0 = time.perf_counter(), cpu()
        for _ in range(n_batches):
            predictor(x)
        model_cpu.append(cpu() - c0)
        return time.perf_counter() - t0

    model_cpu: list = []
    e2e_cpu: list = []

    with tempfile.TemporaryDirectory(prefix="hrmnet-bench-") as tmp:
        folder = Path(tmp)
        b, a = _source_pair(folder)

        def end_to_end(extent_px: int):
            for f in folder.glob("out_*"):
                f.unlink()
            t0, c0 = time.perf_counter(), cpu()
            res = detect(b, a, predictor=predictor, out_vector=folder / "out_v.gpkg",
                         out_probability=folder / "out_p.tif", out_mask=folder / "out_m.tif", tile_size=tile,
                         overlap=overlap, batch_size=batch, extent=_extent(b, extent_px), overwrite=True)
            e2e_cpu.append(cpu() - c0)
            return time.perf_counter() - t0, res

        end_to_end(128)  # warm-up: imports and first-call costs of every stage
        e2e_cpu.clear()
        # alternate, keep the best of each: the machine may be shared
        models, e2es = [model_only()], []
        for _ in range(repeats):
            seconds, result = end_to_end(size)
            e2es.append(seconds)
            models.append(model_only())
        model_s, e2e_s = min(models), min(e2es)
    if result.stats["tiles"] != len(grid):
        raise RuntimeError(f"end-to-end ran {result.stats['tiles']} tiles, model-only {len(grid)}")
    return {"benchmark": "efficiency", "device": runtime.describe()["device"], "precision": runtime.precision,
            "scene": f"{size}x{size}", "tiles": len(grid), "tile": tile, "batch": batch,
            "model_only_s": round(model_s, 3), "end_to_end_s": round(e2e_s, 3),
            "runs_model_only_s": [round(v, 2) for v in models], "runs_end_to_end_s": [round(v, 2) for v in e2es],
            "efficiency": round(model_s / e2e_s, 3), "goal": 0.9,
            # CPU seconds of this process: the same ratio, robust to a shared machine (on CPU)
            "model_only_cpu_s": round(min(model_cpu), 2), "end_to_end_cpu_s": round(min(e2e_cpu), 2),
            "efficiency_cpu": round(min(model_cpu) / min(e2e_cpu), 3)}


def _extent(path: Path, size: int) -> tuple[float, float, float, float]:
    import rasterio

    with rasterio.open(path) as ds:
        x0, y0, px = ds.transform.c, ds.transform.f, ds.transform.a
    return (x0, y0 - size * px, x0 + size * px, y0)


def run(device: str = "cpu", big: bool | None = None, parts: tuple = ("efficiency", "rss")) -> Iterator[dict]:
    """Rows for ``make bench`` (see the module docstring)."""
    if big is None:
        big = os.environ.get("HRMNET_BENCH_BIG") == "1"
    if "efficiency" in parts:
        yield efficiency(device)
    if "rss" not in parts:
        return
    small = _rss_subprocess(4096)
    yield {"benchmark": "overhead", "stand_in": "instant", **{k: small.get(k) for k in
                                                                ("size", "seconds", "mpx_per_s", "cpu_s", "mpx_per_cpu_s", "polygons")}}
    rows = [small]
    if big:
        rows.append(_rss_subprocess(16384))
    row = {"benchmark": "peak_rss", "runs": rows}
    if len(rows) == 2 and "peak_rss_mib" in rows[0] and "peak_rss_mib" in rows[1]:
        row["ratio"] = round(rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"], 3)
        row["goal"] = "<= 1.2"
    yield row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.detect_bench")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--big", action="store_true", help="also measure peak RSS at 16384 x 16384 (slow)")
    parser.add_argument("--rss", type=int, metavar="SIZE", help="internal: one run at SIZE² in this process")
    parser.add_argument("--only", choices=("efficiency", "rss"), help="one part only")
    args = parser.parse_args(argv)
    if args.rss:
        print(json.dumps(rss_run(args.rss)), flush=True)
        return 0
    for row in run(args.device, args.big, (args.only,) if args.only else ("efficiency", "rss")):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
