"""Training step time, samples/s and peak memory of HRMNet on 512x512 crops.

Each (batch, size) runs in a fresh process so its peak RSS is its own. One step is
the training loop's own :func:`engine.train.loop.train_step` (forward, the authors'
loss, backward, AdamW, schedule) on random normalised inputs; the first step (warm-up,
allocations) is not timed; the mean (and min) of the next ``steps`` are reported.

``python -m benchmarks.train_bench [--device cpu] [--batches 2,8] [--size 512] [--steps 3]``
prints one JSON row a configuration; ``run(device)`` is what ``make bench`` calls.
For reference, the authors' model takes 4.06 s per batch-2 step on the 2-core CPU of
this project's machine (3.2 GB RSS).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(device: str, precision: str, batch: int, size: int, steps: int) -> dict:
    """Time ``steps`` training steps after one warm-up step, in this process."""
    import torch

    from engine.model import HRMNet
    from engine.train.loop import make_optimizer, train_step, training_runtime

    rt = training_runtime(device, precision)
    torch.manual_seed(0)
    model = rt.prepare(HRMNet()).train()
    optimizer, scheduler, scaler = make_optimizer(model, 5e-4, 20000, rt)
    x = torch.randn(batch, 6, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.9).float()

    def step() -> float:
        t0 = time.perf_counter()
        loss, _ = train_step(model, x, y, optimizer, scheduler, scaler, rt)
        loss.item()
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    step()
    times = [step() for _ in range(steps)]
    mean = sum(times) / len(times)
    row = {
        "device": str(rt.device), "precision": rt.precision, "channels_last": rt.channels_last,
        "threads": torch.get_num_threads(), "batch": batch, "size": size, "steps": steps,
        "s_per_step": round(mean, 3), "samples_per_s": round(batch / mean, 3),
        "s_per_step_min": round(min(times), 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    if rt.device.type == "cuda":
        row["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated(rt.device) / 2**30, 2)
    return row


def run(device: str = "cpu", batches: tuple[int, ...] = (2, 8), size: int = 512, steps: int = 3,
        precision: str = "auto") -> list[dict]:
    """One row per batch size, each measured in a fresh subprocess."""
    rows = []
    for batch in batches:
        cmd = [sys.executable, "-m", "benchmarks.train_bench", "--one", "--device", device, "--precision", precision,
               "--batches", str(batch), "--size", str(size), "--steps", str(steps)]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            rows.append({"batch": batch, "size": size, "error": (p.stderr.strip().splitlines() or ["failed"])[-1]})
            continue
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", help="auto: fp32 on CPU, bf16/fp16 on CUDA")
    parser.add_argument("--batches", default="2,8", help="comma-separated batch sizes")
    parser.add_argument("--size", type=int, default=512, help="crop edge in pixels")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--one", action="store_true", help="measure in this process (one batch size)")
    args = parser.parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(","))
    if args.one:
        print(json.dumps(measure(args.device, args.precision, batches[0], args.size, args.steps)), flush=True)
        return 0
    for row in run(args.device, batches, args.size, args.steps, args.precision):
        print(json.dumps({"section": "train", **row}), flush=True)
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
