"""The provider in a real QGIS 3.22: registration, detection end-to-end, errors, cancel, batch."""
from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.qgis

EXPECTED = {
    "hrmnet:detectchanges": {"BEFORE", "AFTER", "MODEL", "THRESHOLD", "MIN_AREA", "SIMPLIFY", "EXTENT",
                             "BANDS_BEFORE", "BANDS_AFTER", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "DEVICE",
                             "PRECISION", "OUTPUT_POLYGONS", "OUTPUT_PROBABILITY", "OUTPUT_MASK"},
    "hrmnet:train": {"DATA", "OUTPUT", "STEPS", "BATCH_SIZE", "LR", "CROP", "WORKERS", "DEVICE", "PRECISION",
                     "INIT", "BACKBONE", "VAL_EVERY", "RESUME", "OVERWRITE", "SEED"},
    "hrmnet:evaluate": {"DATA", "SPLIT", "MODEL", "OUTPUT", "DEVICE", "PRECISION", "BATCH_SIZE"},
    "hrmnet:preparedataset": {"BEFORE", "AFTER", "LABELS", "PAIRS", "OUTPUT", "TILE_SIZE", "STRIDE", "SPLIT",
                              "SEED", "KEEP_EMPTY"},
}
ADVANCED = {"BANDS_BEFORE", "BANDS_AFTER", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "DEVICE", "PRECISION"}


def _detect_params(scene, model_path, threshold, out_dir, **extra) -> dict:
    before, after, _ = scene
    params = {"BEFORE": str(before), "AFTER": str(after), "MODEL": str(model_path), "THRESHOLD": threshold,
              "TILE_SIZE": 128, "OVERLAP": 32, "DEVICE": 1, "OUTPUT_POLYGONS": str(out_dir / "changes.shp")}
    params.update(extra)
    return params


class FlipOnProgress:
    """Feedback-side cancel: isCanceled() turns True after the first progress event."""

    def __init__(self, feedback) -> None:
        self.feedback = feedback
        feedback.progressChanged.connect(self._progress)

    def _progress(self, value: float) -> None:
        self.feedback.cancel()


def test_provider_and_algorithms_registered(qgis_app):
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("hrmnet")
    assert provider is not None and provider.name() == "HRMNet change detection"
    assert sorted(a.id() for a in provider.algorithms()) == sorted(EXPECTED)
    for alg_id, names in EXPECTED.items():
        alg = registry.algorithmById(alg_id)
        assert {p.name() for p in alg.parameterDefinitions()} == names, alg_id
        assert alg.shortHelpString()
    detect = registry.algorithmById("hrmnet:detectchanges")
    for name in ADVANCED:
        assert detect.parameterDefinition(name).flags() & QgsProcessingParameterDefinition.FlagAdvanced, name
    assert detect.parameterDefinition("OUTPUT_PROBABILITY").flags() & QgsProcessingParameterDefinition.FlagOptional
    assert not detect.parameterDefinition("OUTPUT_PROBABILITY").createByDefault()
    assert {o.name() for o in registry.algorithmById("hrmnet:evaluate").outputDefinitions()} >= {
        "KAPPA", "IOU", "F1", "PRECISION", "RECALL", "OA"}
    # Only what the engine writes is offered.
    assert provider.supportedOutputVectorLayerExtensions() == ["gpkg", "shp", "fgb", "geojson"]


def test_detect_end_to_end_writes_polygons_in_the_before_crs(qgis_app, scenes, model_path, threshold, tmp_path):
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsRasterLayer, QgsVectorLayer

    params = _detect_params(scenes[0], model_path, threshold, tmp_path,
                            OUTPUT_PROBABILITY=str(tmp_path / "probability.tif"),
                            OUTPUT_MASK=str(tmp_path / "mask.tif"))
    feedback = QgsProcessingFeedback()
    progress: list[float] = []
    feedback.progressChanged.connect(progress.append)
    result = processing.run("hrmnet:detectchanges", params, context=QgsProcessingContext(), feedback=feedback)

    assert result["OUTPUT_POLYGONS"] == str(tmp_path / "changes.shp")
    layer = QgsVectorLayer(result["OUTPUT_POLYGONS"], "changes", "ogr")
    assert layer.isValid() and layer.featureCount() > 0
    before = QgsRasterLayer(str(scenes[0][0]), "before")
    assert layer.crs().authid() == before.crs().authid() == "EPSG:32633"
    assert before.extent().contains(layer.extent())
    assert {"id", "area_m2", "mean_prob", "max_prob"} <= set(layer.fields().names())
    prob = QgsRasterLayer(result["OUTPUT_PROBABILITY"], "p")
    assert prob.isValid() and prob.crs().authid() == "EPSG:32633" and prob.width() == before.width()
    assert QgsRasterLayer(result["OUTPUT_MASK"], "m").isValid()
    assert progress and max(progress) == pytest.approx(100.0)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["changes.shp", "changes.shx", "changes.dbf", "changes.prj", "changes.cpg", "probability.tif", "mask.tif"]
        + [n for n in os.listdir(tmp_path) if n.endswith((".ovr", ".aux.xml"))]
    ), "only the outputs (no temporary files) are left"


def test_outputs_load_with_the_shipped_styles(qgis_app, scenes, model_path, threshold, tmp_path):
    from qgis.core import (QgsProcessingContext, QgsProcessingFeedback, QgsProject, QgsRasterLayer,
                           QgsSingleBandPseudoColorRenderer, QgsVectorLayer)

    from processing.core.Processing import Processing
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import QgsApplication, QgsProcessingOutputLayerDefinition

    project = QgsProject.instance()
    project.clear()
    alg = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchanges")
    params = _detect_params(scenes[0], model_path, threshold, tmp_path)
    for key, name in (("OUTPUT_POLYGONS", "changes.gpkg"), ("OUTPUT_PROBABILITY", "probability.tif")):
        definition = QgsProcessingOutputLayerDefinition(str(tmp_path / name), project)
        params[key] = definition
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = QgsProcessingFeedback()
    results, ok = alg.run(params, context, feedback)
    assert ok, results
    assert handleAlgorithmResults(alg, context, feedback, False, params)
    layers = {type(l).__name__: l for l in project.mapLayers().values()}
    assert isinstance(layers["QgsRasterLayer"].renderer(), QgsSingleBandPseudoColorRenderer)
    assert layers["QgsRasterLayer"].renderer().classificationMax() == 254
    symbol = layers["QgsVectorLayer"].renderer().symbol()
    assert symbol.symbolLayer(0).brushStyle() == 0  # Qt.NoBrush: outlines only
    project.clear()
    del Processing, QgsRasterLayer, QgsVectorLayer


def test_engine_error_becomes_a_processing_error_with_its_message(qgis_app, scenes, far_raster, model_path,
                                                                 threshold, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    params = _detect_params(scenes[0], model_path, threshold, tmp_path, AFTER=str(far_raster))
    with pytest.raises(QgsProcessingException) as exc:
        processing.run("hrmnet:detectchanges", params)
    message = str(exc.value)
    assert "overlap" in message.lower() and "\n" not in message.strip()
    assert "Traceback" not in message
    assert os.listdir(tmp_path) == []


def test_missing_model_is_a_clear_error(qgis_app, scenes, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    params = _detect_params(scenes[0], tmp_path / "missing.safetensors", 0.5, tmp_path)
    with pytest.raises(QgsProcessingException) as exc:
        processing.run("hrmnet:detectchanges", params)
    assert "missing.safetensors" in str(exc.value)


def test_cancel_in_the_middle_leaves_no_output(qgis_app, scenes, model_path, threshold, tmp_path):
    from qgis.core import (QgsApplication, QgsProcessingContext, QgsProcessingException,
                           QgsProcessingFeedback)

    alg = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchanges")
    params = _detect_params(scenes[0], model_path, threshold, tmp_path, TILE_SIZE=64, OVERLAP=16, BATCH_SIZE=1,
                            OUTPUT_PROBABILITY=str(tmp_path / "probability.tif"))
    feedback = QgsProcessingFeedback()
    canceller = FlipOnProgress(feedback)
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        alg.processAlgorithm(params, QgsProcessingContext(), feedback)
    assert canceller.feedback.isCanceled()
    assert os.listdir(tmp_path) == []


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
        params = _detect_params(scene, model_path, threshold, tmp_path, OUTPUT_POLYGONS=name)
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
