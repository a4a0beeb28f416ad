"""The installed-plugin path: `make plugin`'s ZIP unpacked into a fresh QGIS profile (as "Install
from ZIP" does), enabled, and `hrmnet:detectchanges` run through qgis_process with no model
given: the int8 demo model shipped in the ZIP is the default."""
from __future__ import annotations

import zipfile

import pytest

from .conftest import headless_env
from .test_qgis_process import qgis_process

pytestmark = pytest.mark.qgis

INT8 = "hrmnet_qgis/engine/demo/hrmnet_demo_int8.onnx"


@pytest.fixture(scope="module")
def installed(built_plugin, tmp_path_factory) -> dict:
    """A qgis_process environment whose fresh profile has the plugin from the ZIP, enabled."""
    zip_path = built_plugin.parent / "dist" / "hrmnet_qgis.zip"
    env = headless_env()  # no QGIS_PLUGINPATH: only what the ZIP put into the profile
    plugins = tmp_path_factory.mktemp("profile-root") / "profiles" / "default" / "python" / "plugins"
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(plugins.parents[3])
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(plugins)
    enabled = qgis_process(env, "plugins", "enable", "hrmnet_qgis")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    return env


def test_the_zip_ships_the_int8_demo_model_and_fits(built_plugin):
    zip_path = built_plugin.parent / "dist" / "hrmnet_qgis.zip"
    assert zip_path.stat().st_size <= 25 * 1024 * 1024
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    assert INT8 in names and "hrmnet_qgis/engine/catalogue.json" in names
    assert [n for n in names if n.endswith((".onnx", ".safetensors", ".pth"))] == [INT8]


def test_detect_with_no_model_given_runs_the_shipped_int8_model(installed, scenes, tmp_path):
    before, after, _ = scenes[1]
    out = tmp_path / "changes.gpkg"
    run = qgis_process(installed, "run", "hrmnet:detectchanges", "--",
                       f"BEFORE={before}", f"AFTER={after}", f"OUTPUT_POLYGONS={out}", timeout=600)
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-3000:]
    assert out.is_file()
    assert "precision=int8" in text and "hrmnet_demo_int8.onnx" in text, text[-3000:]
