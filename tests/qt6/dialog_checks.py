"""The plugin's three dialogs built and driven under PyQt6 offscreen, over the ``qgis`` stand-in
(tests/qt6/standin): called by pyqt6_checks.py, each function returns facts as plain JSON values.

What runs is the dialogs' own code: layouts, combo boxes, check boxes, spin boxes, tables and
their selection, signals (a task's ``reported``/``ended``, QgsFileWidget's ``fileChanged``), the
settings, and the methods that build the engine's arguments. What does not run (it needs
QGIS): a task (the stand-in task manager records it; its signals are emitted here as QGIS would
after running it), the project's layers, Processing (*Prepare the dataset* past its checks).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["setup_dialog", "models_dialog", "training_dialog"]


def _tasks() -> list:
    from qgis.core import QgsApplication

    return QgsApplication.taskManager().tasks


def _shown(dialog) -> None:
    from qgis.PyQt.QtWidgets import QApplication

    dialog.show()
    QApplication.processEvents()


def setup_dialog(work: Path) -> dict:
    """Set up engine: both kinds, by-hand builds, a kept folder, Set up and Test engine queued."""
    from hrmnet_qgis.dialogs.setup_dialog import SetupEngineDialog
    from hrmnet_qgis.setup_engine import FULL, LIGHT

    dialog = SetupEngineDialog()
    _shown(dialog)
    out: dict = {"kinds": [dialog.kind.itemData(i) for i in range(dialog.kind.count())],
                 "first": dialog.chosen_kind(), "first_folder": dialog.folder.filePath(),
                 "builds": dialog.build.count(), "runtimes": dialog.runtime.count()}
    dialog.kind.setCurrentIndex(dialog.kind.findData(LIGHT))
    dialog.runtime.setCurrentIndex(1)
    out["light"] = {"kind": dialog.chosen_kind(), "folder": dialog.folder.filePath(),
                    "build_enabled": dialog.build.isEnabled(), "runtime_enabled": dialog.runtime.isEnabled(),
                    "runtime": getattr(dialog.chosen_runtime(), "package", None), "note": dialog.build_note.text()}
    dialog.kind.setCurrentIndex(dialog.kind.findData(FULL))
    dialog.build.setCurrentIndex(1)
    chosen = str(work / "my-engine")
    dialog.folder.setFilePath(chosen)
    dialog.kind.setCurrentIndex(dialog.kind.findData(LIGHT))  # a folder chosen by hand stays
    dialog.kind.setCurrentIndex(dialog.kind.findData(FULL))
    out["full"] = {"kind": dialog.chosen_kind(), "build": getattr(dialog.chosen_build(), "label", None),
                   "build_enabled": dialog.build.isEnabled(), "folder_kept": dialog.folder.filePath() == chosen}
    before = len(_tasks())
    out["started"] = dialog.start()
    task = _tasks()[-1] if len(_tasks()) > before else None
    out["setup_task"] = task.description() if task else None
    out["buttons_while_setting_up"] = [dialog.start_button.isEnabled(), dialog.cancel_button.isEnabled()]
    if task is not None:
        task.reported.emit({"event": "progress", "done": 250, "total": 1000})
        task.reported.emit({"event": "log", "message": "pip install …"})
        task.reported.emit({"event": "report", "report": {"checks": [{"name": "torch", "ok": True, "value": "2"}]}})
        out["progress"] = dialog.progress.value()
        dialog.cancel()
        out["task_cancelled"] = task.isCanceled()
        task.ended.emit("cancelled", "cancelled")
    out["after_cancel"] = {"status": dialog.status.text(), "start_enabled": dialog.start_button.isEnabled(),
                           "log": dialog.log.toPlainText().splitlines()[-2:],
                           "log_file": bool(dialog.log_path and dialog.log_path.is_file())}
    out["tested"] = dialog.test_engine()
    test = _tasks()[-1]
    out["test_task"] = test.description()
    out["test_button_while_testing"] = dialog.test_button.isEnabled()
    test.ended.emit("ok", {"ok": True, "device": "cpu", "torch": "2.x", "precision": "fp32", "checks": []})
    out["after_test"] = {"status": dialog.status.text(), "test_enabled": dialog.test_button.isEnabled()}
    dialog.close()
    return out


def models_dialog(work: Path) -> dict:
    """Models…: the listing task, the table filled from its result, selection, Use as default, Download."""
    from hrmnet_qgis import settings
    from hrmnet_qgis.dialogs.models_dialog import ModelsDialog

    here = work / "mine.onnx"
    here.write_bytes(b"\0" * 2048)
    rows = [{"name": "hrmnet-demo", "format": "onnx", "size": 4_200_000, "available": False, "gsd": 0.5,
             "purpose": "buildings", "catalogue": "built-in", "url": "https://example.org/m.onnx"},
            {"name": "mine", "format": "onnx", "size": 2048, "available": True, "path": str(here),
             "purpose": "trained here", "catalogue": "built-in"}]
    before = len(_tasks())
    dialog = ModelsDialog()
    _shown(dialog)
    listing = _tasks()[before:]
    out: dict = {"tasks": [t.description() for t in listing], "cancel_enabled": dialog.cancel_button.isEnabled()}
    listing[-1].ended.emit("ok", rows)
    table = dialog.table
    out["table"] = [[table.item(r, c).text() for c in range(table.columnCount())] for r in range(table.rowCount())]
    out["nothing_selected"] = [dialog.download_button.isEnabled(), dialog.default_button.isEnabled()]
    out["select_remote"] = dialog.select("hrmnet-demo", "onnx")
    out["remote"] = {"download": dialog.download_button.isEnabled(), "default": dialog.default_button.isEnabled(),
                     "details": dialog.details.toPlainText().splitlines()[:1]}
    out["select_local"] = dialog.select("mine", "onnx")
    out["local"] = {"download": dialog.download_button.isEnabled(), "default": dialog.default_button.isEnabled()}
    out["used"] = dialog.use_as_default()
    out["default_setting"] = settings.get(settings.DEFAULT_MODEL)
    out["default_label"] = dialog.default_label.text()
    dialog.select("hrmnet-demo", "onnx")
    out["downloading"] = dialog.download()
    task = _tasks()[-1]
    out["download_task"] = task.description()
    task.reported.emit({"event": "progress", "done": 3, "total": 4})
    out["download_progress"] = dialog.progress.value()
    task.ended.emit("error", "no network here")
    out["after_failure"] = {"status": dialog.status.text(), "download": dialog.download_button.isEnabled()}
    dialog.close()
    return out


def _data_section(section) -> dict:
    """The training dialog's Data step: layer combo boxes (with stand-in layers) to Prepare's parameters."""
    from qgis.core import QgsMapLayer, QgsRectangle

    out: dict = {"labels_filter": int(section.labels.filters()), "missing_first": section.missing()}
    before, after = QgsMapLayer("b1", "before"), QgsMapLayer("a1", "after")
    fp_before, fp_after, area = QgsMapLayer("f1", "fp before"), QgsMapLayer("f2", "fp after"), QgsMapLayer("z1", "area")
    section.before.setLayer(before)
    section.after.setLayer(after)
    out["missing_labels"] = section.missing()
    section.footprints_before.setLayer(fp_before)
    section.footprints_after.setLayer(fp_after)
    section.tolerance.setValue(2.5)
    section.area.setLayer(area)
    section.selected_only.setChecked(True)
    section.tile_size.setValue(256)
    section.gsd.setValue(0.25)
    out["missing_none"] = section.missing()
    params = section.parameters("/data/out", overwrite=True)
    labelled = params.pop("LABELLED_AREA")
    out["footprint_parameters"] = params
    out["labelled_area"] = [labelled.source, labelled.selectedFeaturesOnly]
    section.labels.setLayer(QgsMapLayer("l1", "labels"))
    out["missing_both"] = section.missing()
    section.footprints_before.setLayer(None)
    section.footprints_after.setLayer(None)
    section.area.setLayer(None)
    section.gsd.setValue(0)
    out["label_parameters"] = section.parameters("/data/out")
    section.extent.setOutputExtentFromUser(QgsRectangle(1, 2, 3, 4), before.crs())  # in the Before raster's CRS
    extent = section.parameters("/data/out")["LABELLED_EXTENT"]
    out["labelled_extent"] = [*extent.bounds, extent.crs().authid()]
    return out


def _training_run(dialog, run_folder: Path) -> dict:
    """Start (continuing a stopped run), events as the engine sends them, Stop, Start afresh, the end."""
    from hrmnet_qgis.runner import EngineRun

    (run_folder / "state.pt").write_bytes(b"")
    dialog.out.setFilePath(str(run_folder))  # fileChanged: a stopped run here can be continued
    out: dict = {"resume_offered": [dialog.resume.isEnabled(), dialog.resume.isChecked()]}
    dialog.device.setCurrentIndex(1)
    dialog.steps.setValue(40)
    dialog.crop.setValue(256)
    dialog.val_every.setValue(10)
    out["started"] = dialog.start()
    out["status"] = dialog.status.text()  # why, when it did not start (HRMNET_PYTHON without torch)
    if not out["started"]:
        return out
    out["command"] = dialog.log.toPlainText().splitlines()[-1]
    task = _tasks()[-1]
    out["task"] = task.description()
    out["while_running"] = {"running": dialog.running, "start": dialog.start_button.isEnabled(),
                            "stop": dialog.stop_button.isEnabled(), "fields": any(
                                w.isEnabled() for w in [dialog.steps, dialog.device, *dialog.source.widgets()])}
    task.reported.emit({"event": "start", "device": "cpu", "precision": "fp32", "tiles": 12})
    for step in (1, 2, 3):
        task.reported.emit({"event": "progress", "stage": "train", "done": step, "total": 40, "loss": 1.0 / step})
    task.reported.emit({"event": "log", "message": "validation", "step": 3, "val": {"f1": 0.5}})
    task.reported.emit({"event": "error", "message": "disk full"})
    task.reported.emit({"event": "stderr", "message": "error: disk full"})
    out["curves"] = [len(dialog.curves.loss), len(dialog.curves.f1)]
    out["progress"] = dialog.progress.value()
    dialog.stop()
    out["stop_cancels"] = task.isCanceled()
    task.ended.emit("cancelled", "stopped")
    out["after_stop"] = {"status": dialog.status.text(), "running": dialog.running,
                         "log": dialog.log.toPlainText().splitlines()[-3:]}
    dialog.resume.setChecked(False)
    dialog.start()
    out["fresh_command"] = dialog.log.toPlainText().splitlines()[-1]
    best = run_folder / "best.safetensors"
    best.write_bytes(b"")
    _tasks()[-1].ended.emit("ok", EngineRun(done={"outputs": {"best": str(best)}, "stats": {
        "steps": 40, "best_val": {"f1": 0.8}, "best_step": 30}}, start={}, extra=[], returncode=0))
    out["finished"] = {"status": dialog.status.text(), "use_best": dialog.use_best_button.isEnabled(),
                       "evaluate": dialog.evaluate_button.isEnabled()}
    return out


def _start_from(start_from) -> dict:
    """Start from: the catalogue read in the background (its task's end emitted here), trainable models offered."""
    listing = _tasks()[-1]
    out: dict = {"listing_task": listing.description(), "listing": start_from.listing is listing}
    listing.ended.emit("ok", [{"name": "graph", "format": "onnx", "catalogue": "c"},
                              {"name": "served", "format": "safetensors", "catalogue": "c", "size": 3e6}])
    out["offered"] = start_from.offered()
    out["selected"] = start_from.select("served")
    out["chosen"] = list(start_from.choice())
    start_from.combo.setCurrentIndex(0)  # back to the ImageNet backbone
    return out


def training_dialog(work: Path) -> dict:
    """Train a model: the Data step's parameters, Start/Stop/Start, evaluate, use the best model."""
    from hrmnet_qgis import settings
    from hrmnet_qgis.dialogs.training_dialog import TrainingDialog
    from hrmnet_qgis.runner import EngineRun

    dialog = TrainingDialog()
    _shown(dialog)
    out: dict = {"devices": [dialog.device.itemText(i) for i in range(dialog.device.count())],
                 "start": list(dialog.start_from.choice()), "resume_enabled": dialog.resume.isEnabled(),
                 "init_filter": dialog.start_from.file.filter()}
    out["start_from"] = _start_from(dialog.start_from)
    out["prepare_empty"] = [dialog.prepare(), dialog.status.text()]
    out["start_empty"] = [dialog.start(), dialog.status.text()]
    out["data"] = _data_section(dialog.source)
    data = work / "dataset"
    (data / "test" / "list").mkdir(parents=True)
    (data / "test" / "list" / "test.txt").write_text("tile_0\n")
    dialog.data.setFilePath(str(data))
    run_folder = work / "run"
    run_folder.mkdir()
    out["run"] = _training_run(dialog, run_folder)
    out["evaluating"] = bool(out["run"]["started"]) and dialog.evaluate()
    out["evaluate_command"] = (dialog.log.toPlainText().splitlines() or [""])[-1]
    if out["evaluating"]:
        metrics = {"f1": 0.81, "kappa": 0.7, "iou": 0.68, "precision": 0.8, "recall": 0.82}
        _tasks()[-1].ended.emit("ok", EngineRun(done={"stats": {"split": "test", "tiles": 1, "metrics": metrics}},
                                                start={}, extra=[], returncode=0))
    out["evaluated"] = dialog.status.text()
    dialog.use_best()
    out["default_model"] = settings.get(settings.DEFAULT_MODEL)
    out["best"] = str(run_folder / "best.safetensors")
    dialog.close()
    return out


def all_dialogs(work: Path) -> dict:
    """The three dialogs' facts (``work``: an empty folder for their files)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    return {"setup": setup_dialog(work / "setup"), "models": models_dialog(_made(work / "models")),
            "training": training_dialog(_made(work / "training"))}


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
