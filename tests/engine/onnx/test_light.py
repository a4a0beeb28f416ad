"""The light engine for real: a second virtual environment with onnxruntime and no torch
(``.venv-light``, made from engine/light-requirements.txt on first use and kept like ``.venv``)
runs ``detect`` on the demo pair with the bundled ONNX demo model; its mask agrees with the
torch run; every command that needs torch says so in one line."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

ROOT = Path(__file__).resolve().parents[3]
LIGHT = ROOT / ".venv-light"
DEMO = ROOT / "engine" / "demo"
ONNX_MODEL = DEMO / "hrmnet_demo.onnx"
# a 512 x 512 m corner of the 2048² demo pair (UTM 33N): 25 tiles of the demo model's 256 px
EXTENT = "640000,5799488,640512,5800000"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not ONNX_MODEL.exists(), reason="no ONNX demo model")]


def _base_python() -> str:
    """The interpreter .venv was made from (Debian's, which sees GDAL and no torch)."""
    base = getattr(sys, "_base_executable", None)
    return base if base and Path(base).exists() and base != sys.executable else "/usr/bin/python3"


def _light_python() -> Path:
    """.venv-light's python: created (--system-site-packages, like .venv) and filled from
    engine/light-requirements.txt with constraints.txt's pins when its stamp is stale."""
    python, stamp = LIGHT / "bin" / "python", LIGHT / ".hrmnet-light-installed"
    digest = hashlib.sha256()
    for name in ("engine/light-requirements.txt", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    want = digest.hexdigest()[:16]
    if stamp.exists() and stamp.read_text().strip() == want and python.exists():
        return python
    if not python.exists():
        subprocess.run([_base_python(), "-m", "venv", "--system-site-packages", str(LIGHT)], check=True, timeout=300)
    links = ["--find-links", "/opt/wheels"] if Path("/opt/wheels").is_dir() else []
    res = subprocess.run([str(python), "-m", "pip", "install", "-q", *links, "-c", str(ROOT / "constraints.txt"),
                          "-r", str(ROOT / "engine" / "light-requirements.txt")],
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-2000:]
    stamp.write_text(want + "\n")
    return python


@pytest.fixture(scope="module")
def light() -> Path:
    return _light_python()


def _engine(python, *args, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(python), "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _detect(python, model: Path, mask: Path, *extra: str) -> subprocess.CompletedProcess:
    return _engine(python, "detect", "--before", DEMO / "data" / "before.tif", "--after", DEMO / "data" / "after.tif",
                   "--model", model, "--out-mask", mask, "--extent", EXTENT, "--progress", "jsonl", *extra)


@pytest.fixture(scope="module")
def torch_mask(tmp_path_factory) -> Path:
    """The demo corner's mask from the full engine (torch, fp32)."""
    mask = tmp_path_factory.mktemp("torch") / "mask.tif"
    res = _detect(sys.executable, DEMO / "hrmnet_demo.safetensors", mask, "--precision", "fp32")
    assert res.returncode == 0, res.stderr
    return mask


def test_light_environment_has_no_torch(light):
    res = subprocess.run([str(light), "-c", "import onnxruntime, rasterio; import torch"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode != 0 and "No module named 'torch'" in res.stderr


def test_light_detect_agrees_with_torch(light, torch_mask, tmp_path):
    mask = tmp_path / "mask.tif"
    res = _detect(light, ONNX_MODEL, mask)
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    start = next(e for e in events if e["event"] == "start")
    assert "onnxruntime" in start["device"] and start["providers"][-1] == "CPUExecutionProvider"
    assert any(e["event"] == "log" and "CPUExecutionProvider" in e["message"] for e in events)
    with rasterio.open(mask) as a, rasterio.open(torch_mask) as b:
        ours, theirs = a.read(1), b.read(1)
    assert ours.shape == theirs.shape == (1024, 1024)
    assert (theirs == 1).sum() > 1000  # the corner has changes to agree on
    assert np.mean(ours == theirs) >= 0.999


def test_light_info_reads_the_onnx_model(light):
    res = _engine(light, "info", ONNX_MODEL)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["tile_size"] == 256 and info["onnx"]["export"]["fp16_weights"] is True
    res = _engine(light, "info", DEMO / "hrmnet_demo.safetensors")  # the header, without safetensors
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["tile_size"] == 256


@pytest.mark.parametrize("args", [
    ["train", "--data", "nowhere", "--out", "nowhere"],
    ["export", "engine/demo/hrmnet_demo.safetensors", "x.onnx"],
    ["demo", "--out", "nowhere"],
    ["detect", "--before", "engine/demo/data/before.tif", "--after", "engine/demo/data/after.tif",
     "--model", "engine/demo/hrmnet_demo.safetensors", "--out-mask", "{tmp}/m.tif"],
])
def test_light_commands_that_need_torch_say_so_in_one_line(light, tmp_path, args):
    res = _engine(light, *[a.replace("{tmp}", str(tmp_path)) for a in args], timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "needs torch" in res.stderr, res.stderr
    assert not list(tmp_path.iterdir())


def test_light_sheets_run_with_the_onnx_model(light, tmp_path):
    from affine import Affine
    from rasterio.windows import Window

    rows = ["id,before,after"]
    for name, col in (("west", 0), ("east", 256)):
        for date in ("before", "after"):
            with rasterio.open(DEMO / "data" / f"{date}.tif") as src:
                window = Window(col, 0, 256, 256)
                profile = {**src.profile, "width": 256, "height": 256, "transform": src.transform @ Affine.translation(col, 0)}
                with rasterio.open(tmp_path / f"{name}_{date}.tif", "w", **profile) as dst:
                    dst.write(src.read(window=window))
        rows.append(f"{name},{name}_before.tif,{name}_after.tif")
    (tmp_path / "sheets.csv").write_text("\n".join(rows) + "\n")
    res = _engine(light, "sheets", "--sheets", tmp_path / "sheets.csv", "--run", tmp_path / "run", "--model",
                  ONNX_MODEL, "--out-mask", tmp_path / "mask.vrt", "--out-vector", tmp_path / "changes.gpkg", "--workers", "1",
                  "--progress", "none")
    assert res.returncode == 0, res.stderr
    with rasterio.open(tmp_path / "mask.vrt") as mask:
        assert (mask.width, mask.height) == (512, 256) and (mask.read(1) == 1).any()


def test_light_doctor_runs_the_onnx_demo_model(light):
    """`doctor` in the light engine: torch is not installed (not a failure), the device is
    onnxruntime's provider and the ONNX demo model runs; exit 0."""
    res = _engine(light, "doctor", "--json", "--device", "cpu", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] and all(c["ok"] for c in checks.values())
    assert checks["torch"]["value"] == "not installed (light engine: detection with .onnx models only)"
    assert report["torch"] is None and report["engine_kind"] == "light"
    assert report["device"] == "cpu" and report["providers"] == ["CPUExecutionProvider"]
    assert checks["demo model"]["value"].startswith("hrmnet_demo_int8.onnx runs on onnxruntime (CPUExecutionProvider")
    assert "hrmnet-demo (onnx)" in report["models"] and not any("safetensors" in m for m in report["models"])


def test_light_engine_takes_the_onnx_entry_of_a_catalogue_name(light, tmp_path):
    res = _engine(light, "models", "path", "hrmnet-demo")
    assert res.returncode == 0 and res.stdout.strip() == str(DEMO / "hrmnet_demo_int8.onnx"), res.stderr
    mask = tmp_path / "mask.tif"
    res = _detect(light, "hrmnet-demo", mask)
    assert res.returncode == 0, res.stderr
    start = next(json.loads(line) for line in res.stdout.splitlines() if '"start"' in line)
    assert start["precision"] == "int8" and mask.is_file()
