"""Run by tests/qt6/test_pyqt6.py with PyQt6 (from PyPI, no QGIS): prints one JSON object.

``qgis`` is the stand-in in tests/qt6/standin, put first on sys.path here only: ``qgis.PyQt``
re-exports PyQt6 as QGIS 4 does (``qgis/PyQt/QtCore.py`` is ``from PyQt6.QtCore import *``),
and ``qgis.core``/``qgis.gui`` hold just the names the dialogs import. Nothing of QGIS runs.

- ``imports``: every ``from qgis.PyQt.<module> import <name>`` in hrmnet_qgis/ (outside the
  ``except ImportError`` fallbacks of a version switch) and whether PyQt6 has it;
- ``qt_names``: every dotted name the plugin reads from a Qt class (``Qt.AlignmentFlag.AlignRight``,
  ``QSizePolicy.Policy.Expanding``, ``QFileDialog.getExistingDirectory`` ...) and whether it resolves;
- ``curves``: the training dialog's curves widget drawn offscreen: pixels of each curve's colour;
- ``dialogs``: the Set up engine, Models and training dialogs built, driven and closed offscreen
  (tests/qt6/dialog_checks.py says what runs and what needs QGIS).

Usage: ``python pyqt6_checks.py PROJECT_ROOT`` (``HRMNET_PYTHON``: a Python with torch, which the
training dialog's Start and Evaluate ask for).
"""
from __future__ import annotations

import ast
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


STANDIN = Path(__file__).resolve().with_name("standin")


def install_qgis_standin(root: Path) -> None:
    """The ``qgis`` stand-in and the project (``hrmnet_qgis``) first on sys.path."""
    sys.path[:0] = [str(STANDIN), str(root)]


def _fallback_nodes(tree: ast.AST) -> set:
    """Nodes inside ``except ImportError:`` blocks (the Qt5 side of a version switch)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Name) and node.type.id == "ImportError":
            for stmt in node.body:
                inside.update(ast.walk(stmt))
    return inside


def qt_references(root: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(imports as (module, name), dotted names read from those names) over hrmnet_qgis/."""
    imports, dotted = set(), set()
    for path in sorted((root / "hrmnet_qgis").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _fallback_nodes(tree)
        local = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qgis.PyQt.") and node not in skip:
                for alias in node.names:
                    imports.add((node.module, alias.name))
                    local[alias.asname or alias.name] = alias.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node not in skip:
                parts, cur = [], node
                while isinstance(cur, ast.Attribute):
                    parts.append(cur.attr)
                    cur = cur.value
                if isinstance(cur, ast.Name) and cur.id in local:
                    dotted.add(".".join([local[cur.id], *reversed(parts)]))
    # keep the longest chains only (Qt.AlignmentFlag.AlignRight covers Qt.AlignmentFlag)
    longest = [d for d in dotted if not any(o.startswith(d + ".") for o in dotted)]
    return sorted(imports), sorted(longest)


def check_names(imports: list[tuple[str, str]], dotted: list[str]) -> tuple[dict, dict]:
    resolved = {}
    found = {}
    for module, name in imports:
        mod = __import__(module, fromlist=[name])
        ok = hasattr(mod, name)
        found[f"{module}.{name}"] = ok
        if ok:
            resolved[name] = getattr(mod, name)
    names = {}
    for chain in dotted:
        head, *rest = chain.split(".")
        value = resolved.get(head)
        for part in rest:
            # instance attributes (self.x.y) are not Qt names; only class-level chains are checked
            value = getattr(value, part, None) if value is not None else None
        names[chain] = value is not None
    return found, names


def draw_curves(root: Path) -> dict:
    """The curves widget filled and drawn into an image; pixel counts per colour."""
    from qgis.PyQt.QtGui import QColor, QImage, QPainter
    from qgis.PyQt.QtWidgets import QApplication

    from hrmnet_qgis.dialogs import curves

    app = QApplication.instance() or QApplication([])
    out = {}
    for label, filled in (("empty", False), ("filled", True)):
        widget = curves.CurvesWidget()
        widget.resize(400, 300)
        widget.clear(total_steps=100)
        if filled:
            for step in range(0, 101, 5):
                widget.add_loss(step, 1.0 / (1 + step))
            for step in (20, 40, 60, 80, 100):
                widget.add_f1(step, step / 120)
        image = QImage(widget.size(), QImage.Format.Format_ARGB32)
        image.fill(QColor(255, 255, 255))
        painter = QPainter(image)
        widget.render(painter)
        painter.end()
        counts = {"loss": 0, "f1": 0}
        for y in range(image.height()):
            for x in range(image.width()):
                c = image.pixelColor(x, y)
                for key, ref in (("loss", curves.LOSS_COLOUR), ("f1", curves.F1_COLOUR)):
                    if abs(c.red() - ref.red()) + abs(c.green() - ref.green()) + abs(c.blue() - ref.blue()) < 40:
                        counts[key] += 1
        out[label] = counts
    out["size_policy"] = widget.sizePolicy().horizontalPolicy().name
    app.processEvents()
    return out


def main() -> None:
    root = Path(sys.argv[1]).resolve()
    install_qgis_standin(root)
    with tempfile.TemporaryDirectory(prefix="hrmnet-qt6-") as work:
        os.environ["QGIS_STANDIN_PROFILE"] = str(Path(work) / "profile")  # read by the stand-in qgis.core
        from PyQt6.QtCore import PYQT_VERSION_STR, QT_VERSION_STR
        from qgis.core import QgsApplication

        from dialog_checks import all_dialogs

        app = QgsApplication([])
        imports, dotted = qt_references(root)
        found, names = check_names(imports, dotted)
        report = {"qt": QT_VERSION_STR, "pyqt": PYQT_VERSION_STR, "imports": found, "qt_names": names,
                  "curves": draw_curves(root), "dialogs": all_dialogs(Path(work) / "dialogs")}
        app.processEvents()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
