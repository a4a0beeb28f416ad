"""`evaluate --model MODEL.onnx` runs the forward pass on onnxruntime and scores like torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "engine" / "demo"


def _evaluate(data: Path, model: Path) -> dict:
    res = subprocess.run([sys.executable, "-m", "engine", "evaluate", "--data", data, "--split", "test", "--model",
                          model, "--precision", "fp32" if model.suffix != ".onnx" else "auto", "--json",
                          "--progress", "none"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.skipif(not (DEMO / "hrmnet_demo.onnx").exists(), reason="no ONNX demo model")
def test_evaluate_onnx_matches_torch_on_the_levir_tile(shared_dir):
    data = shared_dir / "data" / "levir_sample"
    ours = _evaluate(data, DEMO / "hrmnet_demo.onnx")
    torch_run = _evaluate(data, DEMO / "hrmnet_demo.safetensors")
    assert "onnxruntime" in ours["runtime"]["device"] and ours["tiles"] == 1
    total = sum(torch_run["confusion"].values())
    assert total == 512 * 512
    differ = sum(abs(ours["confusion"][k] - torch_run["confusion"][k]) for k in ("tp", "fp")) / total
    assert differ <= 0.001  # the change decisions agree on >= 99.9 % of the pixels
    assert ours.get("review") is not None  # the hard-region score comes through onnxruntime too
    for key in ("top_1pct", "top_5pct"):
        if key in torch_run["review"]:
            assert ours["review"][key]["error_rate"] == pytest.approx(torch_run["review"][key]["error_rate"], abs=0.01)
