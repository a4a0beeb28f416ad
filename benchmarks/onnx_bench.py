"""torch vs onnxruntime with the demo model: 512² pairs/s of the model alone (torch fp32, torch
bf16 where the CPU has it, onnxruntime fp32 and int8), detect end to end on the whole demo pair
with each (s/tile, CPU-s/tile, mask agreement with torch fp32), and the disk size of the full
(.venv) and light (.venv-light) environments.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "engine" / "demo"


def _best(fn: Callable[[], object], repeat: int = 3) -> tuple[float, float]:
    """(wall seconds, CPU seconds of all threads) of the fastest of ``repeat`` runs after a
    warm-up; CPU seconds are the robust figure on a shared machine."""
    fn()  # warm-up
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best


def model_rows(size: int = 512) -> list[dict]:
    """Seconds per 512² pair (best of 3, batch 1) with the demo model's weights."""
    import torch

    from engine.checkpoint import load_model
    from engine.onnx_predictor import load_onnx
    from engine.runtime import cpu_has_bf16, select_runtime

    x = np.random.default_rng(0).normal(size=(1, 6, size, size)).astype(np.float32)
    rows = []
    for precision in ["fp32"] + (["bf16"] if cpu_has_bf16() else []):
        net, _ = load_model(DEMO / "hrmnet_demo.safetensors")
        rt = select_runtime("cpu", precision)
        model = rt.prepare(net)
        xt = rt.tensor(torch.from_numpy(x))

        def run() -> None:
            with torch.inference_mode(), rt.autocast():
                model(xt)

        s, cpu = _best(run)
        rows.append({"what": "model", "runtime": f"torch {torch.__version__}", "precision": precision,
                     "channels_last": rt.channels_last, "s_per_pair": round(s, 3), "pairs_per_s": round(1 / s, 2),
                     "cpu_s_per_pair": round(cpu, 3)})
    for name in ("hrmnet_demo.onnx", "hrmnet_demo_int8.onnx"):
        predictor, _ = load_onnx(DEMO / name, "cpu")
        s, cpu = _best(lambda: predictor(x))
        rows.append({"what": "model", "runtime": predictor.describe()["runtime"],
                     "precision": predictor.describe()["precision"], "s_per_pair": round(s, 3),
                     "pairs_per_s": round(1 / s, 2), "cpu_s_per_pair": round(cpu, 3)})
    return rows


def detect_rows(tmp: Path, extent: str | None = None) -> list[dict]:
    """detect (probability + mask) on the demo pair (or ``extent`` of it), one run per model and
    precision in one process: seconds and CPU-seconds per tile, and the fraction of pixels whose
    mask agrees with the torch fp32 run's (the first)."""
    import rasterio

    from engine.detect import detect
    from engine.runtime import cpu_has_bf16

    runs = [("hrmnet_demo.safetensors", "fp32", "torch fp32")]
    runs += [("hrmnet_demo.safetensors", "bf16", "torch bf16")] if cpu_has_bf16() else []
    runs += [("hrmnet_demo.onnx", "auto", "onnxruntime fp32"), ("hrmnet_demo_int8.onnx", "auto", "onnxruntime int8")]
    rows, reference = [], None
    for i, (model, precision, label) in enumerate(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        result = detect(DEMO / "data" / "before.tif", DEMO / "data" / "after.tif", model=DEMO / model,
                        out_probability=tmp / f"p{i}.tif", out_mask=tmp / f"m{i}.tif", extent=extent,
                        device="cpu", precision=precision)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        with rasterio.open(tmp / f"m{i}.tif") as src:
            mask = src.read(1)
        reference = mask if reference is None else reference
        tiles = int(result.stats.get("tiles") or 0) or 1
        rows.append({"what": f"detect, demo pair{' ' + extent if extent else ''}", "model": model,
                     "runtime": label, "tiles": tiles,
                     "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                     "s_per_tile": round(seconds / tiles, 3), "cpu_s_per_tile": round(cpu / tiles, 3),
                     "mask_agreement_with_torch_fp32": round(float((mask == reference).mean()), 5)})
    return rows


def _tree_bytes(folder: Path) -> int:
    total = 0
    for base, _dirs, files in os.walk(folder):
        for name in files:
            p = os.path.join(base, name)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def size_rows() -> list[dict]:
    """Disk size of .venv (full) and .venv-light (onnxruntime, no torch) where they exist."""
    return [{"what": "environment size", "env": name, "mb": round(_tree_bytes(ROOT / name) / 1e6)}
            for name in (".venv", ".venv-light") if (ROOT / name).is_dir()]


def run(device: str = "cpu") -> list[dict]:
    import tempfile

    rows = model_rows()
    with tempfile.TemporaryDirectory(prefix="onnx-bench-") as tmp:
        rows += detect_rows(Path(tmp), os.environ.get("HRMNET_BENCH_EXTENT") or None)
    return rows + size_rows()
