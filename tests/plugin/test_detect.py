"""hrmnet:detectchanges in a real QGIS 3.22: parameters → CLI, end-to-end run, styled results."""
from __future__ import annotations

import os

import pytest

from .conftest import DEMO_MODEL
from .helpers import detect_params

pytestmark = pytest.mark.qgis


def _alg():
    from qgis.core import QgsApplication

    return QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchanges")


def test_parameters_map_to_the_cli_options(qgis_app, scenes, tmp_path):
    from qgis.core import QgsProcessingContext

    before, after, _ = scenes[0]
    # The extent comes in EPSG:4326 and must reach the engine in the before's CRS (UTM 33N).
    params = {"BEFORE": str(before), "AFTER": str(after), "MODEL": "/models/m.safetensors",
              "MIN_AREA": 20, "SIMPLIFY": 0.5, "EXTENT": "12.2300,12.2320,49.6185,49.6195 [EPSG:4326]",
              "BANDS_BEFORE": [3, 2, 1], "TILE_SIZE": 256, "DEVICE": 2, "PRECISION": 2,
              "OUTPUT_POLYGONS": str(tmp_path / "c.gpkg"), "OUTPUT_MASK": str(tmp_path / "m.tif")}
    args, outputs = _alg().engine_args(params, QgsProcessingContext())
    opts = dict(zip(args[::2], args[1::2]))
    assert opts["--before"] == str(before) and opts["--after"] == str(after)
    assert opts["--model"] == "/models/m.safetensors"
    assert opts["--out-vector"] == str(tmp_path / "c.gpkg") and opts["--out-mask"] == str(tmp_path / "m.tif")
    assert "--out-probability" not in args and "--threshold" not in args and "--overlap" not in args
    assert opts["--bands-before"] == "3,2,1" and "--bands-after" not in args
    assert opts["--tile-size"] == "256" and opts["--device"] == "cuda" and opts["--precision"] == "bf16"
    assert float(opts["--min-area"]) == 20 and float(opts["--simplify"]) == 0.5
    xmin, ymin, xmax, ymax = (float(v) for v in opts["--extent"].split(","))
    assert 299_000 < xmin < xmax < 301_000 and 5_499_000 < ymin < ymax < 5_501_000  # metres, UTM 33N
    assert "--overwrite" in args
    assert outputs == {"OUTPUT_POLYGONS": str(tmp_path / "c.gpkg"), "OUTPUT_MASK": str(tmp_path / "m.tif")}


def test_unsupported_vector_format_is_refused_before_running(qgis_app, scenes, tmp_path):
    from qgis.core import QgsProcessingContext, QgsProcessingException

    params = detect_params(scenes[0], "/models/m.safetensors", 0.5, tmp_path,
                           OUTPUT_POLYGONS=str(tmp_path / "c.kml"))
    with pytest.raises(QgsProcessingException, match=r"c\.kml: unsupported vector format"):
        _alg().engine_args(params, QgsProcessingContext())


def test_detect_end_to_end_polygons_in_the_before_crs_loaded_with_styles(qgis_app, scenes, model_path, threshold,
                                                                        tmp_path):
    """Run as the Processing dialog does (outputs to load into the project), then load them."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import (QgsPalettedRasterRenderer, QgsProcessingContext, QgsProcessingFeedback,
                           QgsProcessingOutputLayerDefinition, QgsProject, QgsRasterLayer,
                           QgsSingleBandPseudoColorRenderer, QgsVectorLayer)

    project = QgsProject.instance()
    project.clear()
    params = detect_params(scenes[0], model_path, threshold, tmp_path)
    for key, name in (("OUTPUT_POLYGONS", "changes.shp"), ("OUTPUT_PROBABILITY", "probability.tif"),
                      ("OUTPUT_MASK", "mask.tif")):
        params[key] = QgsProcessingOutputLayerDefinition(str(tmp_path / name), project)
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = QgsProcessingFeedback()
    progress: list[float] = []
    feedback.progressChanged.connect(progress.append)
    alg = _alg()
    results, ok = alg.run(params, context, feedback)
    assert ok, results

    assert results["OUTPUT_POLYGONS"] == str(tmp_path / "changes.shp")
    layer = QgsVectorLayer(results["OUTPUT_POLYGONS"], "changes", "ogr")
    assert layer.isValid() and layer.featureCount() > 0
    before = QgsRasterLayer(str(scenes[0][0]), "before")
    assert layer.crs().authid() == before.crs().authid() == "EPSG:32633"
    assert before.extent().contains(layer.extent())
    assert {"id", "area_m2", "mean_prob", "max_prob"} <= set(layer.fields().names())
    prob = QgsRasterLayer(results["OUTPUT_PROBABILITY"], "p")
    assert prob.isValid() and prob.crs().authid() == "EPSG:32633" and prob.width() == before.width()
    assert QgsRasterLayer(results["OUTPUT_MASK"], "m").isValid()
    assert progress and max(progress) == pytest.approx(100.0)
    assert "device=cpu" in feedback.textLog()  # device and precision shown at the start
    assert ": HRMNet, bands red,green,blue" in feedback.textLog()  # what the model is (engine.model_fit)
    if model_path == DEMO_MODEL:
        assert "this is a demonstration model" in feedback.textLog()
    left = sorted(n for n in os.listdir(tmp_path) if not n.endswith((".ovr", ".aux.xml")))
    assert left == sorted(["changes.shp", "changes.shx", "changes.dbf", "changes.prj", "changes.cpg",
                           "probability.tif", "mask.tif"]), "only the outputs (no temporary files) are left"

    # Loading into the project applies the shipped QML styles.
    assert handleAlgorithmResults(alg, context, feedback, False, params)
    loaded = {os.path.basename(l.source().split("|")[0]): l for l in project.mapLayers().values()}
    assert set(loaded) == {"changes.shp", "probability.tif", "mask.tif"}
    renderer = loaded["probability.tif"].renderer()
    assert isinstance(renderer, QgsSingleBandPseudoColorRenderer) and renderer.classificationMax() == 254
    assert isinstance(loaded["mask.tif"].renderer(), QgsPalettedRasterRenderer)
    fill = loaded["changes.shp"].renderer().symbol().symbolLayer(0)
    assert fill.brushStyle() == 0 and fill.strokeColor().red() == 255  # red outlines, no fill
    project.clear()
