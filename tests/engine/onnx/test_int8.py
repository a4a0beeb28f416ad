"""`python -m engine export MODEL OUT.onnx --int8`: static QDQ int8 calibrated on the user's tiles,
checked against fp32 on held-back tiles, refused below 99.5 % mask agreement; and the shipped
int8 demo model."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from tests.cli_errors import one_line_error  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "engine" / "demo"


def _cli(*args, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory) -> str:
    """The demo pair's top-left 704 x 704 pixels (real GeoTIFFs): 16 tiles of 256 at overlap 64."""
    import rasterio
    from rasterio.windows import Window

    folder = tmp_path_factory.mktemp("pair")
    paths = []
    for name in ("before", "after"):
        with rasterio.open(DEMO / "data" / f"{name}.tif") as src:
            window = Window(0, 0, 704, 704)
            profile = {**src.profile, "width": 704, "height": 704, "transform": src.window_transform(window)}
            profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
            with rasterio.open(folder / f"{name}.tif", "w", **profile) as dst:
                dst.write(src.read(window=window))
        paths.append(str(folder / f"{name}.tif"))
    return ",".join(paths)


def _metadata(path: Path) -> dict:
    import onnxruntime as ort

    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    return json.loads(meta["onnx_export"])


def test_int8_export_is_small_agrees_with_fp32_and_runs(tmp_path, small_pair):
    import onnx

    out = tmp_path / "demo_int8.onnx"
    res = _cli("export", DEMO / "hrmnet_demo.safetensors", out, "--int8", "--calibrate", small_pair)
    assert res.returncode == 0, res.stderr
    assert "int8: mask agreement" in res.stdout
    assert "calibrating on 12 tiles, checking on 4 held-back tiles" in res.stderr
    record = _metadata(out)["int8"]
    assert record["mask_agreement"] >= 0.995 and record["min_agreement"] == 0.995
    assert (record["calibration_tiles"], record["held_back_tiles"], record["tile_size"]) == (12, 4, 256)
    assert out.stat().st_size < 0.3 * 4 * 13.5e6  # int8 weights: about a quarter of the fp32 graph (54.8 MB)
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    info = json.loads(_cli("info", out).stdout)
    assert info["onnx"]["export"]["int8"]["mask_agreement"] == record["mask_agreement"]


def test_int8_below_the_agreement_floor_is_refused_and_nothing_written(tmp_path, small_pair, monkeypatch):
    from engine import quantize
    from engine.errors import UserError
    from engine.export import export_onnx

    monkeypatch.setattr(quantize, "MIN_AGREEMENT", 1.000001)  # no int8 graph can reach it
    out = tmp_path / "refused.onnx"
    with pytest.raises(UserError) as err:
        export_onnx(DEMO / "hrmnet_demo.safetensors", out, int8=True, calibrate=[small_pair], log=lambda line: None)
    message = str(err.value)
    assert "not written: the int8 mask agrees with fp32 on" in message and "\n" not in message
    assert "--calibrate" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--int8", "--fp16"], "--int8 and --fp16: choose one"),
    (["--calibrate", "x.tif,y.tif"], "--calibrate: only with --int8"),
    (["--int8", "--calibrate", "MISSING.tif,y.tif"], "MISSING.tif not found"),
    (["--int8", "--calibrate", "one.tif"], "expected BEFORE,AFTER (two rasters) or a dataset folder"),
    (["--int8", "--calibrate", "DIR"], "not a dataset"),
])
def test_int8_option_mistakes_are_one_line(tmp_path, args, message):
    (tmp_path / "DIR").mkdir()
    args = [str(tmp_path / a) if a in ("DIR", "MISSING.tif,y.tif") else a for a in args]
    res = _cli("export", DEMO / "hrmnet_demo.safetensors", tmp_path / "out.onnx", *args)
    one_line_error(res, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR"]


def test_shipped_int8_demo_model_matches_the_fp32_export(tmp_path):
    """The bundled int8 demo model: a quarter of the size, its mask on the demo pair within
    99.5 % of the fp32 ONNX demo model's, and recorded as int8 in its metadata and start event."""
    int8, fp32 = DEMO / "hrmnet_demo_int8.onnx", DEMO / "hrmnet_demo.onnx"
    assert int8.stat().st_size < 16e6
    assert _metadata(int8)["int8"]["mask_agreement"] >= 0.995
    masks = {}
    extent = "0,0,1024,1024"
    import rasterio

    with rasterio.open(DEMO / "data" / "before.tif") as src:
        b = src.bounds
        extent = f"{b.left},{b.top - 1024 * src.res[1]},{b.left + 1024 * src.res[0]},{b.top}"
    for name, model in (("int8", int8), ("fp32", fp32)):
        res = _cli("detect", "--before", DEMO / "data" / "before.tif", "--after", DEMO / "data" / "after.tif",
                   "--model", model, "--out-mask", tmp_path / f"{name}.tif", "--extent", extent,
                   "--progress", "jsonl")
        assert res.returncode == 0, res.stderr
        start = next(json.loads(line) for line in res.stdout.splitlines() if '"start"' in line)
        assert start["precision"] == name
        with rasterio.open(tmp_path / f"{name}.tif") as src:
            masks[name] = src.read(1)
    assert masks["int8"].shape == (1024, 1024)
    assert np.mean(masks["int8"] == masks["fp32"]) >= 0.995


def test_a_dataset_calibrates_with_its_tiles_normalised_as_the_model_says(tmp_path):
    """`--calibrate DATASET` (the authors' layout, every split): each image cut into tiles of the
    model's size (smaller ones as they are), normalised with the checkpoint's scaling."""
    from engine.checkpoint import ModelInfo
    from engine.quantize import calibration_tiles, split_tiles

    res = _cli("synth", "--out", tmp_path / "data", "--scenes", "2", "--size", "128", "--layout", "dataset",
               "--tile-size", "64", "--split", "0.5,0.5,0", "--progress", "none")
    assert res.returncode == 0, res.stderr
    lines: list[str] = []
    tiles = calibration_tiles([str(tmp_path / "data")], ModelInfo(tile_size=64, overlap=16), lines.append)
    assert len(tiles) == 8 and all(t.shape == (1, 6, 64, 64) and t.dtype == np.float32 for t in tiles)
    assert -3 < float(np.mean([t.mean() for t in tiles])) < 3  # ImageNet-normalised, not raw 0-255
    assert lines == [f"calibration source {tmp_path / 'data'}: 8 tiles"]
    calib, held = split_tiles(tiles)
    assert (len(calib), len(held)) == (6, 2)
