"""Fixtures for the plugin tests: a headless QGIS 3.22, the provider, small data.

QGIS runs in this pytest process, so nothing here imports the engine, torch,
rasterio, pyproj or geopandas (they crash QGIS at exit): data is made by running
``python -m engine ...`` in a subprocess, and checked with QGIS/OGR/GDAL.

The model: the demo checkpoint when it exists, else a randomly initialised HRMNet
(see :func:`model_path`; one line to change).
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO_MODEL = ROOT / "engine" / "demo" / "hrmnet_demo.safetensors"
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
QGIS_PLUGINS = "/usr/share/qgis/python/plugins"

# Headless QGIS: set before anything from qgis is imported.
_RUNTIME = tempfile.mkdtemp(prefix="hrmnet-xdg-")
os.chmod(_RUNTIME, 0o700)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["XDG_RUNTIME_DIR"] = _RUNTIME
os.environ["QGIS_CUSTOM_CONFIG_PATH"] = tempfile.mkdtemp(prefix="hrmnet-qgis-profile-")
# QGIS computes statistics of the rasters it loads and GDAL keeps them in FILE.aux.xml beside
# the file: not beside the bundled demo rasters (inherited by qgis_process subprocesses too).
os.environ["GDAL_PAM_ENABLED"] = "NO"
# The engine's interpreter: this one (the project's venv has the engine's requirements).
os.environ.setdefault("HRMNET_PYTHON", sys.executable)
for p in (str(ROOT), QGIS_PLUGINS):
    if p not in sys.path:
        sys.path.insert(0, p)

try:
    from qgis.core import QgsApplication  # noqa: E402
except ImportError:  # pragma: no cover
    QgsApplication = None


def engine(*args: str, cwd: Path = ROOT, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m engine ARGS`` in a subprocess (never in this process)."""
    return subprocess.run([os.environ["HRMNET_PYTHON"], "-m", "engine", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=check)


def headless_env(plugin_path: Path | None = None) -> dict:
    """Environment for a qgis_process.bin subprocess with its own throwaway profile."""
    env = dict(os.environ)
    runtime = tempfile.mkdtemp(prefix="hrmnet-xdg-")
    os.chmod(runtime, 0o700)
    env.update(QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=runtime,
               QGIS_CUSTOM_CONFIG_PATH=tempfile.mkdtemp(prefix="hrmnet-qgis-profile-"))
    if plugin_path is not None:
        env["QGIS_PLUGINPATH"] = str(plugin_path)
    return env


@pytest.fixture(scope="session")
def qgis_app():
    """The QgsApplication of this session, Processing initialised, the provider registered."""
    if QgsApplication is None:
        pytest.skip("QGIS Python bindings not installed")
    app = QgsApplication([], True)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    from hrmnet_qgis.provider import HrmnetProvider

    # Keep the Python object alive: QGIS 3.22 does not take ownership of Python providers.
    provider = HrmnetProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    yield app
    if QgsApplication.processingRegistry().providerById("hrmnet") is not None:
        QgsApplication.processingRegistry().removeProvider("hrmnet")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def model_path(data_dir) -> Path:
    """The demo model when it exists, else a randomly initialised HRMNet checkpoint."""
    if DEMO_MODEL.is_file():
        return DEMO_MODEL
    path = data_dir / "random_hrmnet.safetensors"
    code = ("import sys, torch; torch.manual_seed(0); from engine.model import HRMNet; "
            "from engine.checkpoint import save_checkpoint, ModelInfo; "
            "save_checkpoint(sys.argv[1], HRMNet(), ModelInfo(tile_size=128, overlap=32))")
    subprocess.run([os.environ["HRMNET_PYTHON"], "-c", code, str(path)], cwd=ROOT, check=True, timeout=300)
    return path


@pytest.fixture(scope="session")
def threshold(model_path) -> float:
    """Decision threshold for end-to-end checks: the demo model's own, or nearly 0 for a random model
    (so that a random model finds change somewhere)."""
    return 0.5 if model_path == DEMO_MODEL else 0.01


@pytest.fixture(scope="session")
def scenes(data_dir) -> list[tuple[Path, Path, Path]]:
    """Three synthetic 128² (before, after, labels) GeoTIFF triplets in UTM 33N."""
    out = data_dir / "scenes"
    engine("synth", "--out", str(out), "--scenes", "3", "--size", "128", "--progress", "none")
    with open(out / "scenes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(out / r["before"], out / r["after"], out / r["labels"]) for r in rows]


@pytest.fixture(scope="session")
def dataset(data_dir) -> Path:
    """A tiny training dataset in the authors' layout (64² GeoTIFF tiles of three scenes)."""
    out = data_dir / "dataset"
    engine("synth", "--out", str(out), "--scenes", "3", "--size", "64", "--layout", "dataset", "--tile-size", "64",
           "--progress", "none")
    return out


@pytest.fixture(scope="session")
def far_raster(data_dir, scenes) -> Path:
    """A copy of the first scene's after raster moved 100 km east (overlaps nothing)."""
    from osgeo import gdal

    src = gdal.Open(str(scenes[0][1]))
    gt = list(src.GetGeoTransform())
    gt[0] += 100_000
    path = data_dir / "far_after.tif"
    dst = gdal.GetDriverByName("GTiff").CreateCopy(str(path), src)
    dst.SetGeoTransform(gt)
    dst = None
    src = None
    return path


@pytest.fixture(scope="session")
def built_plugin(tmp_path_factory) -> Path:
    """``tools/build_plugin.py`` into a temporary folder; returns the folder holding hrmnet_qgis/."""
    base = tmp_path_factory.mktemp("plugin-build")
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_plugin.py"), "--build-dir", str(base / "build"),
                    "--dist-dir", str(base / "dist")], check=True, capture_output=True, text=True, timeout=120)
    return base / "build"
