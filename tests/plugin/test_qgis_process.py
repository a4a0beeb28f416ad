"""The built plugin through ``qgis_process.bin`` (plugin enabled with QGIS_PLUGINPATH → build/)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from .conftest import QGIS_PROCESS, headless_env

pytestmark = pytest.mark.qgis


def qgis_process(env: dict, *args: str, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.fixture(scope="module")
def env(built_plugin):
    env = headless_env(built_plugin)
    enabled = qgis_process(env, "plugins", "enable", "hrmnet_qgis")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    return env


def test_qgis_process_lists_the_provider(env):
    listed = qgis_process(env, "list")
    assert listed.returncode == 0
    assert "HRMNet change detection" in listed.stdout
    for alg in ("hrmnet:detectchanges", "hrmnet:train", "hrmnet:evaluate", "hrmnet:preparedataset"):
        assert alg in listed.stdout


def test_qgis_process_runs_detectchanges_with_relative_paths(env, scenes, model_path, threshold, tmp_path):
    """As in the README: ``qgis_process.bin run hrmnet:detectchanges -- BEFORE=a.tif AFTER=b.tif
    MODEL=m.safetensors OUTPUT_POLYGONS=out.shp``, paths relative to the working folder."""
    before, after, _ = scenes[1]
    for src, name in ((before, "a.tif"), (after, "b.tif"), (model_path, "m.safetensors")):
        shutil.copy(src, tmp_path / name)
    run = qgis_process(env, "run", "hrmnet:detectchanges", "--json", "--",
                       "BEFORE=a.tif", "AFTER=b.tif", "MODEL=m.safetensors", "OUTPUT_POLYGONS=out.shp",
                       "OUTPUT_PROBABILITY=prob.tif", f"THRESHOLD={threshold}", "TILE_SIZE=128", "OVERLAP=32",
                       cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    out = tmp_path / "out.shp"
    assert out.is_file() and out.with_suffix(".dbf").is_file() and (tmp_path / "prob.tif").is_file()
    result = json.loads(run.stdout[run.stdout.index("{"):])
    assert os.path.samefile(result["results"]["OUTPUT_POLYGONS"], out)


def test_qgis_process_reports_an_engine_error(env, scenes, far_raster, model_path, tmp_path):
    out = tmp_path / "out.shp"
    run = qgis_process(env, "run", "hrmnet:detectchanges", "--",
                       f"BEFORE={scenes[0][0]}", f"AFTER={far_raster}", f"MODEL={model_path}",
                       f"OUTPUT_POLYGONS={out}", "TILE_SIZE=128", "OVERLAP=32")
    assert run.returncode != 0
    assert "overlap" in (run.stdout + run.stderr).lower()
    assert list(tmp_path.iterdir()) == []


def test_qgis_process_without_an_engine_says_so_once(env, scenes, tmp_path):
    no_engine = dict(env, HRMNET_PYTHON=str(tmp_path / "no-python"))
    run = qgis_process(no_engine, "run", "hrmnet:detectchanges", "--",
                       f"BEFORE={scenes[0][0]}", f"AFTER={scenes[0][1]}", f"MODEL={tmp_path / 'm.safetensors'}",
                       f"OUTPUT_POLYGONS={tmp_path / 'out.gpkg'}")
    assert run.returncode != 0
    assert (run.stdout + run.stderr).count("HRMNET_PYTHON points to no file") == 1, run.stdout + run.stderr
    assert not (tmp_path / "out.gpkg").exists()
