"""The review layer in QGIS: OUTPUT_REVIEW / OUTPUT_REVIEW_AREAS on hrmnet:detectchanges map to the
CLI, run end to end and load styled (heat ramp transparent where low, dashed areas, high-review
polygons drawn distinctly)."""
from __future__ import annotations

import os

import pytest

from .helpers import detect_params

pytestmark = pytest.mark.qgis


def _alg():
    from qgis.core import QgsApplication

    return QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchanges")


def test_review_parameters_map_to_the_cli_options(qgis_app, scenes, tmp_path):
    from qgis.core import QgsProcessingContext, QgsProcessingException

    params = detect_params(scenes[0], "/models/m.safetensors", 0.5, tmp_path, OUTPUT_REVIEW=str(tmp_path / "r.tif"),
                           OUTPUT_REVIEW_AREAS=str(tmp_path / "a.gpkg"), REVIEW_THRESHOLD=0.4)
    args, outputs = _alg().engine_args(params, QgsProcessingContext())
    opts = dict(zip(args[::2], args[1::2]))
    assert opts["--out-review"] == str(tmp_path / "r.tif") and opts["--out-review-areas"] == str(tmp_path / "a.gpkg")
    assert float(opts["--review-threshold"]) == 0.4
    assert outputs["OUTPUT_REVIEW"] == str(tmp_path / "r.tif")
    assert outputs["OUTPUT_REVIEW_AREAS"] == str(tmp_path / "a.gpkg")
    args, _ = _alg().engine_args(detect_params(scenes[0], "/models/m.safetensors", 0.5, tmp_path), QgsProcessingContext())
    assert "--out-review" not in args and "--review-threshold" not in args  # optional, off by default
    params["OUTPUT_REVIEW_AREAS"] = str(tmp_path / "a.kml")
    with pytest.raises(QgsProcessingException, match=r"a\.kml: unsupported vector format"):
        _alg().engine_args(params, QgsProcessingContext())


def test_review_outputs_end_to_end_loaded_with_styles(qgis_app, scenes, model_path, threshold, tmp_path):
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import (QgsProcessingContext, QgsProcessingFeedback, QgsProcessingOutputLayerDefinition,
                           QgsProject, QgsSingleBandPseudoColorRenderer, QgsSymbolLayer)
    from qgis.PyQt.QtCore import Qt

    project = QgsProject.instance()
    project.clear()
    params = detect_params(scenes[0], model_path, threshold, tmp_path, REVIEW_THRESHOLD=0.05)
    for key, name in (("OUTPUT_POLYGONS", "changes.gpkg"), ("OUTPUT_REVIEW", "review.tif"),
                      ("OUTPUT_REVIEW_AREAS", "areas.gpkg")):
        params[key] = QgsProcessingOutputLayerDefinition(str(tmp_path / name), project)
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = QgsProcessingFeedback()
    alg = _alg()
    results, ok = alg.run(params, context, feedback)
    assert ok, feedback.textLog()
    assert results["OUTPUT_REVIEW"] == str(tmp_path / "review.tif")
    assert results["OUTPUT_REVIEW_AREAS"] == str(tmp_path / "areas.gpkg")
    assert handleAlgorithmResults(alg, context, feedback, False, params)
    loaded = {os.path.basename(layer.source().split("|")[0]): layer for layer in project.mapLayers().values()}
    assert set(loaded) == {"changes.gpkg", "review.tif", "areas.gpkg"}

    review = loaded["review.tif"]
    assert isinstance(review.renderer(), QgsSingleBandPseudoColorRenderer)
    ramp = review.renderer().shader().rasterShaderFunction().colorRampItemList()
    assert ramp[0].color.alpha() == 0 and ramp[1].color.alpha() == 0  # transparent where the score is low
    assert ramp[-1].value == 254 and ramp[-1].color.alpha() == 255

    areas = loaded["areas.gpkg"].renderer().symbol().symbolLayer(0)
    assert areas.strokeStyle() == Qt.DashLine and areas.brushStyle() == Qt.NoBrush

    polygons = loaded["changes.gpkg"]
    assert "review" in polygons.fields().names()
    stroke = polygons.renderer().symbol().symbolLayer(0).dataDefinedProperties().property(
        QgsSymbolLayer.PropertyStrokeColor)
    assert stroke.isActive() and "review" in stroke.expressionString()  # high-review polygons drawn distinctly
    project.clear()


def test_sheets_review_outputs_map_to_the_cli_options(qgis_app, tmp_path):
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException

    alg = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchangessheets")
    (tmp_path / "list.csv").write_text("id,before,after\n")
    params = {"MODEL": str(tmp_path / "m.safetensors"), "RUN_FOLDER": str(tmp_path / "run"),
              "OUTPUT_POLYGONS": str(tmp_path / "changes.gpkg"), "DEVICE": 1, "SHEETS_FILE": str(tmp_path / "list.csv"),
              "OUTPUT_REVIEW": str(tmp_path / "review.tif"), "OUTPUT_REVIEW_AREAS": str(tmp_path / "areas.gpkg")}
    args, outputs, _ = alg.engine_args(params, QgsProcessingContext())
    opts = dict(zip(args, args[1:]))
    assert opts["--out-review"] == str(tmp_path / "review.vrt")  # the mosaic of the sheets' review rasters
    assert opts["--out-review-areas"] == str(tmp_path / "areas.gpkg")
    assert outputs["OUTPUT_REVIEW"] == str(tmp_path / "review.vrt")
    args, outputs, _ = alg.engine_args({k: v for k, v in params.items() if "REVIEW" not in k}, QgsProcessingContext())
    assert "--out-review" not in args and "OUTPUT_REVIEW" not in outputs
    with pytest.raises(QgsProcessingException, match=r"a\.kml: unsupported vector format"):
        alg.engine_args({**params, "OUTPUT_REVIEW_AREAS": str(tmp_path / "a.kml")}, QgsProcessingContext())
