"""The training dialog offscreen: Start, Stop (resumable), Start again, curves, use the best model."""
from __future__ import annotations


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
    dialog.steps.setValue(2)
    dialog.batch_size.setValue(1)
    dialog.device.setCurrentIndex(1)  # "CPU" (DEVICES[1] == "cpu")
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
    assert dialog.status.text().startswith("Finished 2 steps"), dialog.status.text() + dialog.log.toPlainText()
    assert [s for s, _ in dialog.curves.loss][-1] == 2
    assert len(dialog.curves.f1) >= 1 and 0.0 <= dialog.curves.f1[-1][1] <= 1.0
    assert dialog.progress.value() == 100
    assert not dialog.grab().isNull()  # the curves paint offscreen

    # The end offers the best checkpoint for detection.
    assert dialog.use_best_button.isEnabled()
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
