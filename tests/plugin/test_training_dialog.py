"""The training dialog offscreen: prepare from project layers, Start, Stop (resumable), Start again,
curves, evaluate on the held-out part, use the best model."""
from __future__ import annotations

import json

import pytest

from .helpers import wait_until

pytestmark = pytest.mark.qgis



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
    assert dialog.imagenet.isChecked()  # the paper's start by default; here offline, so off
    dialog.imagenet.setChecked(False)
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
    dialog.imagenet.setChecked(False)
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
