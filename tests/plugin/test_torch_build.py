"""Set up engine picks the PyTorch build this computer can use: stand-in ``nvidia-smi`` on PATH
(several drivers, none, a failing one), and the pip command it leads to (a stand-in Python)."""
from __future__ import annotations

import json
import os
import stat
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT

posix_only = pytest.mark.skipif(os.name == "nt", reason="stand-in executables are shell scripts")

HEADER = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI {driver}              Driver Version: {driver}      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
"""
OLD_HEADER = "| NVIDIA-SMI {driver}    Driver Version: {driver}    |\n"


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_nvidia_smi(folder: Path, driver: str, cuda: str | None, name: str = "NVIDIA GeForce RTX 4070",
                    fail: bool = False) -> Path:
    """A stand-in nvidia-smi: the CSV query, and the table with (or without) "CUDA Version"."""
    folder.mkdir(parents=True, exist_ok=True)
    if fail:
        body = ('echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver. '
                'Make sure that the latest NVIDIA driver is installed and running."\nexit 9\n')
    else:
        table = (HEADER.format(driver=driver, cuda=cuda) if cuda else OLD_HEADER.format(driver=driver))
        body = (f'case "$1" in\n  --query-gpu=*) echo "{name}, {driver}, 12282" ;;\n'
                f"  *) cat <<'EOF'\n{table}EOF\n ;;\nesac\n")
    return _script(folder / "nvidia-smi", body)


def choose(monkeypatch, path: Path, platform: str = "linux", environ: dict | None = None, local_wheel=None):
    from hrmnet_qgis.setup_engine import choose_torch_build, detect_gpu

    monkeypatch.setenv("PATH", str(path))
    gpu, note = detect_gpu(platform=platform)
    return gpu, choose_torch_build(gpu, note, platform=platform, environ=environ or {}, local_wheel=local_wheel)


@posix_only
@pytest.mark.parametrize("driver, cuda, build", [
    ("580.95.05", "13.0", "cu130"),
    ("590.44.01", "13.1", "cu130"),   # newer driver than any build: the newest build
    ("575.64.03", "12.9", "cu128"),   # no cu129 for the pinned torch: the newest below
    ("570.86.10", "12.8", "cu128"),
    ("560.35.03", "12.6", "cu126"),
    ("570.86.10", None, "cu128"),     # an nvidia-smi without "CUDA Version": NVIDIA's driver table
    ("555.42.02", None, "cu126"),     # 12.4-level driver: cu126 by minor-version compatibility
])
def test_the_driver_decides_the_cuda_build(monkeypatch, tmp_path, driver, cuda, build):
    fake_nvidia_smi(tmp_path / "bin", driver, cuda)
    gpu, choice = choose(monkeypatch, tmp_path / "bin")
    assert gpu.name == "NVIDIA GeForce RTX 4070" and gpu.driver == driver and gpu.memory_mib == 12282
    assert choice.build == build
    assert choice.index_url == f"https://download.pytorch.org/whl/{build}"
    assert choice.pip_args() == ["--extra-index-url", f"https://download.pytorch.org/whl/{build}"]
    assert "RTX 4070" in choice.label and driver in choice.label and "GB" in choice.size


@posix_only
def test_an_old_12x_driver_gets_a_cuda_build_by_minor_version_compatibility(monkeypatch, tmp_path):
    fake_nvidia_smi(tmp_path / "bin", "535.183.01", "12.2")
    _, choice = choose(monkeypatch, tmp_path / "bin")
    assert choice.build == "cu126" and "minor-version compatibility" in choice.reason


@posix_only
def test_a_driver_too_old_for_any_build_gets_the_cpu_build_and_says_why(monkeypatch, tmp_path):
    fake_nvidia_smi(tmp_path / "bin", "470.256.02", "11.4", name="Tesla K80")
    _, choice = choose(monkeypatch, tmp_path / "bin")
    assert choice.build == "cpu" and choice.index_url == "https://download.pytorch.org/whl/cpu"
    assert "Tesla K80" in choice.reason and "too old" in choice.reason and "newer NVIDIA driver" in choice.reason


@posix_only
def test_no_nvidia_smi_means_the_cpu_build(monkeypatch, tmp_path):
    (tmp_path / "empty").mkdir()
    gpu, choice = choose(monkeypatch, tmp_path / "empty")
    assert gpu is None and choice.build == "cpu" and "no NVIDIA GPU" in choice.reason
    assert choice.size.startswith("about 1.6 GB")


@posix_only
def test_a_failing_nvidia_smi_means_the_cpu_build_with_the_reason(monkeypatch, tmp_path):
    fake_nvidia_smi(tmp_path / "bin", "", None, fail=True)
    gpu, choice = choose(monkeypatch, tmp_path / "bin")
    assert gpu is None and choice.build == "cpu"
    assert "nvidia-smi failed" in choice.reason and "couldn't communicate" in choice.reason


@posix_only
def test_macos_takes_pypis_torch_without_asking_nvidia_smi(monkeypatch, tmp_path):
    fake_nvidia_smi(tmp_path / "bin", "570.86.10", "12.8")
    gpu, choice = choose(monkeypatch, tmp_path / "bin", platform="darwin")
    assert gpu is None and choice.build == "default" and choice.index_url is None and choice.pip_args() == []


@posix_only
def test_pip_configuration_is_respected(monkeypatch, tmp_path):
    fake_nvidia_smi(tmp_path / "bin", "570.86.10", "12.8")
    _, choice = choose(monkeypatch, tmp_path / "bin", environ={"PIP_INDEX_URL": "https://mirror.example/simple"})
    assert choice.build == "pip" and choice.pip_args() == [] and "PIP_INDEX_URL" in choice.reason
    _, choice = choose(monkeypatch, tmp_path / "bin", local_wheel="2.13.0+cpu")
    assert choice.build == "local" and choice.pip_args() == [] and "2.13.0+cpu" in choice.label


def test_every_build_can_be_picked_by_hand():
    from hrmnet_qgis.setup_engine import torch_build_options

    builds = [o.build for o in torch_build_options(platform="linux")]
    assert builds[:4] == ["cpu", "cu130", "cu128", "cu126"] and {"cu124", "cu121", "cu118", "pip"} <= set(builds)
    assert [o.build for o in torch_build_options(platform="darwin")] == ["cpu", "pip"]


FAKE_PYTHON = """
log="$(dirname "$0")/../calls.log"
echo "$*" >> "$log"
case "$*" in
  "-c import sys"*) echo "3 11" ;;
  "-m pip install"*) echo "Successfully installed torch-2.13.0+cu128" ;;
  "-c import"*) echo "torch 2.13.0+cu128" ;;
  "-m engine --version") echo "hrmnet-engine 0.1.0" ;;
  "-m engine doctor --json") echo '{REPORT}' ;;
esac
"""


@posix_only
def test_setup_installs_the_chosen_build_with_the_projects_pins(tmp_path):
    """The whole set-up flow with a stand-in interpreter: pip gets PyTorch's index for the build,
    after the full lock (hashes); the doctor's report comes back."""
    from hrmnet_qgis import engine_requirements
    from hrmnet_qgis.setup_engine import TorchBuild, create_engine_env

    folder = tmp_path / "venv"
    (folder / "bin").mkdir(parents=True)
    (folder / "pyvenv.cfg").write_text("home = /usr/bin\n")
    report = {"ok": True, "checks": [], "device": "cuda", "device_name": "NVIDIA GeForce RTX 4070",
              "torch": "2.13.0+cu128", "cuda": "12.8", "precision": "bf16"}
    _script(folder / "bin" / "python", FAKE_PYTHON.replace("{REPORT}", json.dumps(report)))
    build = TorchBuild("cu128", "https://download.pytorch.org/whl/cu128", "CUDA 12.8 build", "several GB")
    lines: list[str] = []
    reports: list[dict] = []
    python = create_engine_env(folder, log=lines.append, torch_build=build, on_report=reports.append,
                               find_links=[])
    assert python == folder / "bin" / "python"
    calls = (folder / "calls.log").read_text().splitlines()
    locked, torch = [c.split() for c in calls if c.startswith("-m pip install")]
    # first the full lock with its hashes, less torch and its CUDA libraries; then torch from the build's index
    lock = [e for e in engine_requirements.load_lock(ROOT, "full") if not engine_requirements.torch_build_part(e.name)]
    assert "--require-hashes" in locked and "--extra-index-url" not in locked
    assert Path(locked[locked.index("-r") + 1]).read_text() == engine_requirements.hashed(lock)
    assert torch[torch.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cu128"
    assert torch[-1] == "torch>=2.1"
    torch_pins = Path(torch[torch.index("-c") + 1]).read_text().splitlines()
    assert "torch==2.13.0 ; python_full_version >= '3.10'" in torch_pins and "numpy==1.26.4" in torch_pins
    assert not any(p.startswith("nvidia-") for p in torch_pins)  # the CUDA build's own exact pins decide those
    assert any("-m engine doctor --json" == c for c in calls)
    assert reports == [report]
    summary = next(line for line in lines if line.startswith("Engine check: "))
    assert "NVIDIA GeForce RTX 4070" in summary and "CUDA 12.8" in summary and "bf16" in summary
    assert any("several GB" in line for line in lines)


def test_the_built_plugin_carries_the_same_requirements_and_pins(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_plugin
    finally:
        sys.path.remove(str(ROOT / "tools"))
    from hrmnet_qgis import engine_requirements

    folder, zip_path = build_plugin.build(tmp_path / "build", tmp_path / "dist")
    assert engine_requirements.load(folder) == engine_requirements.load(ROOT)
    # The light engine's set: engine/light-requirements.txt, generated into the plugin like the full list.
    assert (folder / engine_requirements.LIGHT_REQUIREMENTS_FILE).is_file()
    assert engine_requirements.load_light(folder) == engine_requirements.load_light(ROOT)
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    assert "hrmnet_qgis/engine_requirements.txt" in names and "hrmnet_qgis/engine_constraints.txt" in names
    assert "hrmnet_qgis/engine_light_requirements.txt" in names
    # the full locks Set up engine installs from travel inside the plugin's engine folder
    for kind in ("light", "full"):
        assert engine_requirements.load_lock(folder, kind) == engine_requirements.load_lock(ROOT, kind)
        assert f"hrmnet_qgis/{engine_requirements.LOCKS[kind]}" in names
