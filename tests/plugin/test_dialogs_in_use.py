"""The detection dialog as a person meets it: help in on-screen words, the model's defaults
shown when a model is chosen, Before/After preselected, plain words, one icon per action."""
from __future__ import annotations

import re

import pytest

from .conftest import DEMO_MODEL
from .test_plugin_gui import FakeIface
from .test_task_loading import _to_load, run_as_the_dialog_does, stand_in_engine  # noqa: F401 (a fixture)

pytestmark = pytest.mark.qgis


def _detect():
    from qgis.core import QgsApplication

    return QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchanges")


def _dialog(alg):
    from processing.gui.AlgorithmDialog import AlgorithmDialog

    return AlgorithmDialog(alg)


def test_help_uses_the_labels_on_screen_and_says_what_is_required_and_what_the_model_expects(qgis_app):
    alg = _detect()
    text = alg.shortHelpString()
    for param in alg.parameterDefinitions():
        assert not re.search(rf"\b{param.name()}\b", text), f"parameter id {param.name()} in the help"
    for label in ("Before (earlier date)", "After (later date)", "Model checkpoint", "Change polygons",
                  "Change probability threshold", "Tile size", "Tile overlap", "Minimum polygon area"):
        assert label in text, label
    assert "<b>Required:</b> Before, After, Model checkpoint, and at least one output" in text
    assert "What the model expects:" in text and "more than 2×" in text


@pytest.mark.parametrize("alg_id", ["hrmnet:train", "hrmnet:evaluate", "hrmnet:preparedataset"])
def test_other_algorithms_help_uses_labels_too(qgis_app, alg_id):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
    text = alg.shortHelpString()
    for param in alg.parameterDefinitions():
        assert not re.search(rf"\b{param.name()}\b", text), f"parameter id {param.name()} in the help"
    assert "<b>Required:</b>" in text


def test_demo_model_is_the_default_and_labelled_as_such(qgis_app):
    int8 = DEMO_MODEL.with_name("hrmnet_demo_int8.onnx")  # what the plugin ZIP ships, for either engine
    if not int8.is_file():
        pytest.skip("no demo model in this checkout")
    alg = _detect()
    model = alg.parameterDefinition("MODEL")
    assert model.defaultValue() == str(int8)
    assert "DEMO model" in model.description() and "synthetic scenes only" in model.description()
    assert "demonstration model" in alg.shortHelpString() and "trained at 0.5 m/pixel" in alg.shortHelpString()


def test_advanced_options_in_plain_words(qgis_app):
    alg = _detect()
    assert alg.parameterDefinition("PRECISION").options() == ["automatic", "full (fp32)", "fast (bf16)",
                                                              "half (fp16, GPU only)"]
    assert alg.parameterDefinition("DEVICE").options()[1:] == ["CPU", "GPU (CUDA)"]


def test_choosing_a_model_shows_its_threshold_tile_size_and_overlap_in_the_empty_fields(qgis_app, model_path,
                                                                                        tmp_path):
    from qgis.core import QgsProcessingContext
    from qgis.PyQt.QtWidgets import QWidget

    from hrmnet_qgis.model_info import read_model_info

    info = read_model_info(str(model_path))
    dialog = _dialog(_detect())
    wrappers = dialog.mainWidget().wrappers
    wrappers["MODEL"].setParameterValue(str(model_path), QgsProcessingContext())
    boxes = {name: (w.widget if isinstance(getattr(w, "widget", None), QWidget) else w.wrappedWidget())
             for name, w in wrappers.items() if name in ("THRESHOLD", "TILE_SIZE", "OVERLAP")}
    shown = {name: box.specialValueText() for name, box in boxes.items()}
    assert shown == {"THRESHOLD": f"model: {info['threshold']:g}", "TILE_SIZE": f"model: {info['tile_size']}",
                     "OVERLAP": f"model: {info['overlap']}"}
    assert all(box.text() == shown[name] for name, box in boxes.items()), "the empty fields show them"
    # Left empty, they stay empty: the engine reads them from the model.
    assert [wrappers[name].parameterValue() for name in boxes] == [None, None, None]
    # A model without metadata (an authors' .pth): the fields just say the model's value applies.
    wrappers["MODEL"].setParameterValue(str(tmp_path / "authors.pth"), QgsProcessingContext())
    assert boxes["TILE_SIZE"].specialValueText() == "model's value"
    # A threshold typed in is passed on.
    wrappers["THRESHOLD"].setParameterValue(0.3, QgsProcessingContext())
    assert wrappers["THRESHOLD"].parameterValue() == pytest.approx(0.3)


@pytest.mark.parametrize("names, expected", [
    (["after_2021", "before_2015"], (1, 0)),             # dates decide
    (["img_2015-06-01", "img_2021-06-01"], (0, 1)),       # even when the earlier one was added last
    (["scene_before", "scene_after"], (0, 1)),            # words decide
    (["ortho_b", "ortho_a"], (1, 0)),                     # else the more recently added is After
])
def test_before_after_from_layer_names(names, expected):
    from hrmnet_qgis.plugin import before_after

    assert before_after(names) == expected


def test_toolbar_dialog_preselects_the_two_most_recent_rasters(qgis_app, scenes):
    from qgis.core import QgsProject, QgsRasterLayer

    from hrmnet_qgis.plugin import recent_raster_pair

    project = QgsProject.instance()
    project.clear()
    assert recent_raster_pair(project) == {}
    layers = [QgsRasterLayer(str(path), path.stem) for path in (scenes[0][2], scenes[1][0], scenes[1][1])]
    for layer in layers:  # labels first, then before, then after: the last added is on top
        project.addMapLayer(layer)
    assert recent_raster_pair(project) == {"BEFORE": layers[1].id(), "AFTER": layers[2].id()}
    project.clear()


def _preselected(project) -> tuple:
    """What the Detect dialog (opened from the toolbox) and the toolbar action propose as Before/After."""
    from hrmnet_qgis.plugin import recent_raster_pair

    wrappers = _dialog(_detect()).mainWidget().wrappers
    shown = (wrappers["BEFORE"].parameterValue(), wrappers["AFTER"].parameterValue())
    toolbar = recent_raster_pair(project)
    return shown, ((toolbar["BEFORE"], toolbar["AFTER"]) if toolbar else (None, None))


def test_our_outputs_are_never_preselected_as_before_or_after(qgis_app, stand_in_engine, scenes, tmp_path):
    """After a run, its rasters lie on top of the Layers panel: the dialog still proposes the two
    input rasters; with no overlapping pair of the same band count it proposes nothing."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import QgsProcessing, QgsProject, QgsRasterLayer

    project = QgsProject.instance()
    project.clear()
    before, after = (QgsRasterLayer(str(p), p.stem) for p in scenes[1][:2])
    project.addMapLayers([before, after])
    params = {"BEFORE": before.id(), "AFTER": after.id(), "MODEL": str(tmp_path / "m.safetensors"),
              "OUTPUT_POLYGONS": _to_load(tmp_path / "changes.gpkg", project),
              "OUTPUT_PROBABILITY": _to_load(QgsProcessing.TEMPORARY_OUTPUT, project),
              "OUTPUT_MASK": _to_load(QgsProcessing.TEMPORARY_OUTPUT, project)}
    ok, _results, context, feedback, alg = run_as_the_dialog_does("hrmnet:detectchanges", params, project)
    assert ok and handleAlgorithmResults(alg, context, feedback, False, params), feedback.textLog()
    on_top = [node.layer() for node in project.layerTreeRoot().findLayers()][:3]
    assert [layer.name().split(": ")[-1] for layer in on_top] == ["changes", "change mask", "change probability"]
    # A single-band raster added on top (a labels file) does not pair with a 3-band one.
    labels = QgsRasterLayer(str(scenes[1][2]), scenes[1][2].stem)
    project.addMapLayer(labels)
    assert _preselected(project) == ((before.id(), after.id()), (before.id(), after.id()))

    # Only rasters that do not overlap (another scene's before) besides ours: nothing proposed.
    project.removeMapLayers([before.id(), labels.id()])
    other = QgsRasterLayer(str(scenes[0][0]), scenes[0][0].stem)
    project.addMapLayer(other)
    assert _preselected(project) == ((None, None), (None, None))
    project.clear()


def test_each_action_has_its_own_icon(qgis_app):
    from qgis.core import QgsApplication

    import hrmnet_qgis

    registry = QgsApplication.processingRegistry()
    iface = FakeIface()
    plugin = hrmnet_qgis.classFactory(iface)
    plugin.iface = iface
    plugin.provider = registry.providerById("hrmnet")  # the session's (initGui does not add a second)
    plugin.initGui()
    try:
        icons = [a.icon() for a in iface.menus["&HRMNet change detection"]]
        images = [icon.pixmap(32, 32).toImage() for icon in icons]
        assert all(not icon.isNull() for icon in icons)
        assert len({bytes(img.constBits().asarray(img.byteCount())) for img in images}) == 4
    finally:
        plugin.provider = None  # keep the session's provider registered
        plugin.unload()


def test_the_batch_dialog_takes_an_empty_or_a_typed_threshold(qgis_app):
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from qgis.core import QgsProcessingContext

    panel = BatchAlgorithmDialog(_detect()).mainWidget()
    wrapper = panel.wrappers[0][panel.parameter_to_column["THRESHOLD"]]
    assert wrapper.parameterValue() is None
    wrapper.setParameterValue(0.4, QgsProcessingContext())
    assert wrapper.parameterValue() == pytest.approx(0.4)


def test_the_modeler_dialog_builds_with_the_threshold_wrapper(qgis_app):
    from processing.modeler.ModelerParametersDialog import ModelerParametersDialog
    from qgis.core import QgsProcessingModelAlgorithm

    dialog = ModelerParametersDialog(_detect(), QgsProcessingModelAlgorithm())
    child = dialog.createAlgorithm()
    assert child is not None and "THRESHOLD" in child.parameterSources()
