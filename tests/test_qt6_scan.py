"""hrmnet_qgis/ has no Qt5-only enum or API (tools/qt6_scan.py), so it loads in QGIS 4 (PyQt6)
as it does in QGIS 3.22; the scanner itself reports every idiom it is meant to."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _scanner():
    spec = importlib.util.spec_from_file_location("qt6_scan", ROOT / "tools" / "qt6_scan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


QT5_ONLY = {  # line of code -> a fragment of what the scanner says
    "w.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)": "QSizePolicy.Expanding: unscoped enum",
    "painter.drawText(rect, QtCore.Qt.AlignRight, text)": "Qt.AlignRight: unscoped enum",
    "task = QgsTask('x', QgsTask.CanCancel)": "QgsTask.CanCancel: unscoped enum",
    "p = QgsProcessingParameterNumber('N', 'n', QgsProcessingParameterNumber.Integer)": "hrmnet_qgis.compat",
    "t = QgsProcessing.SourceType.TypeVectorPolygon": "moved to Qgis.ProcessingSourceType",
    "ok = layer.type() == QgsMapLayerType.RasterLayer": "moved to Qgis.LayerType",
    "a = Qt.Alignment(Qt.AlignmentFlag.AlignLeft)": "QFlags type removed",
    "dialog.exec_()": "exec_()",
    "v = QVariant()": "QVariant",
    "f = QgsField('n', QVariant.Int)": "QVariant",
    "w = QFontMetrics(font).width('abc')": "horizontalAdvance",
    "r = QApplication.desktop()": "QDesktopWidget",
    "combo.activated[str].connect(f)": "activated[...]",
    "from PyQt5.QtCore import Qt": "use qgis.PyQt",
    "from qgis.PyQt.QtWidgets import QAction, QDialog": "QAction from qgis.PyQt.QtWidgets",
    "from qgis.PyQt.QtCore import QRegExp": "QRegExp",
    "from qgis.PyQt.QtWidgets import qApp": "qApp",
    "from . import resources_rc": "compiled resources",
}

BOTH = """\
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QDialog, QSizePolicy
from qgis.core import Qgis, QgsProcessing, QgsProcessingContext, QgsTask
try:
    from qgis.PyQt.QtGui import QAction
except ImportError:
    from qgis.PyQt.QtWidgets import QAction
w.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
painter.drawText(rect, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, text)
task = QgsTask("x", QgsTask.Flag.CanCancel)
out = QgsProcessing.TEMPORARY_OUTPUT
version = Qgis.QGIS_VERSION_INT
details = QgsProcessingContext.LayerDetails("name", project, "OUTPUT")
level = Qgis.MessageLevel.Info
dialog.exec()
app = QgsApplication.instance()
"""


def test_the_plugin_has_no_qt5_only_enum_or_api():
    found = _scanner().scan([ROOT / "hrmnet_qgis"])
    assert not found, "Qt5-only (fails under QGIS 4 / PyQt6):\n" + "\n".join(map(str, found))


def test_each_qt5_only_idiom_is_reported_on_its_line(tmp_path):
    scan_source = _scanner().scan_source
    for line, fragment in QT5_ONLY.items():
        found = scan_source(line + "\n", tmp_path / "x.py")
        assert found and all(f.line == 1 for f in found), line
        assert any(fragment in f.message for f in found), (line, [f.message for f in found])


def test_code_valid_on_qt5_and_qt6_is_not_reported(tmp_path):
    assert _scanner().scan_source(BOTH, tmp_path / "ok.py") == []


def test_command_line_prints_path_line_and_fails(tmp_path):
    bad = tmp_path / "pkg" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("from qgis.PyQt.QtCore import Qt\n\nx = Qt.AlignLeft\n", encoding="utf-8")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "qt6_scan.py"), str(bad.parent)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stdout.strip() == f"{bad}:3: Qt.AlignLeft: unscoped enum (PyQt6 needs Qt.<EnumName>.AlignLeft)"
    ok = subprocess.run([sys.executable, str(ROOT / "tools" / "qt6_scan.py"), str(ROOT / "hrmnet_qgis")],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout == ""
