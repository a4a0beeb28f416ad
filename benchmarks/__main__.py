"""``make bench``: run the benchmarks and print their rows as JSON lines.

``python -m benchmarks [--only model,detect,train,vector,sheets] [--device cpu|cuda]``.
Results belong in BENCHMARKS.md together with the machine they ran on.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys

import torch

SECTIONS = {"model": "benchmarks.model_bench", "detect": "benchmarks.detect_bench",
            "vector": "benchmarks.vector_bench", "train": "benchmarks.train_bench",
            "sheets": "benchmarks.sheets_bench", "onnx": "benchmarks.onnx_bench"}


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    print(json.dumps({"machine": machine()}), flush=True)
    for name in args.only.split(","):
        module = importlib.import_module(SECTIONS[name])
        for row in module.run(device=args.device):
            print(json.dumps({"section": name, **row}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
