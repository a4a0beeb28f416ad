"""Runs inside the QGIS desktop (``qgis --code``), started by ``tools/screenshots.py``.

Clicks through the plugin as a person would and grabs the windows (``QWidget.grab``):
the detection dialog on the bundled demo pair (before and after the run, the run going
through the dialog's own background task), the result on the map, the batch dialog after
a run over two synthetic scenes, the Set up engine dialog and the training dialog
(replaying the demo model's training record into its curves). Any failure is written to
``error.txt`` in the work folder; QGIS then exits (code 1), as it does (code 0) when done.
"""
import csv
import json
import os
import shutil
import traceback
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtCore import QEventLoop, QTimer
from qgis.utils import iface

CONFIG = json.loads(os.environ["HRMNET_SHOTS"])
OUT = Path(CONFIG["out"])
WORK = Path(CONFIG["work"])
ROOT = Path(CONFIG["root"])
DEMO = ROOT / "engine" / "demo"


def wait(ms: int) -> None:
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def wait_until(condition, timeout_s: float, what: str) -> None:
    for _ in range(int(timeout_s * 5)):
        if condition():
            return
        wait(200)
    raise TimeoutError(f"timed out waiting for {what}")


def shoot(widget, name: str) -> None:
    widget.raise_()
    widget.activateWindow()
    wait(800)
    if not widget.grab().save(str(OUT / name)):
        raise RuntimeError(f"could not write {OUT / name}")


def start_plugin():
    import qgis.utils

    if not qgis.utils.loadPlugin("hrmnet_qgis") or not qgis.utils.startPlugin("hrmnet_qgis"):
        raise RuntimeError("the hrmnet_qgis plugin did not start")
    return qgis.utils.plugins["hrmnet_qgis"]


def detect_in_the_dialog() -> None:
    """The detection dialog on the demo pair, run through its own background task."""
    import processing
    from processing.core.ProcessingConfig import ProcessingConfig

    from hrmnet_qgis.plugin import recent_raster_pair

    project = QgsProject.instance()
    for name in ("before", "after"):
        # A copy: QGIS writes its statistics (.aux.xml) beside the rasters it shows.
        copy = WORK / f"{name}.tif"
        shutil.copyfile(DEMO / "data" / f"{name}.tif", copy)
        layer = QgsRasterLayer(str(copy), f"demo_{name}")
        if not layer.isValid():
            raise RuntimeError(f"cannot load {copy}")
        project.addMapLayer(layer)
    ProcessingConfig.setSettingValue(ProcessingConfig.KEEP_DIALOG_OPEN, True)  # to show the log
    e = project.mapLayersByName("demo_after")[0].extent()
    area = (e.xMinimum() + e.width() * 0.2, e.xMinimum() + e.width() * 0.65,
            e.yMinimum() + e.height() * 0.35, e.yMinimum() + e.height() * 0.8)
    # A part of the scene (about a fifth of the tiles): the picture of the map shows it.
    params = dict(recent_raster_pair(project), OUTPUT_POLYGONS="TEMPORARY_OUTPUT",
                  OUTPUT_PROBABILITY="TEMPORARY_OUTPUT", MIN_AREA=20.0,
                  EXTENT="{:.1f},{:.1f},{:.1f},{:.1f} [EPSG:32633]".format(*area))
    dialog = processing.createAlgorithmDialog("hrmnet:detectchanges", params)
    dialog.resize(1150, 900)
    dialog.show()
    shoot(dialog, "detect-dialog.png")

    finished = []
    dialog.algorithmFinished.connect(lambda ok, results: finished.append(ok))
    dialog.runAlgorithm()
    wait_until(lambda: finished, 400, "the detection to finish")
    if not finished[0]:
        dialog.grab().save(str(WORK / "failed-dialog.png"))
        raise RuntimeError(f"the detection failed (see {WORK / 'failed-dialog.png'})")
    shoot(dialog, "detect-log.png")
    dialog.close()


def result_on_the_map() -> None:
    canvas = iface.mapCanvas()
    after = QgsProject.instance().mapLayersByName("demo_after")[0]
    e = after.extent()
    # A quarter of the scene: polygons are visible at this scale.
    canvas.setExtent(QgsRectangle(e.xMinimum() + e.width() * 0.25, e.yMinimum() + e.height() * 0.40,
                                  e.xMinimum() + e.width() * 0.60, e.yMinimum() + e.height() * 0.75))
    canvas.refreshAllLayers()
    wait(500)
    canvas.waitWhileRendering()
    wait(1500)
    shoot(iface.mainWindow(), "result-on-map.png")


def batch_dialog() -> None:
    """The batch dialog over two synthetic scenes, after the run."""
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from qgis.core import QgsProcessingContext

    alg = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchanges")
    dialog = BatchAlgorithmDialog(alg, iface.mainWindow())
    panel = dialog.mainWidget()
    context = QgsProcessingContext()
    with open(WORK / "scenes" / "scenes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    while panel.batchRowCount() < len(rows):
        panel.addRow()
    for k, row in enumerate(rows):
        for name, value in (("BEFORE", row["before"]), ("AFTER", row["after"]),
                            ("MODEL", str(DEMO / "hrmnet_demo.safetensors"))):
            value = str(WORK / "scenes" / value) if name != "MODEL" else value
            panel.wrappers[k][panel.parameter_to_column[name]].setParameterValue(value, context)
        out = WORK / "batch" / f"changes_{Path(row['after']).stem}.gpkg"
        out.parent.mkdir(exist_ok=True)
        panel.tblParameters.cellWidget(k + 1, panel.parameter_to_column["OUTPUT_POLYGONS"]).setValue(str(out))
    dialog.resize(1400, 800)
    dialog.show()
    wait(500)
    dialog.runAlgorithm()  # runs the rows in turn, then shows the log
    wait(500)
    shoot(dialog, "batch-dialog.png")
    dialog.close()


def setup_and_training_dialogs(plugin) -> None:
    plugin.open_setup()
    setup = plugin._dialogs["setup"]
    wait(1500)
    shoot(setup, "setup-engine-dialog.png")
    setup.close()

    plugin.open_training()
    training = plugin._dialogs["training"]
    training.data.setFilePath("/tmp/demo-data")  # as in the record (README: The demo model)
    training.out.setFilePath("/tmp/demo-run")
    training.steps.setValue(2400)
    training.batch_size.setValue(4)
    # The demo model's own training record, replayed into the live curves.
    with open(DEMO / "training" / "metrics.csv", newline="") as f:
        records = list(csv.DictReader(f))
    total = int(records[-1]["step"])
    for r in records:
        step = int(r["step"])
        training._on_event({"event": "progress", "done": step, "total": total, "stage": "train",
                            "loss": float(r["loss"])})
        if r.get("val_f1"):
            training._on_event({"event": "log", "level": "info", "step": step, "val": {"f1": float(r["val_f1"])},
                                "message": f"step {step}: validation F1 {float(r['val_f1']):.3f}"})
    training.status.setText("Replay of the demo model's training record (engine/demo/training/metrics.csv).")
    training.resize(760, 900)
    shoot(training, "training-dialog.png")
    training.close()


def models_dialog(plugin) -> None:
    plugin.open_models()
    models = plugin._dialogs["models"]
    wait_until(lambda: models.table.rowCount() > 0, 120, "the model list")
    models.table.selectRow(0)
    wait(500)
    shoot(models, "models-dialog.png")
    models.close()


def main() -> None:
    code = 0
    try:
        iface.mainWindow().showMaximized()
        wait(1000)
        plugin = start_plugin()
        detect_in_the_dialog()
        result_on_the_map()
        batch_dialog()
        setup_and_training_dialogs(plugin)
        models_dialog(plugin)
    except Exception:  # noqa: BLE001 - reported to the driver, which prints it
        (WORK / "error.txt").write_text(traceback.format_exc())
        code = 1
    QgsProject.instance().setDirty(False)
    os._exit(code)  # no "save the project?" question


QTimer.singleShot(2000, main)
