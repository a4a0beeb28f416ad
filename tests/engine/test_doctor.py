"""``python -m engine doctor``: the real CLI reports versions, device, GDAL/PROJ, cache and demo model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pyproj
import rasterio
import torch

from tests.conftest import ROOT


def doctor(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "doctor", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def test_doctor_json_reports_what_the_engine_will_use(tmp_path):
    p = doctor("--json", HRMNET_CACHE=str(tmp_path / "cache"))
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(p.stdout)
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == ["Python", "engine", "torch", "device", "GDAL/PROJ", "cache",
                                                     "demo model", "models"]
    assert report["python"] == ".".join(map(str, sys.version_info[:3]))
    assert report["torch"] == torch.__version__ and report["cuda"] == torch.version.cuda
    assert report["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert report["precision"] in ("fp32", "bf16", "fp16") and report["forward_ok"] is True
    assert report["gdal"] == rasterio.__gdal_version__ and report["proj"] == pyproj.proj_version_str
    assert report["cache"] == str(tmp_path / "cache") and (tmp_path / "cache").is_dir()
    assert list((tmp_path / "cache").iterdir()) == []  # the write probe leaves nothing behind
    assert report["demo_model"].endswith("hrmnet_demo.safetensors")
    assert {"hrmnet-demo (onnx)", "hrmnet-demo (safetensors)"} <= set(report["models"])


def test_doctor_without_any_model_says_how_to_get_one(tmp_path):
    """An installation whose engine has no model files (the catalogue's demo files left out)."""
    import shutil

    shutil.copytree(ROOT / "engine", tmp_path / "engine",
                    ignore=shutil.ignore_patterns("*.onnx", "*.safetensors", "data", "training", "__pycache__"))
    p = subprocess.run([sys.executable, "-m", "engine", "doctor"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "HRMNET_CACHE": str(tmp_path / "cache"),
                                         "HRMNET_MODELS_URL": ""})
    assert p.returncode == 1, p.stdout + p.stderr
    line = next(line for line in p.stdout.splitlines() if line.startswith("FAIL models"))
    assert "no model available: download one with python -m engine models get NAME" in line
    assert "--model FILE" in line and "Traceback" not in p.stderr


def test_doctor_report_names_a_failing_check_and_exits_1(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    p = doctor(HRMNET_CACHE=str(blocker / "cache"))
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert any(line.startswith("FAIL cache") for line in lines), p.stdout
    assert any(line.startswith("ok   torch") and torch.__version__ in line for line in lines), p.stdout
    assert any(line.startswith("ok   GDAL/PROJ") for line in lines), p.stdout
    assert lines[-1] == "some checks failed (FAIL above)" and "Traceback" not in p.stderr


def test_doctor_speaks_the_plugins_jsonl_protocol(tmp_path):
    p = doctor("--progress", "jsonl", HRMNET_CACHE=str(tmp_path / "cache"))
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    assert [e["event"] for e in events] == ["done"]
    assert events[0]["stats"]["ok"] is True and events[0]["stats"]["torch"] == torch.__version__
