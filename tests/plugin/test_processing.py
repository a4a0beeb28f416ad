"""The provider in a real QGIS 3.22: registration, engine errors, cancel."""
from __future__ import annotations

import os

import pytest

from .helpers import detect_params

pytestmark = pytest.mark.qgis

EXPECTED = {
    "hrmnet:detectchanges": {"BEFORE", "AFTER", "MODEL", "THRESHOLD", "MIN_AREA", "SIMPLIFY", "EXTENT",
                             "BANDS_BEFORE", "BANDS_AFTER", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "DEVICE",
                             "PRECISION", "OUTPUT_POLYGONS", "OUTPUT_PROBABILITY", "OUTPUT_MASK", "OUTPUT_REVIEW",
                             "OUTPUT_REVIEW_AREAS", "REVIEW_THRESHOLD"},
    "hrmnet:detectchangessheets": {"SHEETS", "SHEETS_FILE", "ID_FIELD", "BEFORE", "AFTER", "MODEL", "THRESHOLD",
                                   "MIN_AREA", "SIMPLIFY", "SKIP_MISSING", "WORKERS", "RUN_FOLDER", "SCHEDULER",
                                   "RESTART", "BANDS_BEFORE", "BANDS_AFTER", "TILE_SIZE", "OVERLAP", "BATCH_SIZE",
                                   "DEVICE", "PRECISION", "OUTPUT_POLYGONS", "OUTPUT_REVIEW", "OUTPUT_REVIEW_AREAS"},
    "hrmnet:train": {"DATA", "OUTPUT", "STEPS", "BATCH_SIZE", "LR", "CROP", "WORKERS", "DEVICE", "PRECISION",
                     "INIT", "BACKBONE", "IMAGENET", "VAL_EVERY", "RESUME", "OVERWRITE", "SEED"},
    "hrmnet:evaluate": {"DATA", "SPLIT", "MODEL", "OUTPUT", "DEVICE", "PRECISION", "BATCH_SIZE", "OVERWRITE"},
    "hrmnet:preparedataset": {"BEFORE", "AFTER", "LABELS", "PAIRS", "OUTPUT", "TILE_SIZE", "STRIDE", "SPLIT",
                              "SEED", "KEEP_EMPTY", "OVERWRITE", "FOOTPRINTS_BEFORE", "FOOTPRINTS_AFTER",
                              "FOOTPRINT_TOLERANCE", "LABELLED_AREA", "LABELLED_EXTENT", "VAL_SHEETS", "TEST_SHEETS",
                              "GSD"},
}
ADVANCED = {"BANDS_BEFORE", "BANDS_AFTER", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "DEVICE", "PRECISION"}


class FlipOnProgress:
    """Feedback-side cancel: isCanceled() turns True after the first progress event."""

    def __init__(self, feedback) -> None:
        self.feedback = feedback
        self.at: list[float] = []
        feedback.progressChanged.connect(self._progress)

    def _progress(self, value: float) -> None:
        self.at.append(value)
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
    sheets = registry.algorithmById("hrmnet:detectchangessheets")
    for name in ADVANCED | {"SCHEDULER", "RESTART"}:
        assert sheets.parameterDefinition(name).flags() & QgsProcessingParameterDefinition.FlagAdvanced, name
    assert {o.name() for o in sheets.outputDefinitions()} >= {"OUTPUT_POLYGONS", "OUTPUT_STATUS", "RUN_FOLDER"}
    assert detect.parameterDefinition("OUTPUT_PROBABILITY").flags() & QgsProcessingParameterDefinition.FlagOptional
    assert not detect.parameterDefinition("OUTPUT_PROBABILITY").createByDefault()
    assert {o.name() for o in registry.algorithmById("hrmnet:evaluate").outputDefinitions()} >= {
        "KAPPA", "IOU", "F1", "PRECISION", "RECALL", "OA"}
    # Only what the engine writes is offered.
    assert provider.supportedOutputVectorLayerExtensions() == ["gpkg", "shp", "fgb", "geojson"]


def test_engine_error_becomes_a_processing_error_with_its_message(qgis_app, scenes, far_raster, model_path,
                                                                 threshold, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    params = detect_params(scenes[0], model_path, threshold, tmp_path, AFTER=str(far_raster))
    with pytest.raises(QgsProcessingException) as exc:
        processing.run("hrmnet:detectchanges", params)
    message = str(exc.value)
    assert "overlap" in message.lower() and "\n" not in message.strip()
    assert "Traceback" not in message
    assert os.listdir(tmp_path) == []


def test_the_engine_error_is_not_repeated_in_the_log(qgis_app, scenes, far_raster, model_path, threshold,
                                                     tmp_path):
    """The error event and the CLI's ``error:`` line on stderr are one message: QGIS shows it
    from the exception; the log does not repeat it."""
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    class Log(QgsProcessingFeedback):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def reportError(self, error, fatalError=False):  # noqa: N802, N803
            self.lines.append(error)

        def pushConsoleInfo(self, info):  # noqa: N802
            self.lines.append(info)

    log = Log()
    params = detect_params(scenes[0], model_path, threshold, tmp_path, AFTER=str(far_raster))
    with pytest.raises(QgsProcessingException) as exc:
        processing.run("hrmnet:detectchanges", params, feedback=log)
    assert not [line for line in log.lines if str(exc.value).strip() in line]


def test_missing_model_is_a_clear_error(qgis_app, scenes, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    params = detect_params(scenes[0], tmp_path / "missing.safetensors", 0.5, tmp_path)
    with pytest.raises(QgsProcessingException) as exc:
        processing.run("hrmnet:detectchanges", params)
    assert "missing.safetensors" in str(exc.value)


def test_cancel_in_the_middle_leaves_no_output(qgis_app, scenes, model_path, threshold, tmp_path):
    from qgis.core import (QgsApplication, QgsProcessingContext, QgsProcessingException,
                           QgsProcessingFeedback)

    alg = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchanges")
    params = detect_params(scenes[0], model_path, threshold, tmp_path, TILE_SIZE=64, OVERLAP=16, BATCH_SIZE=1,
                            OUTPUT_PROBABILITY=str(tmp_path / "probability.tif"))
    feedback = QgsProcessingFeedback()
    canceller = FlipOnProgress(feedback)
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        alg.processAlgorithm(params, QgsProcessingContext(), feedback)
    assert canceller.feedback.isCanceled()
    assert 0 < canceller.at[0] < 100, "cancelled in the middle of the tiles"
    assert os.listdir(tmp_path) == []
