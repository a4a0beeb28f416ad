"""The Set up engine dialog offscreen: the Python really used, the PyTorch build and its size, Test engine."""
from __future__ import annotations

import os

import pytest

from .helpers import wait_until

pytestmark = pytest.mark.qgis



def test_dialog_shows_the_python_used_the_build_and_tests_the_engine(qgis_app, tmp_path, monkeypatch):
    from hrmnet_qgis import settings
    from hrmnet_qgis.dialogs import SetupEngineDialog

    monkeypatch.setenv("HRMNET_CACHE", str(tmp_path / "cache"))
    settings.put(settings.ENGINE_PYTHON, "")
    dialog = SetupEngineDialog()
    # HRMNET_PYTHON is set (the tests' engine): the dialog says so instead of "not set".
    assert dialog.current.text() == f"{os.environ['HRMNET_PYTHON']} (from HRMNET_PYTHON)"
    # The automatic build first, then every build by hand; the size is said before installing.
    assert dialog.build.itemText(0).startswith("Automatic: ")
    assert [dialog.build.itemData(i).build for i in range(1, 5)] == ["cpu", "cu130", "cu128", "cu126"]
    assert dialog.chosen_build() is None and "Download: " in dialog.build_note.text()
    dialog.build.setCurrentIndex(3)
    assert dialog.chosen_build().build == "cu128" and "several GB" in dialog.build_note.text()
    dialog.build.setCurrentIndex(1)
    assert "1.6 GB" in dialog.build_note.text()

    assert dialog.test_engine()
    assert wait_until(lambda: dialog.test_task is None)
    status = dialog.status.text()
    assert status.startswith("Engine OK: device cpu"), status + dialog.log.toPlainText()
    assert "torch 2." in status and "precision " in status
    log = dialog.log.toPlainText()
    assert "ok   torch:" in log and "ok   GDAL/PROJ:" in log
    assert not dialog.grab().isNull()
    dialog.close()


def test_engine_python_description_follows_the_resolution_order(tmp_path):
    from hrmnet_qgis.setup_engine import describe_engine_python

    py = tmp_path / "python"
    py.touch()
    yes = lambda python: True  # noqa: E731
    assert describe_engine_python(str(py), {}, [], yes) == f"{py} (set by Set up engine)"
    assert describe_engine_python("", {"HRMNET_PYTHON": str(py)}, [], yes) == f"{py} (from HRMNET_PYTHON)"
    assert describe_engine_python("", {}, [str(py)], yes) == f"{py} (QGIS's own Python, which has torch)"
    assert describe_engine_python("", {}, [str(py)], lambda p: False).startswith("(none yet")
    assert "points to no file" in describe_engine_python("", {"HRMNET_PYTHON": str(tmp_path / "gone")}, [], yes)
