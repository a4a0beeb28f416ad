"""Multi-process training with torchrun (DistributedDataParallel, gloo on CPU, two processes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from engine.checkpoint import read_info
from tests.conftest import ROOT
from tests.engine.train.tiny_dataset import make_dataset


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    data = make_dataset(tmp_path / "data", {"train": 4, "val": 1}, size=64)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "engine", "train", "--data", str(data), "--out", str(run), "--steps", "2", "--batch-size", "2",
         "--crop", "48", "--device", "cpu", "--progress", "jsonl"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    # Only rank 0 reports and writes.
    assert [e["event"] for e in events].count("start") == 1
    assert [e["event"] for e in events].count("done") == 1
    assert events[0]["world_size"] == 2 and events[0]["device"] == "cpu"
    assert [e["done"] for e in events if e["event"] == "progress"] == [1, 2]
    assert sorted(x.name for x in run.iterdir()) == sorted(
        ["best.safetensors", "last.safetensors", "state.pt", "metrics.csv", "curves.png"])
    info = read_info(run / "last.safetensors").training
    assert info["world_size"] == 2 and info["batch_size"] == 2 and info["step"] == 2


def test_processes_split_each_global_batch_and_resume_continues_the_stream():
    from engine.train.loop import StepSampler

    whole = list(StepSampler(n=5, batch_size=4, steps=6, seed=3))
    assert len(whole) == 24
    # Every tile once per epoch of 5 samples.
    assert sorted(i for i, _ in whole[:5]) == [0, 1, 2, 3, 4]
    # Two processes take halves of each global batch: together the same samples and seeds.
    r0 = list(StepSampler(n=5, batch_size=4, steps=6, seed=3, rank=0, world=2))
    r1 = list(StepSampler(n=5, batch_size=4, steps=6, seed=3, rank=1, world=2))
    merged = [x for step in range(6) for x in r0[2 * step : 2 * step + 2] + r1[2 * step : 2 * step + 2]]
    assert merged == whole
    # Resuming at step 4 yields exactly the rest of the stream.
    assert list(StepSampler(n=5, batch_size=4, steps=6, seed=3, start_step=4)) == whole[16:]
    assert list(StepSampler(n=5, batch_size=4, steps=6, seed=4)) != whole
