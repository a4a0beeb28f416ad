"""The polygon files open where users open them: the system GDAL (QGIS's) and QGIS itself.

Each check runs in its own process: QGIS must not share one with rasterio/pyproj (it
crashes at exit), and two GDAL builds in one process are unwise.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from engine.vector import SUPPORTED_VECTOR_EXTENSIONS, polygonize_to_file
from tests.rasters import write_geotiff

FIELDS = "id,area_m2,mean_prob,max_prob"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict:
    """An empty and a two-polygon output in each format: {file name: path}."""
    tmp = tmp_path_factory.mktemp("interop")
    write_geotiff(tmp / "empty.tif", np.zeros((32, 32), np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[4:20, 4:20] = 1
    mask[30:60, 30:40] = 1
    write_geotiff(tmp / "two.tif", mask)
    write_geotiff(tmp / "prob.tif", np.where(mask == 1, 254, 0).astype(np.uint8), nodata=255)
    paths = {}
    for ext in SUPPORTED_VECTOR_EXTENSIONS:
        paths[f"empty{ext}"] = tmp / f"empty{ext}"
        polygonize_to_file(tmp / "empty.tif", None, paths[f"empty{ext}"])
        paths[f"two{ext}"] = tmp / f"two{ext}"
        polygonize_to_file(tmp / "two.tif", tmp / "prob.tif", paths[f"two{ext}"], window_rows=16)
    return paths


def _run(code: str, paths, env=None) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "partially supported" not in done.stderr  # e.g. a GeoPackage version too new for that GDAL
    return {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line.strip()}


_OGR_OPEN = """
import os, sys
from osgeo import ogr
for path in sys.argv[1:]:
    ds = ogr.Open(path)  # keep a reference: a layer outlives no dataset
    lyr = ds.GetLayer(0)
    d = lyr.GetLayerDefn()
    f = lyr.GetNextFeature()
    srs = lyr.GetSpatialRef()
    print(os.path.basename(path), lyr.GetFeatureCount(), srs.GetAuthorityCode(None) if srs else None,
          ",".join(d.GetFieldDefn(i).GetName() for i in range(d.GetFieldCount())) or "-",
          f.GetGeometryRef().GetGeometryName() if f else "-", f.GetField("max_prob") if f else "-")
"""


def test_outputs_open_in_the_system_gdal(outputs):
    if importlib.util.find_spec("osgeo") is None:
        pytest.skip("GDAL Python bindings (osgeo) not installed")
    rows = _run(_OGR_OPEN, outputs.values())
    for ext in SUPPORTED_VECTOR_EXTENSIONS:
        assert rows[f"two{ext}"] == ["2", "32633", FIELDS, "POLYGON", "1.0"]
        # GeoJSON has no schema without features
        assert rows[f"empty{ext}"] == ["0", "32633", "-" if ext == ".geojson" else FIELDS, "-", "-"]


_QGIS_OPEN = """
import os, sys, tempfile
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp())
from qgis.core import QgsApplication, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
for path in sys.argv[1:]:
    layer = QgsVectorLayer(path, "changes", "ogr")
    print(os.path.basename(path), layer.isValid(), layer.featureCount(), layer.crs().authid() or "-",
          ",".join(layer.fields().names()) or "-", flush=True)
os._exit(0)  # skip QGIS's teardown (it can crash at exit headless)
"""


@pytest.mark.qgis
def test_outputs_open_in_qgis(outputs, tmp_path):
    if importlib.util.find_spec("qgis") is None:
        pytest.skip("QGIS Python bindings not installed")
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"))
    rows = _run(_QGIS_OPEN, outputs.values(), env=env)
    for ext in SUPPORTED_VECTOR_EXTENSIONS:
        fields = ("fid," if ext == ".gpkg" else "") + FIELDS  # QGIS lists the GeoPackage fid
        assert rows[f"two{ext}"] == ["True", "2", "EPSG:32633", fields]
        if ext == ".geojson":  # no features: no schema, no geometry type (QGIS opens it as a table)
            assert rows[f"empty{ext}"][:2] == ["True", "0"]
        else:
            assert rows[f"empty{ext}"] == ["True", "0", "EPSG:32633", fields]
