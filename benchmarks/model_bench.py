"""Model-only latency of HRMNet per 512x512 pair, against a matmul of the same precision.

HRMNet costs 96.6 GFLOPs per 512x512 pair (48.3 GMACs). The achieved GFLOP/s is
compared with a large matmul measured in the same run (the practical peak of this
machine for that precision); the goal is >= 75 % of it.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from engine.model import HRMNet
from engine.runtime import select_runtime

GFLOPS_PER_PAIR = 96.6


def _time(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Median seconds of ``fn`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, repeat: int = 5) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` on ``device``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)

    def run() -> None:
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()

    return 2 * n**3 / _time(run, repeat, warmup=2) / 1e9


def model_latency(device: str, precision: str, batch: int, size: int = 512, repeat: int = 3,
                  channels_last: bool = True) -> dict:
    """Seconds per pair and GFLOP/s of HRMNet forward (eval, no grad) at ``batch``."""
    rt = select_runtime(device, precision)
    rt = type(rt)(rt.device, rt.precision, channels_last)
    model = rt.prepare(HRMNet().eval())
    x = rt.tensor(torch.randn(batch, 6, size, size))

    def run() -> None:
        with torch.no_grad(), rt.autocast():
            model(x)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()

    seconds = _time(run, repeat, warmup=1)
    per_pair = seconds / batch
    return {
        "device": str(rt.device),
        "precision": rt.precision,
        "channels_last": channels_last,
        "batch": batch,
        "s_per_pair": per_pair,
        "pairs_per_s": 1 / per_pair,
        "gflops": GFLOPS_PER_PAIR * (size / 512) ** 2 / per_pair,
    }


def run(device: str = "cpu") -> list[dict]:
    """All model-only rows for ``device`` (CPU: fp32 and bf16, batch 1 and 4)."""
    rows = []
    dev = torch.device("cuda" if device.startswith("cuda") else "cpu")
    precisions = ["fp32", "bf16"] if dev.type == "cpu" else ["bf16", "fp16"]
    batches = [1, 4] if dev.type == "cpu" else [16, 32]
    for precision in precisions:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        peak = matmul_gflops(dev, dtype)
        for batch in batches:
            row = model_latency(device, precision, batch, repeat=3 if dev.type == "cpu" else 10)
            row["matmul_gflops"] = peak
            row["fraction_of_matmul"] = row["gflops"] / peak
            rows.append(row)
    if dev.type == "cpu":  # does channels_last help fp32 here?
        row = model_latency(device, "fp32", 1, channels_last=False)
        row["matmul_gflops"] = rows[0]["matmul_gflops"]
        row["fraction_of_matmul"] = row["gflops"] / row["matmul_gflops"]
        rows.append(row)
    return rows
