"""The Batch Processing path: one algorithm over three map sheets, output names autofilled."""
from __future__ import annotations

import os

import pytest

from .helpers import detect_params

pytestmark = pytest.mark.qgis


def test_batch_over_three_sheets_with_autofilled_output_names(qgis_app, scenes, model_path, threshold, tmp_path):
    """What the Batch Processing dialog does: one row per sheet, output names autofilled
    from the BEFORE layer ("Fill with parameter values"), a new context per row."""
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback, QgsVectorLayer

    alg = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchanges")
    base = str(tmp_path / "changes_.gpkg")
    outputs = []
    for scene in scenes:
        value = os.path.splitext(os.path.basename(str(scene[0])))[0]
        name = base[:base.rfind(".")] + value + base[base.rfind("."):]  # BatchOutputSelectionPanel's rule
        params = detect_params(scene, model_path, threshold, tmp_path, OUTPUT_POLYGONS=name)
        ok, msg = alg.checkParameterValues(params, QgsProcessingContext())
        assert ok, msg
        results, ok = alg.run(params, QgsProcessingContext(), QgsProcessingFeedback())
        assert ok, results
        outputs.append(results["OUTPUT_POLYGONS"])
    assert [os.path.basename(p) for p in outputs] == [
        "changes_scene_000_before.gpkg", "changes_scene_001_before.gpkg", "changes_scene_002_before.gpkg"]
    for path in outputs:
        layer = QgsVectorLayer(path, "c", "ogr")
        assert layer.isValid() and layer.crs().authid() == "EPSG:32633"
