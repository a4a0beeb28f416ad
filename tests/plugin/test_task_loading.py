"""Results reach the map from the algorithm dialog: the algorithms run as the dialog runs them.

The Processing dialog runs an algorithm in a ``QgsProcessingAlgRunnerTask`` on the task
manager: ``prepareAlgorithm`` in the main thread, ``processAlgorithm`` in a worker thread
with a context of its own, whose list of layers to load replaces the main context's when
the task ends. These tests take that path (with a stand-in engine, so they are fast), then
load the results as the dialog does (``handleAlgorithmResults``).
"""
from __future__ import annotations

import functools
import json
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis

#: A stand-in for ``python -m engine``: writes small but real outputs (GDAL/OGR of the venv).
FAKE_ENGINE = '''
import json, sys
from pathlib import Path
from osgeo import gdal, ogr, osr

command, args = sys.argv[1], sys.argv[2:]

def opt(name):
    return args[args.index(name) + 1] if name in args else None

def emit(**event):
    print(json.dumps(event), flush=True)

srs = osr.SpatialReference()
srs.ImportFromEPSG(32633)

def raster(path):
    ds = gdal.GetDriverByName("GTiff").Create(path, 8, 8, 1, gdal.GDT_Byte)
    ds.SetGeoTransform([300000, 1, 0, 5500008, 0, -1])
    ds.SetProjection(srs.ExportToWkt())
    ds.GetRasterBand(1).Fill(100)
    ds = None

def vector(path):
    driver = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".fgb": "FlatGeobuf", ".geojson": "GeoJSON"}
    ds = ogr.GetDriverByName(driver[Path(path).suffix]).CreateDataSource(path)
    layer = ds.CreateLayer(Path(path).stem, srs, ogr.wkbPolygon)
    for name, kind in (("id", ogr.OFTInteger64), ("area_m2", ogr.OFTReal), ("mean_prob", ogr.OFTReal),
                       ("max_prob", ogr.OFTReal)):
        layer.CreateField(ogr.FieldDefn(name, kind))
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(ogr.CreateGeometryFromWkt(
        "POLYGON((300001 5500007,300004 5500007,300004 5500004,300001 5500004,300001 5500007))"))
    for name, value in (("id", 1), ("area_m2", 9.0), ("mean_prob", 0.612345678), ("max_prob", 0.9)):
        feature.SetField(name, value)
    layer.CreateFeature(feature)
    ds = None

emit(event="start", device="cpu", precision="fp32")
for k in range(1, 5):
    emit(event="progress", done=k, total=4, stage=command)
if command == "detect":
    for option, write in (("--out-vector", vector), ("--out-probability", raster), ("--out-mask", raster)):
        if opt(option):
            write(opt(option))
    emit(event="done", outputs={}, stats={"polygons": 1})
elif command == "train":
    out = Path(opt("--out"))
    out.mkdir(parents=True, exist_ok=True)
    for name in ("best.safetensors", "last.safetensors", "metrics.csv"):
        (out / name).write_text("x")
    emit(event="done", outputs={"best": str(out / "best.safetensors")}, stats={"best_val": {"f1": 0.5}})
elif command == "evaluate":
    if opt("--out"):
        Path(opt("--out")).mkdir(parents=True, exist_ok=True)
        (Path(opt("--out")) / "tile.png").write_bytes(b"png")
    metrics = dict(kappa=0.5, iou=0.4, f1=0.6, precision=0.7, recall=0.5, oa=0.9)
    emit(event="done", outputs={}, stats={"metrics": metrics})
elif command == "prepare":
    out = Path(opt("--out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataset.json").write_text(json.dumps({"crs": "EPSG:32633"}))
    emit(event="done", outputs={}, stats={})
'''


@pytest.fixture()
def stand_in_engine(tmp_path, monkeypatch):
    """The algorithms run the stand-in engine instead of the real one."""
    from hrmnet_qgis import runner
    from hrmnet_qgis.algorithms import base

    root = tmp_path / "fake-engine"
    (root / "engine").mkdir(parents=True)
    (root / "engine" / "__init__.py").write_text("")
    (root / "engine" / "__main__.py").write_text(textwrap.dedent(FAKE_ENGINE))
    monkeypatch.setattr(base, "run_engine", functools.partial(runner.run_engine, root=root))
    return root


def run_as_the_dialog_does(alg_id: str, params: dict, project):
    """QgsProcessingAlgRunnerTask on the task manager, waited for with an event loop.

    Returns ``(ok, results, context, feedback, alg)``; the context is the one the dialog
    keeps (the main thread's), after the task took the worker's results into it.
    """
    from qgis.core import (QgsApplication, QgsProcessingAlgRunnerTask, QgsProcessingContext,
                           QgsProcessingFeedback)
    from qgis.PyQt.QtCore import QEventLoop, QTimer

    alg = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = QgsProcessingFeedback()
    outcome: dict = {}
    loop = QEventLoop()

    def executed(ok: bool, results: dict) -> None:
        outcome.update(ok=ok, results=results)
        loop.quit()

    task = QgsProcessingAlgRunnerTask(alg, params, context, feedback)
    task.executed.connect(executed)
    QgsApplication.taskManager().addTask(task)
    QTimer.singleShot(120_000, loop.quit)
    loop.exec()
    assert outcome, "the task did not finish within 2 minutes"
    return outcome["ok"], outcome["results"], context, feedback, alg


def _to_load(path, project):
    from qgis.core import QgsProcessingOutputLayerDefinition

    return QgsProcessingOutputLayerDefinition(str(path), project)


def _loaded(project) -> dict:
    """Loaded layers by file name."""
    return {Path(layer.source().split("|")[0]).name: layer for layer in project.mapLayers().values()}


def test_detect_outputs_reach_the_map_from_the_dialogs_background_task(qgis_app, stand_in_engine, scenes,
                                                                       tmp_path):
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import (QgsPalettedRasterRenderer, QgsProcessing, QgsProject, QgsSingleBandPseudoColorRenderer)

    from hrmnet_qgis.algorithms.base import StyleLoader

    project = QgsProject.instance()
    project.clear()
    names = set()
    for scene in scenes[:2]:
        params = {"BEFORE": str(scene[0]), "AFTER": str(scene[1]), "MODEL": str(tmp_path / "m.safetensors"),
                  "OUTPUT_POLYGONS": _to_load(QgsProcessing.TEMPORARY_OUTPUT, project),
                  "OUTPUT_PROBABILITY": _to_load(QgsProcessing.TEMPORARY_OUTPUT, project),
                  "OUTPUT_MASK": _to_load(QgsProcessing.TEMPORARY_OUTPUT, project)}
        ok, results, context, feedback, alg = run_as_the_dialog_does("hrmnet:detectchanges", params, project)
        assert ok, feedback.textLog()

        # Queued to load, in the context the dialog loads from: each output, its style, a distinct name.
        queued = context.layersToLoadOnCompletion()
        assert set(queued) == {results[k] for k in ("OUTPUT_POLYGONS", "OUTPUT_PROBABILITY", "OUTPUT_MASK")}
        styles = {}
        for path, details in queued.items():
            assert isinstance(details.postProcessor(), StyleLoader)
            styles[Path(path).stem] = Path(details.postProcessor().qml).name
            assert scene[1].stem in details.name and details.name not in names
            names.add(details.name)
        assert styles == {"OUTPUT_POLYGONS": "polygons.qml", "OUTPUT_PROBABILITY": "probability.qml",
                          "OUTPUT_MASK": "mask.qml"}

        # What the dialog does when the task reports back: the layers are in the project, styled.
        assert handleAlgorithmResults(alg, context, feedback, False, params)
        assert "not correctly generated" not in feedback.textLog()

    layers = list(project.mapLayers().values())
    assert len(layers) == 6 and {layer.name() for layer in layers} == names
    for layer in layers:
        if "probability" in layer.name():
            assert isinstance(layer.renderer(), QgsSingleBandPseudoColorRenderer)
            legend = layer.renderer().shader().rasterShaderFunction().legendSettings()
            assert (legend.minimumLabel(), legend.maximumLabel()) == ("0 (no change)", "1 (change)")  # not 0-254
        elif "mask" in layer.name():
            assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
        else:
            fill = layer.renderer().symbol().symbolLayer(0)
            assert fill.brushStyle() == 0 and fill.strokeColor().red() == 255  # the shipped red outlines
            assert_attribute_table_reads_well(layer)
    # Polygons above the rasters that would hide them, for each run.
    order = [node.layer().name() for node in project.layerTreeRoot().findLayers()]
    for after in (scenes[0][1].stem, scenes[1][1].stem):
        mine = [n for n in order if n.startswith(after)]
        assert [n.split(": ")[1] for n in mine] == ["change polygons", "change mask", "change probability"]
    project.clear()


def assert_attribute_table_reads_well(layer) -> None:
    """GeoPackage's fid hidden beside id; probabilities shown with 3 decimals, areas with 1."""
    from qgis.core import QgsApplication

    columns = {c.name: c.hidden for c in layer.attributeTableConfig().columns() if c.name}
    assert columns == {"fid": True, "id": False, "area_m2": False, "mean_prob": False, "max_prob": False}
    feature = next(layer.getFeatures())
    shown = {}
    for name in ("mean_prob", "area_m2"):
        index = layer.fields().indexOf(name)
        setup = layer.editorWidgetSetup(index)
        formatter = QgsApplication.fieldFormatterRegistry().fieldFormatter(setup.type())
        shown[name] = formatter.representValue(layer, index, setup.config(), None, feature[name])
    assert shown == {"mean_prob": "0.612", "area_m2": "9.0"}


def test_blank_optional_outputs_are_not_reported_as_missing(qgis_app, stand_in_engine, scenes, tmp_path):
    """The batch dialog passes a blank optional output as an empty layer definition."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback, QgsProject

    project = QgsProject.instance()
    project.clear()
    params = {"BEFORE": str(scenes[0][0]), "AFTER": str(scenes[0][1]), "MODEL": str(tmp_path / "m.safetensors"),
              "OUTPUT_POLYGONS": _to_load(tmp_path / "changes.gpkg", project),
              "OUTPUT_PROBABILITY": _to_load("", project), "OUTPUT_MASK": _to_load("", project)}
    alg = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchanges")
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = QgsProcessingFeedback()
    results, ok = alg.run(params, context, feedback)  # the batch dialog: same thread, one context per row
    assert ok, feedback.textLog()
    assert list(context.layersToLoadOnCompletion()) == [str(tmp_path / "changes.gpkg")]
    assert handleAlgorithmResults(alg, context, feedback, False, params)
    assert "not correctly generated" not in feedback.textLog()
    # A file the user chose: the layer is named after it (also under /tmp, whatever QGIS's setting).
    assert [layer.name() for layer in project.mapLayers().values()] == ["changes"]
    project.clear()


def test_file_outputs_are_named_after_their_file_and_temporary_ones_get_a_counter(qgis_app, stand_in_engine,
                                                                                  scenes, tmp_path):
    """Two runs on the same After (a batch, or Run twice): file outputs by file name; temporary
    outputs by the After raster, numbered when the name repeats; all marked as ours."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import QgsProcessing, QgsProject

    from hrmnet_qgis.raster_pair import is_output

    project = QgsProject.instance()
    project.clear()
    after = scenes[0][1].stem
    for k in (1, 2):
        params = {"BEFORE": str(scenes[0][0]), "AFTER": str(scenes[0][1]), "MODEL": str(tmp_path / "m.safetensors"),
                  "OUTPUT_POLYGONS": _to_load(tmp_path / f"rennes_{k}.gpkg", project),
                  "OUTPUT_PROBABILITY": _to_load(QgsProcessing.TEMPORARY_OUTPUT, project)}
        ok, results, context, feedback, alg = run_as_the_dialog_does("hrmnet:detectchanges", params, project)
        assert ok, feedback.textLog()
        assert handleAlgorithmResults(alg, context, feedback, False, params)
    layers = list(project.mapLayers().values())
    assert sorted(layer.name() for layer in layers) == sorted([
        "rennes_1", "rennes_2", f"{after}: change probability", f"{after}: change probability (2)"])
    assert all(is_output(layer) for layer in layers)
    project.clear()


@pytest.mark.parametrize("alg_id", ["hrmnet:train", "hrmnet:evaluate", "hrmnet:preparedataset"])
def test_train_evaluate_prepare_through_the_task_manager(qgis_app, stand_in_engine, scenes, tmp_path, alg_id):
    """Folders and numbers, no layers: the task succeeds, its outputs come back, nothing is
    queued that QGIS would then report as "not correctly generated"."""
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import QgsProject

    project = QgsProject.instance()
    project.clear()
    out = tmp_path / "out"
    params = {
        "hrmnet:train": {"DATA": str(tmp_path), "STEPS": 10, "BATCH_SIZE": 2, "LR": 1e-3, "OUTPUT": _to_load(out, project)},
        "hrmnet:evaluate": {"DATA": str(tmp_path), "MODEL": str(tmp_path / "m.safetensors"),
                            "OUTPUT": _to_load(out, project)},
        "hrmnet:preparedataset": {"BEFORE": str(scenes[0][0]), "AFTER": str(scenes[0][1]),
                                  "LABELS": str(scenes[0][2]), "TILE_SIZE": 64, "OUTPUT": _to_load(out, project)},
    }[alg_id]
    ok, results, context, feedback, alg = run_as_the_dialog_does(alg_id, params, project)
    assert ok, feedback.textLog()
    assert results["OUTPUT"] == str(out) and out.is_dir()
    expected = {"hrmnet:train": ("BEST_MODEL", str(out / "best.safetensors")), "hrmnet:evaluate": ("F1", 0.6),
                "hrmnet:preparedataset": ("DATASET_JSON", str(out / "dataset.json"))}[alg_id]
    assert results[expected[0]] == expected[1]
    assert context.layersToLoadOnCompletion() == {}
    assert handleAlgorithmResults(alg, context, feedback, False, params)
    assert "not correctly generated" not in feedback.textLog() and not project.mapLayers()
    if alg_id == "hrmnet:preparedataset":
        assert json.loads((out / "dataset.json").read_text())["crs"] == "EPSG:32633"
