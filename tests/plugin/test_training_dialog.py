"""The training dialog offscreen: prepare from project layers, Start, Stop (resumable), Start again,
curves, evaluate on the held-out part, use the best model."""
from __future__ import annotations

import json

import pytest

from .helpers import wait_until

pytestmark = pytest.mark.qgis


def _random_start(dialog) -> None:
    """Start from random weights (the tests run offline: no ImageNet download)."""
    from hrmnet_qgis.dialogs.start_from import RANDOM

    combo = dialog.start_from.combo
    combo.setCurrentIndex(combo.findData(RANDOM))
    assert dialog.start_from.choice() == ("", False)


def test_dialog_trains_stops_resumes_and_offers_the_best_model(qgis_app, dataset, tmp_path):
    from qgis.core import QgsApplication

    from hrmnet_qgis import settings
    from hrmnet_qgis.dialogs import TrainingDialog

    dialog = TrainingDialog()
    dialog.show()
    run = tmp_path / "run"
    dialog.data.setFilePath(str(dataset))
    dialog.out.setFilePath(str(run))
    dialog.steps.setValue(3)  # the stop may land during step 2: the run must not end there
    dialog.batch_size.setValue(1)
    dialog.device.setCurrentIndex(1)  # "CPU" (DEVICES[1] == "cpu")
    dialog.crop.setValue(64)
    assert dialog.val_every.value() == 1000  # the recipe's; validation at the end here
    assert dialog.start_from.choice() == ("", True)  # the paper's start by default; here offline, so off
    _random_start(dialog)
    assert not dialog.resume.isEnabled()

    # Stop as soon as the first step is reported: the engine saves a resumable state.
    stopped = []

    def stop_once(event):
        if event.get("event") == "progress" and not stopped:
            stopped.append(event["done"])
            dialog.stop()

    assert dialog.start()
    assert dialog.running and not dialog.start_button.isEnabled() and dialog.stop_button.isEnabled()
    dialog.task.reported.connect(stop_once)
    assert wait_until(lambda: not dialog.running)
    assert stopped == [1]
    assert "Stopped at step" in dialog.status.text(), dialog.status.text() + dialog.log.toPlainText()
    assert (run / "state.pt").is_file()
    assert dialog.resume.isEnabled() and dialog.resume.isChecked()
    assert not dialog.start_from.isEnabled()  # a continued run keeps its own weights
    assert not dialog.use_best_button.isEnabled()

    # Start again: it continues the stopped run (train --resume) to the end.
    assert dialog.start()
    assert "--resume" in dialog.log.toPlainText().splitlines()[-1]
    assert wait_until(lambda: not dialog.running)
    assert dialog.status.text().startswith("Finished 3 steps"), dialog.status.text() + dialog.log.toPlainText()
    assert [s for s, _ in dialog.curves.loss][-1] == 3
    assert len(dialog.curves.f1) >= 1 and 0.0 <= dialog.curves.f1[-1][1] <= 1.0
    assert dialog.progress.value() == 100
    assert not dialog.grab().isNull()  # the curves paint offscreen

    # The end offers the best checkpoint for detection.
    assert dialog.use_best_button.isEnabled()
    assert "--crop 64" in dialog.log.toPlainText() and "--val-every 1000" in dialog.log.toPlainText()
    # A finished run is not offered for continuing (#20): a new Start starts a new run.
    assert not dialog.resume.isEnabled() and not dialog.resume.isChecked()
    dialog.use_best_button.click()
    best = str(run / "best.safetensors")
    assert settings.get(settings.DEFAULT_MODEL) == best
    detect = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchanges")
    assert detect.parameterDefinition("MODEL").defaultValue() == best
    settings.put(settings.DEFAULT_MODEL, "")
    dialog.close()


def test_dialog_refuses_to_start_without_folders(qgis_app):
    from hrmnet_qgis.dialogs import TrainingDialog

    dialog = TrainingDialog()
    assert not dialog.start()
    assert "dataset folder" in dialog.status.text()


def test_train_args_start_from_imagenet_unless_a_checkpoint_is_given():
    from hrmnet_qgis.dialogs.training_dialog import train_args

    args = train_args("d", "o", 2, 1, 5e-4, "cpu", imagenet=True)
    assert args[-2:] == ["--backbone", "imagenet"]
    assert "--backbone" not in train_args("d", "o", 2, 1, 5e-4, "cpu", init="m.safetensors", imagenet=True)
    assert "--backbone" not in train_args("d", "o", 2, 1, 5e-4, "cpu", resume=True, imagenet=True)
    assert "--backbone" not in train_args("d", "o", 2, 1, 5e-4, "cpu")
    assert train_args("d", "o", 2, 1, 5e-4, "cpu", crop=256, val_every=0)[-4:] == ["--val-every", "0", "--crop", "256"]


def test_the_whole_flow_from_project_layers_to_a_held_out_score(qgis_app, scenes, tmp_path):
    """Layers of the project → prepare (labelled area) → train → evaluate on the held-out split."""
    from qgis.core import QgsProject, QgsRasterLayer

    from hrmnet_qgis.dialogs import TrainingDialog

    from .test_dataset_algorithms import _polygon_layer

    before, after, labels = scenes[0]
    layers = [QgsRasterLayer(str(p), name) for p, name in ((before, "before"), (after, "after"), (labels, "labels"))]
    QgsProject.instance().addMapLayers(layers)
    ext = layers[0].extent()
    area = _polygon_layer("checked area", "EPSG:32633", [(ext.xMinimum(), ext.yMinimum(), ext.xMaximum(),
                                                          ext.yMaximum() - ext.height() / 4)])
    dialog = TrainingDialog()
    dialog.show()
    data, run = tmp_path / "dataset", tmp_path / "run"
    dialog.source.before.setLayer(layers[0])
    dialog.source.after.setLayer(layers[1])
    dialog.source.labels.setLayer(layers[2])
    dialog.source.area.setLayer(area)
    dialog.source.tile_size.setValue(32)
    dialog.data.setFilePath(str(data))
    assert dialog.prepare(), dialog.status.text()
    assert wait_until(lambda: not dialog.running)
    assert dialog.status.text().startswith("Dataset prepared"), dialog.status.text() + dialog.log.toPlainText()
    info = json.loads((data / "dataset.json").read_text())
    assert info["label"]["labelled"]["labelled"] == 255  # the area (the bottom three quarters) was used
    names = [n for sp in ("train", "val", "test") for n in (data / sp / "list" / f"{sp}.txt").read_text().split()]
    rows = {int(n.rsplit("_", 2)[1]) for n in names}
    assert names and 0 not in rows  # no tile cut from the top quarter, outside the area

    dialog.out.setFilePath(str(run))
    dialog.steps.setValue(1)
    dialog.batch_size.setValue(1)
    dialog.crop.setValue(32)
    dialog.val_every.setValue(0)
    dialog.device.setCurrentIndex(1)
    _random_start(dialog)
    assert dialog.start()
    assert wait_until(lambda: not dialog.running)
    assert dialog.status.text().startswith("Finished 1 steps"), dialog.status.text() + dialog.log.toPlainText()
    assert dialog.evaluate_button.isEnabled()
    assert dialog.evaluate()
    assert wait_until(lambda: not dialog.running)
    assert " split, " in dialog.status.text() and "F1 " in dialog.status.text(), dialog.status.text()
    assert dialog.use_best_button.isEnabled()
    QgsProject.instance().removeMapLayers([layer.id() for layer in layers] + [area.id()])
    dialog.close()


def test_prepare_says_what_is_missing(qgis_app, tmp_path):
    from hrmnet_qgis.dialogs import TrainingDialog

    dialog = TrainingDialog()
    dialog.data.setFilePath(str(tmp_path / "d"))
    assert not dialog.prepare()
    assert dialog.status.text() == "Choose the Before and After rasters."


def test_the_log_follows_the_end_and_an_error_is_shown_once(qgis_app):
    from hrmnet_qgis.dialogs import TrainingDialog

    dialog = TrainingDialog()
    dialog.show()
    for i in range(300):
        dialog._on_event({"event": "log", "level": "info", "message": f"line {i}"})
    bar = dialog.log.verticalScrollBar()
    assert bar.maximum() > 0 and bar.value() == bar.maximum()
    message = "could not download the ImageNet backbone: offline"
    dialog._on_event({"event": "error", "message": message})
    dialog._on_event({"event": "stderr", "message": f"error: {message}"})
    assert dialog.log.toPlainText().count(message) == 1
    dialog.close()


def test_start_from_offers_the_trainable_models_of_the_catalogue_by_name(qgis_app, dataset, tmp_path, monkeypatch):
    """ImageNet by default (no --init); a catalogue model goes as --init NAME (the engine verifies
    it and says so in the log); an .onnx, from the catalogue or here, is not offered; a file is."""
    import shutil

    from hrmnet_qgis import settings
    from hrmnet_qgis.dialogs import TrainingDialog

    from .conftest import ROOT

    onnx = tmp_path / "mine.onnx"
    shutil.copy(ROOT / "engine" / "demo" / "hrmnet_demo_int8.onnx", onnx)
    settings.put(settings.DEFAULT_MODEL, str(onnx))  # a local .onnx model, listed by Models…
    dialog = TrainingDialog()
    dialog.show()
    assert dialog.start_from.listing is not None  # the catalogue is read in the background
    assert wait_until(lambda: dialog.start_from.listing is None, 300)
    offered = dialog.start_from.offered()
    assert "hrmnet-demo" in offered  # the shipped catalogue's checkpoint, by name
    assert "hrmnet-demo-fp32" not in offered and str(onnx) not in offered  # .onnx only: not trainable
    dialog.data.setFilePath(str(dataset))
    dialog.out.setFilePath(str(tmp_path / "run"))
    dialog.steps.setValue(1)
    dialog.batch_size.setValue(1)
    dialog.crop.setValue(64)
    dialog.val_every.setValue(0)
    dialog.device.setCurrentIndex(1)

    launched = []
    monkeypatch.setattr(dialog, "_launch", lambda stage, command, args, python, title: launched.append(args))
    assert dialog.start()  # the default: the ImageNet backbone, no --init
    assert "--init" not in launched[-1] and launched[-1][-2:] == ["--backbone", "imagenet"]
    checkpoint = tmp_path / "start.safetensors"
    shutil.copy(ROOT / "engine" / "demo" / "hrmnet_demo.safetensors", checkpoint)
    dialog.start_from.file.setFilePath(str(checkpoint))  # choosing a file selects "the file below"
    assert dialog.start()
    assert launched[-1][-2:] == ["--init", str(checkpoint)]
    monkeypatch.undo()

    assert dialog.start_from.select("hrmnet-demo")
    assert dialog.start()
    command = dialog.log.toPlainText().splitlines()[-1]
    assert "--init hrmnet-demo " in command + " " and "--backbone" not in command
    assert wait_until(lambda: not dialog.running)
    log = dialog.log.toPlainText()
    assert dialog.status.text().startswith("Finished 1 steps"), dialog.status.text() + log
    assert "model hrmnet-demo (safetensors)" in log  # the engine resolved the name to its verified file
    settings.put(settings.DEFAULT_MODEL, "")
    dialog.close()


def test_init_choices_are_torch_formats_once_each():
    from hrmnet_qgis.models import init_choices

    rows = [{"name": "a", "format": "onnx", "catalogue": "c"},
            {"name": "a", "format": "safetensors", "catalogue": "c", "size": 2e6, "available": False},
            {"name": "a", "format": "pth", "catalogue": "c"},
            {"name": "b.pth", "format": "pth", "catalogue": "local file", "path": "/m/b.pth"},
            {"name": "c.onnx", "format": "onnx", "catalogue": "local file", "path": "/m/c.onnx"}]
    assert [(label, value) for label, value, _ in init_choices(rows)] == [
        ("a (catalogue, downloads 2 MB)", "a"), ("b.pth (local file)", "/m/b.pth")]


def test_the_labelled_area_can_be_an_extent(qgis_app, scenes, tmp_path, monkeypatch):
    """An extent (typed, the map's, a layer's) instead of polygons: prepare --labelled-area
    XMIN,YMIN,XMAX,YMAX,CRS; polygons and an extent together are refused in one line."""
    from qgis.core import QgsProject, QgsRasterLayer, QgsRectangle

    from hrmnet_qgis.dialogs import TrainingDialog

    from .test_dataset_algorithms import _polygon_layer

    before, after, labels = scenes[0]
    layers = [QgsRasterLayer(str(p), name) for p, name in ((before, "before"), (after, "after"), (labels, "labels"))]
    QgsProject.instance().addMapLayers(layers)
    dialog = TrainingDialog()
    source = dialog.source
    source.before.setLayer(layers[0])
    source.after.setLayer(layers[1])
    source.labels.setLayer(layers[2])
    assert not source.extent.isValid() and "LABELLED_EXTENT" not in source.parameters("d")  # not set
    ext = layers[0].extent()
    top = QgsRectangle(ext.xMinimum(), ext.center().y(), ext.xMaximum(), ext.yMaximum())
    source.extent.setOutputExtentFromUser(top, layers[0].crs())
    dialog.data.setFilePath(str(tmp_path / "dataset"))
    launched = []
    monkeypatch.setattr(dialog, "_launch", lambda stage, command, args, python, title: launched.append(args))
    assert dialog.prepare(), dialog.status.text()
    opts = dict(zip(launched[-1][::2], launched[-1][1::2]))
    xmin, ymin, xmax, ymax, crs = opts["--labelled-area"].split(",")
    assert crs == "EPSG:32633" and (float(xmin), float(ymax)) == (ext.xMinimum(), ext.yMaximum())
    assert float(ymin) == ext.center().y()
    area = _polygon_layer("checked area", "EPSG:32633", [(ext.xMinimum(), ext.yMinimum(), ext.xMaximum(),
                                                          ext.yMaximum())])
    source.area.setLayer(area)
    assert not dialog.prepare()
    assert "not both" in dialog.status.text()
    QgsProject.instance().removeMapLayers([layer.id() for layer in layers] + [area.id()])
    dialog.close()
