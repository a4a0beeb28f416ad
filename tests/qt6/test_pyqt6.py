"""The plugin's Qt code under PyQt6 (what QGIS 4 runs), without QGIS: a small venv ``.venv-qt6``
with PyQt6 from PyPI (made on first use, pinned by constraints.txt, kept like ``.venv-light``)
runs tests/qt6/pyqt6_checks.py offscreen. Every Qt class and enum the plugin names resolves
there, the training dialog's curves widget draws both curves, and the three dialogs (Set up
engine, Models, training) are built, driven and closed over a small ``qgis`` stand-in
(tests/qt6/standin: ``qgis.PyQt`` is PyQt6; ``qgis.core``/``qgis.gui`` only the names the dialogs
import): their combo boxes, check boxes, spin boxes, table, signals and settings, and the
engine arguments they build.

Not run here, because it needs QGIS itself: a task running (the stand-in task manager only
records it; the checks emit its ``reported``/``ended`` signals as QGIS would), the project's
layers and layer tree, Processing (*Prepare the dataset* past its own checks), the file
dialogs. tests/plugin runs all of that with the real QGIS 3.22."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-qt6"
CHECKS = Path(__file__).with_name("pyqt6_checks.py")
#: PyQt6 and its Qt, pinned in constraints.txt.
PACKAGES = ["PyQt6", "PyQt6-Qt6", "PyQt6-sip"]

pytestmark = pytest.mark.slow


def _base_python() -> str:
    base = getattr(sys, "_base_executable", None)
    return base if base and Path(base).exists() and base != sys.executable else "/usr/bin/python3"


def _qt6_python() -> Path:
    """.venv-qt6's python (no system site-packages: Debian's PyQt5 stays out), filled when its
    stamp (a hash of constraints.txt) is stale; skips when PyQt6's wheels cannot be had or run here."""
    python, stamp = VENV / "bin" / "python", VENV / ".hrmnet-qt6-installed"
    want = hashlib.sha256((ROOT / "constraints.txt").read_bytes()).hexdigest()[:16]
    if not (stamp.exists() and stamp.read_text().strip() == want and python.exists()):
        if not python.exists():
            subprocess.run([_base_python(), "-m", "venv", str(VENV)], check=True, timeout=300)
        res = subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"),
                              *PACKAGES], capture_output=True, text=True, timeout=1200)
        if res.returncode != 0:
            pytest.skip(f"PyQt6 wheels could not be installed here: {res.stderr.strip().splitlines()[-1:]}")
        stamp.write_text(want + "\n")
    probe = subprocess.run([str(python), "-c", "from PyQt6.QtWidgets import QApplication"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"PyQt6 does not load on this machine: {probe.stderr.strip().splitlines()[-1:]}")
    return python


@pytest.fixture(scope="module")
def report() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    env["HRMNET_PYTHON"] = sys.executable  # has torch: the training dialog's Start and Evaluate check for it
    run = subprocess.run([str(_qt6_python()), str(CHECKS), str(ROOT)], capture_output=True, text=True,
                         timeout=600, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_it_is_really_pyqt6(report):
    assert report["pyqt"].startswith("6.") and report["qt"].startswith("6.")


def test_every_qt_class_the_plugin_imports_exists_in_pyqt6(report):
    assert "qgis.PyQt.QtWidgets.QDialog" in report["imports"]  # the scan saw the dialogs
    missing = [name for name, ok in report["imports"].items() if not ok]
    assert not missing, f"not in PyQt6: {missing}"


def test_every_qt_enum_and_method_the_plugin_names_resolves_in_pyqt6(report):
    names = report["qt_names"]
    assert "Qt.AlignmentFlag.AlignRight" in names and "QSizePolicy.Policy.Expanding" in names
    missing = [name for name, ok in names.items() if not ok]
    assert not missing, f"not in PyQt6: {missing}"


def test_curves_widget_draws_loss_and_f1_under_pyqt6(report):
    curves = report["curves"]
    assert curves["filled"]["loss"] > 50 and curves["filled"]["f1"] > 20, curves
    assert curves["filled"]["loss"] > curves["empty"]["loss"] and curves["filled"]["f1"] > curves["empty"]["f1"]
    assert curves["size_policy"] == "Expanding"


@pytest.fixture(scope="module")
def dialogs(report) -> dict:
    return report["dialogs"]


def test_setup_dialog_switches_engine_kind_builds_and_folder_under_pyqt6(dialogs):
    setup = dialogs["setup"]
    assert setup["kinds"] == ["light", "full"] and setup["first"] == "full"
    assert setup["first_folder"].endswith("/hrmnet/engine-venv") and setup["builds"] > 1 and setup["runtimes"] > 1
    light = setup["light"]
    assert light["kind"] == "light" and light["folder"].endswith("/hrmnet/engine-venv-light")
    assert not light["build_enabled"] and light["runtime_enabled"] and light["runtime"]
    assert "no torch" in light["note"]
    full = setup["full"]
    assert full["kind"] == "full" and full["build_enabled"] and full["build"] and full["folder_kept"]


def test_setup_dialog_reports_progress_cancel_and_engine_test_under_pyqt6(dialogs):
    setup = dialogs["setup"]
    assert setup["started"] and setup["setup_task"] == "HRMNet: set up engine"
    assert setup["buttons_while_setting_up"] == [False, True]
    assert setup["progress"] == 25 and setup["task_cancelled"]
    after = setup["after_cancel"]
    assert after["status"].startswith("Cancelled") and after["start_enabled"] and after["log_file"]
    assert after["log"] == ["pip install …", "ok   torch: 2"]
    assert setup["tested"] and setup["test_task"] == "HRMNet: test engine" and not setup["test_button_while_testing"]
    assert setup["after_test"]["status"].startswith("Engine OK: device cpu, torch 2.x")
    assert setup["after_test"]["test_enabled"]


def test_models_dialog_fills_its_table_selects_and_sets_the_default_under_pyqt6(dialogs):
    models = dialogs["models"]
    assert models["tasks"] == ["HRMNet: list models"] and models["cancel_enabled"]
    assert models["table"][0] == ["hrmnet-demo", "onnx", "4.2 MB", "—", "0.5", "buildings"]
    assert models["table"][1][:4] == ["mine", "onnx", "0.0 MB", "yes"]
    assert models["nothing_selected"] == [False, False]
    assert models["select_remote"] and models["remote"]["download"] and not models["remote"]["default"]
    assert models["remote"]["details"] == ["hrmnet-demo (onnx, 4.2 MB)"]
    assert models["select_local"] and models["local"] == {"download": False, "default": True}
    assert models["used"] and models["default_setting"].endswith("/mine.onnx")
    assert models["default_label"] == "Default model: " + models["default_setting"]
    assert models["downloading"] and models["download_task"] == "HRMNet: download hrmnet-demo"
    assert models["download_progress"] == 75
    assert models["after_failure"] == {"status": "Failed: no network here", "download": True}


def test_training_dialog_data_step_builds_prepare_parameters_under_pyqt6(dialogs):
    training = dialogs["training"]
    assert training["devices"] == ["automatic (GPU when there is one)", "CPU", "GPU (CUDA)"]
    assert training["start"] == ["", True] and not training["resume_enabled"]  # the ImageNet backbone by default
    assert "*.safetensors" in training["init_filter"]
    start_from = training["start_from"]
    assert start_from["listing_task"] == "HRMNet: list models" and start_from["listing"]
    assert "served" in start_from["offered"] and "graph" not in start_from["offered"]  # an .onnx: not trainable
    assert start_from["selected"] and start_from["chosen"] == ["served", False]
    assert training["prepare_empty"] == [False, "Choose the Before and After rasters."]
    assert training["start_empty"] == [False, "Choose a dataset folder and a run folder."]
    data = training["data"]
    assert data["labels_filter"] == 1 | 16  # Qgis.LayerFilter.RasterLayer | PolygonLayer, combined under PyQt6
    assert data["missing_labels"].startswith("Choose change labels") and data["missing_none"] == ""
    assert data["footprint_parameters"] == {"BEFORE": "b1", "AFTER": "a1", "TILE_SIZE": 256, "OUTPUT": "/data/out",
                                            "OVERWRITE": True, "FOOTPRINTS_BEFORE": "f1", "FOOTPRINTS_AFTER": "f2",
                                            "FOOTPRINT_TOLERANCE": 2.5, "GSD": 0.25}
    assert data["labelled_area"] == ["z1", True]
    assert data["missing_both"].endswith("not both.")
    assert data["label_parameters"] == {"BEFORE": "b1", "AFTER": "a1", "TILE_SIZE": 256, "OUTPUT": "/data/out",
                                        "OVERWRITE": False, "LABELS": "l1"}
    assert data["labelled_extent"] == [1.0, 2.0, 3.0, 4.0, "EPSG:32633"]  # the Before raster's CRS


def test_training_dialog_starts_stops_resumes_and_evaluates_under_pyqt6(dialogs):
    training = dialogs["training"]
    run = training["run"]
    assert run["resume_offered"] == [True, True] and run["started"], run["status"]
    assert run["task"] == "HRMNet training"
    command = run["command"].split()
    assert command[2:4] == ["-m", "engine"] and command[4] == "train"
    for option in (["--steps", "40"], ["--device", "cpu"], ["--val-every", "10"], ["--crop", "256"]):
        i = command.index(option[0])
        assert command[i:i + 2] == option, run["command"]
    assert command[-1] == "--resume" and "--backbone" not in command
    assert run["while_running"] == {"running": True, "start": False, "stop": True, "fields": False}
    assert run["curves"] == [3, 1] and run["progress"] == 7 and run["stop_cancels"]
    assert run["after_stop"]["status"].startswith("Stopped at step 3") and not run["after_stop"]["running"]
    assert run["after_stop"]["log"] == ["started: device=cpu, precision=fp32, tiles=12", "validation",
                                        "error: disk full"]  # the engine's error once, not its stderr copy
    assert run["fresh_command"].endswith("--backbone imagenet") and "--resume" not in run["fresh_command"]
    assert run["finished"]["status"].startswith("Finished 40 steps. Best validation F1 0.8000 at step 30.")
    assert run["finished"]["use_best"] and run["finished"]["evaluate"]
    assert training["evaluating"] and " --split test --model " + training["best"] in training["evaluate_command"]
    assert training["evaluated"].startswith("test split, 1 tiles: F1 0.8100")
    assert training["default_model"] == training["best"]
