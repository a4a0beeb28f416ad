"""`make plugin` output, metadata.txt, pb_tool.cfg (pb_tool 3.x) and bandit over the plugin."""
from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT

PB_TOOL = Path(sys.executable).with_name("pb_tool")
BANDIT = Path(sys.executable).with_name("bandit")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    base = tmp_path_factory.mktemp("make-plugin")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "build_plugin.py"), "--build-dir", str(base / "build"),
                          "--dist-dir", str(base / "dist")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return base / "build" / "hrmnet_qgis", base / "dist" / "hrmnet_qgis.zip"


def test_zip_has_one_top_folder_no_bytecode_no_weights_and_fits(build):
    folder, zip_path = build
    assert zip_path.stat().st_size <= 25 * 1024 * 1024
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert zf.testzip() is None
    assert {n.split("/")[0] for n in names} == {"hrmnet_qgis"}
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    assert not [n for n in names if n.endswith((".safetensors", ".pth", ".pt"))]
    # the one model shipped: the int8 demo model, the installed plugin's default
    assert [n for n in names if n.endswith(".onnx")] == ["hrmnet_qgis/engine/demo/hrmnet_demo_int8.onnx"]
    for required in ("__init__.py", "metadata.txt", "LICENSE", "icon.png", "provider.py", "runner.py",
                     "styles/polygons.qml", "styles/probability.qml", "styles/mask.qml",
                     "engine/__main__.py", "engine/cli.py", "engine/commands/detect.py"):
        assert f"hrmnet_qgis/{required}" in names, required
    # The ZIP is the build folder (less the pb_tool configuration).
    on_disk = {f"hrmnet_qgis/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*") if p.is_file()}
    assert set(names) == on_disk - {"hrmnet_qgis/pb_tool.cfg"}


def test_metadata_has_the_fields_the_plugin_repository_requires():
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(ROOT / "metadata.txt", encoding="utf-8")
    meta = parser["general"]
    for key in ("name", "description", "version", "qgisMinimumVersion", "qgisMaximumVersion", "author", "email",
                "about", "tracker", "repository"):
        assert meta.get(key, "").strip(), key
    # QGIS 3.22 (tested) to 4.x (Qt6: checked statically by tests/test_qt6_scan.py).
    assert meta["qgisMinimumVersion"] == "3.22" and meta["qgisMaximumVersion"] == "4.99"
    assert meta["supportsQt6"] == "True"
    assert meta["hasProcessingProvider"] == "yes"
    assert meta["license"].startswith("GPL-2.0")
    assert (ROOT / "hrmnet_qgis" / meta["icon"]).is_file()
    assert meta["tracker"].startswith("https://") and meta["repository"].startswith("https://")


def test_build_refuses_metadata_without_required_fields(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_plugin
    finally:
        sys.path.remove(str(ROOT / "tools"))
    bad = tmp_path / "metadata.txt"
    bad.write_text("[general]\nname=x\nversion=1\n")
    with pytest.raises(build_plugin.BuildError, match="missing required field"):
        build_plugin.check_metadata(bad)


def test_pb_tool_cfg_lists_every_module_and_deploys_and_zips(build, tmp_path):
    folder, _ = build
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "pb_tool.cfg")
    listed = set(cfg["files"]["python_files"].split())
    assert listed == {p.name for p in (ROOT / "hrmnet_qgis").glob("*.py")}
    dirs = set(cfg["files"]["extra_dirs"].split())
    assert dirs == {p.name for p in (ROOT / "hrmnet_qgis").iterdir() if p.is_dir() and p.name != "__pycache__"} | {
        "engine"}

    def pb_tool(*args):
        run = subprocess.run([str(PB_TOOL), *args], cwd=folder, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        return run.stdout

    assert "valid" in pb_tool("validate")
    plugins = tmp_path / "plugins"
    pb_tool("deploy", "-y", "-n", "-p", str(plugins))
    assert (plugins / "hrmnet_qgis" / "metadata.txt").is_file()
    assert (plugins / "hrmnet_qgis" / "engine" / "__main__.py").is_file()
    pb_tool("zip", "-q", "-n", "-p", str(plugins))
    with zipfile.ZipFile(folder / "hrmnet_qgis.zip") as zf:
        names = zf.namelist()
    assert "hrmnet_qgis/__init__.py" in names and "hrmnet_qgis/engine/cli.py" in names
    (folder / "hrmnet_qgis.zip").unlink()


def test_bandit_finds_no_medium_or_high_issue_in_the_plugin():
    run = subprocess.run([str(BANDIT), "-r", "-q", "-ll", str(ROOT / "hrmnet_qgis"), "-f", "json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:]
