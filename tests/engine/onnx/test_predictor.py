"""The onnxruntime predictor: providers chosen like --device, one-line errors for what an ONNX
model cannot do, the Predictor protocol on the bundled demo model."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from engine.errors import UserError  # noqa: E402
from engine.onnx_predictor import CPU, CUDA, DML, TRT, load_onnx, read_onnx_info, select_providers  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "engine" / "demo"
ONNX_MODEL = DEMO / "hrmnet_demo.onnx"


@pytest.mark.parametrize("device, available, want", [
    ("auto", [CPU], [CPU]),
    ("auto", [TRT, CUDA, CPU], [CUDA, CPU]),
    ("auto", [DML, CPU], [DML, CPU]),
    ("cpu", [CUDA, CPU], [CPU]),
    ("cuda:1", [CUDA, CPU], [(CUDA, {"device_id": 1}), CPU]),
    ("tensorrt", [TRT, CUDA, CPU], [(TRT, {"device_id": 0}), (CUDA, {"device_id": 0}), CPU]),
    ("DirectML:0", [DML, CPU], [(DML, {"device_id": 0}), CPU]),
])
def test_providers_follow_device(device, available, want):
    assert select_providers(device, available) == want


@pytest.mark.parametrize("device, message", [
    ("cuda", "this onnxruntime has no CUDAExecutionProvider"),
    ("directml:0", "this onnxruntime has no DmlExecutionProvider"),
    ("gpu", "expected auto|cpu|cuda[:N]|tensorrt[:N]|directml[:N]"),
    ("cpu:1", "expected auto|cpu"),
])
def test_unavailable_or_unknown_device_is_one_line(device, message):
    with pytest.raises(UserError, match=message.replace("|", r"\|").replace("[", r"\[")):
        select_providers(device, [CPU])


@pytest.mark.skipif(not ONNX_MODEL.exists(), reason="no ONNX demo model")
def test_demo_model_is_a_predictor():
    predictor, info = load_onnx(ONNX_MODEL, "cpu")
    assert info.tile_size == 256 and info.threshold == 0.5
    x = np.random.default_rng(0).normal(size=(2, 6, 64, 96)).astype(np.float32)
    prob = predictor(x)
    assert prob.shape == (2, 64, 96) and prob.dtype == np.float32 and 0 <= prob.min() <= prob.max() <= 1
    described = predictor.describe()
    assert described["device"] == "cpu (onnxruntime CPUExecutionProvider)" and described["precision"] == "fp32"
    predictor, _ = load_onnx(ONNX_MODEL, "auto", review=True)
    prob2, review = predictor(x)
    np.testing.assert_array_equal(prob, prob2)
    assert review.shape == prob.shape and 0 <= review.min() <= review.max() <= 1


@pytest.mark.skipif(not ONNX_MODEL.exists(), reason="no ONNX demo model")
def test_precision_other_than_fp32_is_refused():
    with pytest.raises(UserError, match="--precision bf16: an ONNX model runs in fp32"):
        load_onnx(ONNX_MODEL, "cpu", "bf16")


def test_foreign_or_broken_onnx_files_are_one_line(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), foreign)
    with pytest.raises(UserError, match="not an HRMNet ONNX export"):
        read_onnx_info(foreign)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(UserError, match="onnxruntime cannot load this model"):
        load_onnx(broken)
    with pytest.raises(UserError, match="model file not found"):
        load_onnx(tmp_path / "missing.onnx")


@pytest.mark.skipif(not ONNX_MODEL.exists(), reason="no ONNX demo model")
def test_detect_cli_refuses_a_device_onnxruntime_lacks(tmp_path):
    res = subprocess.run([sys.executable, "-m", "engine", "detect", "--before", DEMO / "data" / "before.tif",
                          "--after", DEMO / "data" / "after.tif", "--model", ONNX_MODEL, "--device", "directml",
                          "--out-mask", tmp_path / "m.tif"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "--device directml: this onnxruntime has no DmlExecutionProvider" in res.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not ONNX_MODEL.exists(), reason="no ONNX demo model")
def test_detect_review_layer_from_onnx_matches_torch(tmp_path):
    import rasterio

    def run(model: Path, out: Path, *extra: str) -> np.ndarray:
        res = subprocess.run([sys.executable, "-m", "engine", "detect", "--before", DEMO / "data" / "before.tif",
                              "--after", DEMO / "data" / "after.tif", "--model", model, "--out-review", out,
                              "--extent", "640000,5799744,640256,5800000", "--progress", "none", *extra],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        with rasterio.open(out) as src:
            return src.read(1).astype(int)

    ours = run(ONNX_MODEL, tmp_path / "onnx.tif")
    theirs = run(DEMO / "hrmnet_demo.safetensors", tmp_path / "torch.tif", "--precision", "fp32")
    assert ours.shape == (512, 512) and np.abs(ours - theirs).max() <= 1  # uint8 steps of 1/254
