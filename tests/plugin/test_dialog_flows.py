"""What a new analyst met in the dialogs (issue 20), on the path QGIS itself takes: the values
the dialog's own widgets give (NULLs included), ``QgsProcessingAlgRunnerTask``, real layers."""
from __future__ import annotations

import pytest

from .test_sheets import _cut_into_sheets, fake_engine  # noqa: F401 (a fixture)
from .test_task_loading import run_as_the_dialog_does

pytestmark = pytest.mark.qgis


def _sheets_dialog_values(project, index_layer, tmp_path, model, **typed) -> dict:
    """The sheets dialog's parameter values after the user chose the index layer, typed ``typed``
    (parameter -> text) and left every other field as it opened (THRESHOLD, ID_FIELD… empty)."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsApplication, QgsProcessingContext

    dialog = AlgorithmDialog(QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchangessheets"))
    wrappers = dialog.mainWidget().wrappers
    context = QgsProcessingContext()
    context.setProject(project)
    values = {"SHEETS": index_layer.id(), "MODEL": str(model), "DEVICE": 1,
              "RUN_FOLDER": str(tmp_path / "run"), "OUTPUT_POLYGONS": str(tmp_path / "changes.gpkg"), **typed}
    for name, value in values.items():
        wrappers[name].setParameterValue(value, context)
    return dialog.createProcessingParameters()


def _tile_index(scenes, tmp_path, project):
    """GDAL's Tile Index of the before sheets (field ``location`` only), in the project."""
    from qgis.core import QgsVectorLayer

    index = _cut_into_sheets(scenes[0], tmp_path / "ortho")
    layer = QgsVectorLayer(str(index), "index", "ogr")
    assert layer.isValid() and layer.fields().names()[-1] == "location"
    project.clear()
    project.addMapLayer(layer)
    return layer


def test_the_documented_tile_index_flow_from_the_sheets_dialog(qgis_app, fake_engine, scenes, tmp_path):
    """Tile Index output, Before image path ``{location}``, After ``/dir/{id}.tif``, Sheet id field
    left empty (a NULL QVariant in 3.22): the id comes from ``location``, as in qgis_process."""
    from qgis.core import QgsProject

    project = QgsProject.instance()
    layer = _tile_index(scenes, tmp_path, project)
    params = _sheets_dialog_values(project, layer, tmp_path, tmp_path / "m.safetensors", BEFORE="{location}",
                                   AFTER=f"{tmp_path / 'ortho' / 'after'}/{{id}}.tif")
    assert "ID_FIELD" in params and not params["ID_FIELD"]  # what the empty field gives (NULL)
    ok, results, _context, feedback, _alg = run_as_the_dialog_does("hrmnet:detectchangessheets", params, project)
    assert ok, feedback.textLog()
    args = fake_engine()
    assert "--id-field" not in args["argv"] and "--threshold" not in args["argv"]
    assert args["--before"] == "{location}"
    assert sorted(p.name for p in (tmp_path / "run" / "sheets").iterdir()) == ["r0c0", "r0c1", "r1c0", "r1c1"]
    project.clear()


@pytest.mark.slow
def test_an_engine_error_names_the_dialogs_labels_not_cli_options(qgis_app, scenes, model_path, tmp_path):
    """The real engine refuses a Tile Index without an After template: QGIS says which field to
    fill with its label; the CLI's own message (``--after``) is unchanged."""
    from qgis.core import QgsProject

    from .conftest import engine

    project = QgsProject.instance()
    layer = _tile_index(scenes, tmp_path, project)
    params = _sheets_dialog_values(project, layer, tmp_path, model_path, BEFORE="{location}")
    ok, _results, _context, feedback, _alg = run_as_the_dialog_does("hrmnet:detectchangessheets", params, project)
    assert not ok
    log = feedback.textLog()
    assert "no 'after' field: give \"After image path\" as a template" in log, log
    assert "--after" not in log.split("-m engine sheets")[-1].split("\n", 1)[-1]  # only in the command line shown
    cli = engine("sheets", "--sheets", layer.source(), "--run", str(tmp_path / "run2"), "--model", str(model_path),
                 "--before", "{location}", "--out-vector", str(tmp_path / "c2.gpkg"), "--progress", "none",
                 check=False)
    assert cli.returncode == 2 and "no 'after' field: give --after as a template" in cli.stderr
    project.clear()


@pytest.mark.slow
def test_a_single_band_raster_is_warned_about_in_the_log(qgis_app, scenes, model_path, threshold, tmp_path):
    """One band copied to red, green and blue: a warning naming the file in the Processing log."""
    import subprocess

    from qgis.core import QgsProcessingFeedback, QgsProject, QgsRasterLayer

    grey = tmp_path / "grey_before.tif"
    subprocess.run(["gdal_translate", "-q", "-b", "2", str(scenes[0][0]), str(grey)], check=True)
    project = QgsProject.instance()
    project.clear()
    before, after = QgsRasterLayer(str(grey), "grey"), QgsRasterLayer(str(scenes[0][1]), "after")
    project.addMapLayers([before, after])
    warnings = []

    class Feedback(QgsProcessingFeedback):
        def pushWarning(self, text):  # noqa: N802
            warnings.append(text)
            super().pushWarning(text)

    from qgis.core import QgsApplication, QgsProcessingAlgRunnerTask, QgsProcessingContext
    from qgis.PyQt.QtCore import QEventLoop, QTimer

    alg = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchanges")
    params = {"BEFORE": before.id(), "AFTER": after.id(), "MODEL": str(model_path), "THRESHOLD": threshold,
              "TILE_SIZE": 128, "OVERLAP": 32, "DEVICE": 1, "OUTPUT_POLYGONS": str(tmp_path / "changes.gpkg")}
    context, feedback, loop, outcome = QgsProcessingContext(), Feedback(), QEventLoop(), {}
    context.setProject(project)
    task = QgsProcessingAlgRunnerTask(alg, params, context, feedback)
    task.executed.connect(lambda ok, results: (outcome.update(ok=ok), loop.quit()))
    QgsApplication.taskManager().addTask(task)
    QTimer.singleShot(300_000, loop.quit)
    loop.exec_()
    assert outcome.get("ok"), feedback.textLog()
    said = [w for w in warnings if w.startswith(f"{grey}: a single band")]
    assert len(said) == 1 and "copied to red, green and blue" in said[0], warnings
    project.clear()


def test_sheets_threshold_shows_the_models_value_like_detect(qgis_app, model_path):
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsApplication, QgsProcessingContext

    from hrmnet_qgis.model_info import read_model_info

    info = read_model_info(str(model_path))
    for alg_id in ("hrmnet:detectchanges", "hrmnet:detectchangessheets"):
        dialog = AlgorithmDialog(QgsApplication.processingRegistry().createAlgorithmById(alg_id))
        wrappers = dialog.mainWidget().wrappers
        wrappers["MODEL"].setParameterValue(str(model_path), QgsProcessingContext())
        assert wrappers["THRESHOLD"].widget.text() == f"model: {info['threshold']:g}", alg_id
        assert wrappers["THRESHOLD"].parameterValue() is None


def test_set_up_engine_leaves_the_toolbox_group_expanded(qgis_app, tmp_path):
    from qgis.gui import QgsProcessingToolboxProxyModel, QgsProcessingToolboxTreeView

    from hrmnet_qgis import settings
    from hrmnet_qgis.dialogs import SetupEngineDialog
    from hrmnet_qgis.setup_engine import LIGHT

    view = QgsProcessingToolboxTreeView()
    view.setFilters(QgsProcessingToolboxProxyModel.FilterToolbox)

    def hrmnet_index():
        model = view.model()
        for row in range(model.rowCount()):
            index = model.index(row, 0)
            if "HRMNet" in str(model.data(index)):
                return index
        raise AssertionError("no HRMNet group in the toolbox")

    view.expand(hrmnet_index())
    assert view.isExpanded(hrmnet_index())
    dialog = SetupEngineDialog()
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    try:
        dialog.task_kind = LIGHT
        dialog._on_ended("ok", str(python))  # what the finished set-up task reports
        assert view.isExpanded(hrmnet_index())
    finally:
        settings.put(settings.ENGINE_KIND, "")
        settings.put(settings.ENGINE_PYTHON, "")
        dialog.close()


def test_no_engine_for_an_onnx_model_says_the_light_engine_will_do(qgis_app, scenes, tmp_path, monkeypatch):
    """No engine set up, QGIS's Python without torch or onnxruntime: for an .onnx model the message
    is about the light engine, not "(torch)"; with a light engine in QGIS's Python it runs."""
    from qgis.core import QgsApplication, QgsProcessingContext

    from hrmnet_qgis import engine_python as ep
    from hrmnet_qgis import settings

    monkeypatch.delenv("HRMNET_PYTHON", raising=False)
    settings.put(settings.ENGINE_PYTHON, "")
    bare = tmp_path / "python3"
    bare.write_text("#!/bin/sh\nexit 1\n")
    bare.chmod(0o755)
    monkeypatch.setattr(ep, "qgis_python_candidates", lambda: [str(bare)])
    alg = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchanges")
    params = {"BEFORE": str(scenes[0][0]), "AFTER": str(scenes[0][1]), "MODEL": str(tmp_path / "m.onnx"),
              "OUTPUT_POLYGONS": str(tmp_path / "changes.gpkg")}
    ok, message = alg.checkParameterValues(params, QgsProcessingContext())
    assert not ok and "m.onnx: no Python that runs the engine was found" in message
    assert "light engine" in message and "(torch) was found" not in message
    ok, message = alg.checkParameterValues({**params, "MODEL": str(tmp_path / "m.safetensors")},
                                           QgsProcessingContext())
    assert not ok and message == ep.HOW_TO  # a torch checkpoint: the full engine
    # QGIS's own Python with onnxruntime (a light engine): the .onnx model is accepted.
    light = tmp_path / "light" / "python3"
    light.parent.mkdir()
    light.write_text('#!/bin/sh\ncase "$*" in "-c import onnxruntime, rasterio") exit 0 ;; esac\nexit 1\n')
    light.chmod(0o755)
    monkeypatch.setattr(ep, "qgis_python_candidates", lambda: [str(light)])
    ok, message = alg.checkParameterValues(params, QgsProcessingContext())
    assert ok, message
