"""The Models… dialog offscreen, with a catalogue served from 127.0.0.1: the catalogue and the
local models with their metadata, a download with progress through the engine, "Use as default"
(Detect changes then proposes it), and the ONNX copy of a checkpoint for the light engine."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from tests.http_server import Server

from .conftest import ROOT
from .helpers import wait_until

pytestmark = pytest.mark.qgis

INT8 = ROOT / "engine" / "demo" / "hrmnet_demo_int8.onnx"


@pytest.fixture
def served(monkeypatch, tmp_path):
    from hrmnet_qgis import settings

    model = INT8.read_bytes()
    catalogue = {"models": [{"name": "served-int8", "url": "demo_int8.onnx", "sha256": hashlib.sha256(model).hexdigest(),
                             "size": len(model), "gsd": 0.5, "bands": ["red", "green", "blue"],
                             "purpose": "a served test model", "license": "GPL-2.0-or-later",
                             "metrics": {"f1": 0.876, "measured_on": "the demo scene"}}]}
    server = Server({"/models.json": json.dumps(catalogue).encode(), "/demo_int8.onnx": model})
    monkeypatch.setenv("HRMNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HRMNET_MODELS_URL", raising=False)
    settings.put(settings.MODELS_URL, server.url("/models.json"))
    settings.put(settings.DEFAULT_MODEL, "")
    yield server
    settings.put(settings.MODELS_URL, "")
    settings.put(settings.DEFAULT_MODEL, "")
    server.close()


def test_models_dialog_lists_downloads_and_sets_the_default(qgis_app, served, tmp_path):
    from hrmnet_qgis import settings
    from hrmnet_qgis.algorithms.detect import DetectChanges
    from hrmnet_qgis.dialogs import ModelsDialog

    dialog = ModelsDialog()
    assert wait_until(lambda: dialog.task is None, 300)
    names = {(r["name"], r["format"]): r for r in dialog.rows}
    assert names[("hrmnet-demo", "onnx")]["available"]
    assert not names[("served-int8", "onnx")]["available"]
    assert dialog.select("served-int8", "onnx")
    details = dialog.details.toPlainText()
    assert "a served test model" in details and "0.5 m/pixel" in details and "measured on the demo scene" in details
    assert "GPL-2.0-or-later" in details
    assert dialog.download_button.isEnabled() and not dialog.default_button.isEnabled()
    assert not dialog.export_button.isEnabled()  # an .onnx needs no ONNX copy

    assert dialog.download()
    here = lambda: any(r["name"] == "served-int8" and r["available"] for r in dialog.rows)  # noqa: E731
    assert wait_until(lambda: dialog.task is None and here(), 300), dialog.status.text()
    assert dialog.select("served-int8", "onnx")
    cached = tmp_path / "cache" / "models" / "served-int8.onnx"
    assert cached.read_bytes() == INT8.read_bytes()
    assert dialog.progress.value() == 100
    assert dialog.default_button.isEnabled()
    assert dialog.use_as_default()
    assert settings.get(settings.DEFAULT_MODEL) == str(cached)
    assert str(cached) in dialog.default_label.text()
    alg = DetectChanges()
    alg.initAlgorithm()
    assert alg.parameterDefinition("MODEL").defaultValue() == str(cached)
    assert not dialog.grab().isNull()
    dialog.close()
    # The Model fields of Detect changes, Map sheets and Evaluate offer the models that are here.
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsApplication, QgsProcessingContext

    for alg_id in ("hrmnet:detectchanges", "hrmnet:detectchangessheets", "hrmnet:evaluate"):
        form = AlgorithmDialog(QgsApplication.processingRegistry().createAlgorithmById(alg_id))
        wrapper = form.mainWidget().wrappers["MODEL"]
        offered = [wrapper.combo.itemText(i) for i in range(wrapper.combo.count())]
        assert str(cached) in offered and str(INT8) in offered, (alg_id, offered)
        wrapper.combo.setCurrentIndex(offered.index(str(INT8)))
        assert wrapper.parameterValue() == str(INT8)
        wrapper.setParameterValue(str(cached), QgsProcessingContext())
        assert wrapper.parameterValue() == str(cached)
        form.close()


def test_set_up_engine_exports_an_onnx_copy_for_the_light_engine(qgis_app, served, tmp_path, monkeypatch):
    """Set up engine: no export with the light engine; with the full one, the default .safetensors
    model is proposed, its ONNX copy written beside it through the engine, then made the default."""
    from hrmnet_qgis import settings
    from hrmnet_qgis.algorithms.detect import DetectChanges
    from hrmnet_qgis.dialogs import SetupEngineDialog, setup_dialog
    from hrmnet_qgis.model_info import read_model_info
    from hrmnet_qgis.models import local_rows

    model = tmp_path / "mine.safetensors"
    shutil.copy(ROOT / "engine" / "demo" / "hrmnet_demo.safetensors", model)
    rows = local_rows([str(model)], [])
    assert rows[0]["format"] == "safetensors" and rows[0]["gsd"] == 0.5
    kind = settings.get(settings.ENGINE_KIND)
    try:
        settings.put(settings.ENGINE_KIND, "light")
        dialog = SetupEngineDialog()
        assert not dialog.export_button.isEnabled()
        assert "Needs the full engine" in dialog.export_button.toolTip()
        assert not dialog.export_model(str(model))
        dialog.close()

        settings.put(settings.ENGINE_KIND, "full")
        settings.put(settings.DEFAULT_MODEL, str(model))
        asked: list[str] = []
        monkeypatch.setattr(setup_dialog.QFileDialog, "getOpenFileName",
                            lambda parent, title, start, filters: (asked.append(start), (start, filters))[1])
        dialog = SetupEngineDialog()
        assert dialog.export_button.isEnabled() and not dialog.use_copy_button.isEnabled()
        assert "python -m engine export" in dialog.export_button.toolTip()
        dialog.export_button.click()
        assert asked == [str(model)]  # the default model, a .safetensors, is proposed
        assert dialog.export_task is not None and not dialog.export_button.isEnabled()
        assert not dialog.start_button.isEnabled() and dialog.cancel_button.isEnabled()
        assert wait_until(lambda: dialog.export_task is None, 600), dialog.status.text()
        out = tmp_path / "mine.onnx"
        assert dialog.status.text().startswith(f"ONNX copy written: {out}"), dialog.status.text()
        assert "exporting mine.safetensors" in dialog.log.toPlainText()
        assert dialog.progress.value() == 100 and dialog.export_button.isEnabled()
        info = read_model_info(str(out))
        assert info["onnx_export"]["source"] == "mine.safetensors" and info["tile_size"] == 256
        assert dialog.use_copy_button.isEnabled()
        dialog.use_copy_button.click()
        assert settings.get(settings.DEFAULT_MODEL) == str(out)
        assert dialog.status.text().startswith(f"Default model: {out}")
        alg = DetectChanges()
        alg.initAlgorithm()
        assert alg.parameterDefinition("MODEL").defaultValue() == str(out)
        assert not dialog.grab().isNull()
        dialog.close()
    finally:
        settings.put(settings.ENGINE_KIND, kind)
