"""`python -m engine export`: the ONNX graph matches torch (and the authors' outputs) on the
parity inputs, has dynamic N/H/W or a fixed size, and carries our and Deepness's metadata."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
import onnxruntime as ort  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


def _parity_checkpoint(folder: Path, expected_keys, parity_weights, seed: int = 0) -> Path:
    import torch

    from engine.checkpoint import ModelInfo, save_checkpoint

    values = parity_weights.fill({k: shape for k, shape, _ in expected_keys}, seed)
    state = {k: torch.from_numpy(v) for k, v in values.items()}
    path = folder / f"parity{seed}.safetensors"
    save_checkpoint(path, state, ModelInfo(tile_size=256, overlap=64, gsd=0.3, threshold=0.4))
    return path


def _cli(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, expected_keys, parity_weights):
    """(checkpoint, its dynamic fp32 ONNX export, the export record) for the parity weights (seed 0)."""
    from engine.export import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    ckpt = _parity_checkpoint(folder, expected_keys, parity_weights)
    record = export_onnx(ckpt, folder / "parity0.onnx", log=lambda line: None)
    return ckpt, folder / "parity0.onnx", record


def _session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_parity_inputs_are_the_shared_ones(shared_dir):
    from engine.export import parity_inputs

    ours = parity_inputs()
    for x, name in zip(ours, ("case_seed0_1x128x128", "case_seed1_2x96x160")):
        np.testing.assert_array_equal(x, np.load(shared_dir / "parity" / f"{name}.npz")["input"])


def test_export_matches_the_authors_outputs_within_1e4(exported, shared_dir):
    _ckpt, onnx_path, record = exported
    assert record["parity_max_abs_diff"] <= 1e-4 and not record["fp16_weights"]
    case = np.load(shared_dir / "parity" / "case_seed0_1x128x128.npz")
    change, hard = _session(onnx_path).run(["change", "hard"], {"input": case["input"]})
    assert change.shape == hard.shape == (1, 1, 128, 128)
    assert np.abs(change - case["change"][:, :1]).max() <= 1e-4
    assert np.abs(hard - case["hard"]).max() <= 1e-4


def test_batch_height_and_width_are_dynamic(exported):
    import torch

    from engine.checkpoint import load_model

    ckpt, onnx_path, _ = exported
    session = _session(onnx_path)
    shape = session.get_inputs()[0].shape
    assert shape[1] == 6 and all(isinstance(d, str) for d in (shape[0], shape[2], shape[3]))
    assert [o.name for o in session.get_outputs()] == ["change", "hard"]
    net, _ = load_model(ckpt)
    x = np.random.default_rng(5).normal(size=(3, 6, 32, 96)).astype(np.float32)
    change, hard = session.run(None, {"input": x})
    with torch.no_grad():
        want_change, want_hard = net(torch.from_numpy(x))
    assert change.shape == (3, 1, 32, 96)
    assert np.abs(change - want_change[:, :1].numpy()).max() <= 1e-4
    assert np.abs(hard - want_hard.numpy()).max() <= 1e-4


def test_metadata_has_ours_and_deepness_keys(exported):
    _ckpt, onnx_path, _ = exported
    meta = {k: json.loads(v) for k, v in _session(onnx_path).get_modelmeta().custom_metadata_map.items()}
    assert meta["architecture"] == "HRMNet" and meta["tile_size"] == 256 and meta["overlap"] == 64
    assert meta["threshold"] == 0.4 and meta["scaling"]["dtype"] == "uint8"
    assert meta["model_type"] == "Segmentor"
    assert meta["class_names"] == [{"0": "change"}, {"0": "hard region (review)"}]
    assert meta["resolution"] == 30.0  # cm/px from gsd 0.3 m
    assert meta["tiles_size"] == 256 and meta["tiles_overlap"] == 25 and meta["seg_thresh"] == 0.4
    assert meta["standardization_mean"] == pytest.approx([0.485, 0.456, 0.406] * 2)
    assert meta["standardization_std"] == pytest.approx([0.229, 0.224, 0.225] * 2)
    assert meta["onnx_export"]["opset"] == 18 and meta["onnx_export"]["parity_max_abs_diff"] <= 1e-4


def test_info_reads_an_onnx_model(exported):
    _ckpt, onnx_path, _ = exported
    res = _cli("info", onnx_path)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["tile_size"] == 256 and info["threshold"] == 0.4
    assert info["onnx"]["outputs"]["change"][1] == 1 and info["onnx"]["export"]["fp16_weights"] is False
    assert info["onnx"]["other_metadata"]["model_type"] == "Segmentor"


@pytest.mark.slow
def test_cli_fixed_size_fp16_export(tmp_path, exported, expected_keys, parity_weights):
    import torch

    from engine.checkpoint import load_model
    from engine.onnx_predictor import load_onnx

    ckpt, fp32_path, _ = exported
    out = tmp_path / "fixed.onnx"
    res = _cli("export", ckpt, out, "--fixed-size", "64", "--fp16")
    assert res.returncode == 0, res.stderr
    assert "fp16 weights" in res.stdout and str(out) in res.stdout
    assert out.stat().st_size < 0.6 * fp32_path.stat().st_size
    import onnx

    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert "CastLike" not in ops and "BatchNormalization" in ops  # casts foldable; BN weights stored unfolded
    predictor, info = load_onnx(out, "cpu")
    assert predictor.session.get_inputs()[0].shape[1:] == [6, 64, 64]
    assert (info.tile_size, info.overlap) == (64, 16)  # the graph's size; the checkpoint's overlap 64 no longer fits
    # a smaller batch is padded to 64x64 and cropped back
    net, _ = load_model(ckpt)
    net = net.half().float()  # the graph's weights
    x = np.random.default_rng(1).normal(size=(2, 6, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x))[0][:, 0].numpy()
    assert np.abs(predictor(x) - want).max() <= 1e-4
    assert predictor(x[:, :, :40, :48]).shape == (2, 40, 48)


@pytest.mark.parametrize("args, message", [
    (["OUT.txt"], "must end in .onnx"),
    (["OUT.onnx", "--opset", "12"], "--opset 12: must be between 18"),
    (["OUT.onnx", "--fixed-size", "100"], "--fixed-size 100: must be a multiple of 32"),
    (["missing/OUT.onnx"], "does not exist"),
    (["EXISTING.onnx"], "exists (use --overwrite"),
])
def test_cli_mistakes_are_one_line_and_write_nothing(tmp_path, args, message):
    (tmp_path / "EXISTING.onnx").write_bytes(b"keep")
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"not read: the options are checked first")
    res = _cli("export", model, *[str(tmp_path / a) if a.startswith(("OUT", "missing", "EXISTING")) else a
                                  for a in args])
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["EXISTING.onnx", "m.safetensors"]
    assert (tmp_path / "EXISTING.onnx").read_bytes() == b"keep"
