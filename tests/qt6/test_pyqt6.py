"""The plugin's Qt code under PyQt6 (what QGIS 4 runs), without QGIS: a small venv ``.venv-qt6``
with PyQt6 from PyPI (made on first use, pinned by constraints.txt, kept like ``.venv-light``)
runs tests/qt6/pyqt6_checks.py offscreen. Every Qt class and enum the plugin names resolves
there, and the training dialog's curves widget draws both curves."""
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
