"""Static check that the plugin's Python runs on both PyQt5 (QGIS 3) and PyQt6 (QGIS 4).

In the spirit of QGIS's ``scripts/pyqt5_to_pyqt6/pyqt5_to_pyqt6.py`` (which rewrites code),
this only reports: it walks each file's syntax tree, needs neither Qt nor QGIS, and prints
``PATH:LINE: problem`` for every Qt5-only idiom:

- an unscoped enum value (``Qt.AlignRight``, ``QSizePolicy.Expanding``,
  ``QgsTask.CanCancel``): PyQt6 only knows ``Qt.AlignmentFlag.AlignRight``;
- a QFlags type called as a function (``Qt.Alignment(...)``): gone from PyQt6;
- a QGIS enum that QGIS 3.30/3.36 moved into ``Qgis`` (``QgsProcessing.SourceType``,
  ``QgsMapLayerType`` ...): read it through ``hrmnet_qgis/compat.py``;
- ``exec_`` (PyQt6 has ``exec``), ``QVariant`` in any form (PyQt6 maps QVariant to Python
  values; ``QVariant.Int`` & co. do not exist), ``qApp``, ``QRegExp``, ``QDesktopWidget``,
  ``desktop()``, ``QFontMetrics.width()``, ``activated[str]``, compiled resources;
- an import from ``PyQt5``/``PyQt4``/``sip`` instead of ``qgis.PyQt``, or of a class Qt6 moved
  from QtWidgets to QtGui (``QAction``, ``QShortcut`` ...) from ``qgis.PyQt.QtWidgets``.

Code in an ``except ImportError:`` block is the Qt5 fallback of a version switch and is not
reported (``hrmnet_qgis/compat.py`` uses one for ``QAction``).

Usage: ``python tools/qt6_scan.py [PATH ...]`` (default ``hrmnet_qgis``); exit 1 when it
reports anything. ``tests/test_qt6_scan.py`` runs it in ``make test``.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Iterator, NamedTuple, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]

#: Class names of Qt and QGIS (where enums live): Qt, QWidget, QgsTask, Qgis ...
_QT_CLASS = re.compile(r"^(Qt|Qgis|Q[A-Z]\w*|Qgs[A-Z]\w*)$")
#: Upper-case constants (``QgsProcessing.TEMPORARY_OUTPUT``, ``Qgis.QGIS_VERSION``) are not enums.
_CONSTANT = re.compile(r"^[A-Z][A-Z0-9_]*$")
#: Enums QGIS moved into ``Qgis`` (3.30, 3.36); QGIS 4 keeps the old names only as monkey patches.
MOVED_ENUMS = {
    ("QgsProcessing", "SourceType"): "Qgis.ProcessingSourceType",
    ("QgsProcessingParameterNumber", "Type"): "Qgis.ProcessingNumberParameterType",
    ("QgsProcessingParameterFile", "Behavior"): "Qgis.ProcessingFileParameterBehavior",
    ("QgsProcessingParameterDefinition", "Flag"): "Qgis.ProcessingParameterFlag",
    ("QgsProcessingAlgorithm", "Flag"): "Qgis.ProcessingAlgorithmFlag",
    ("QgsProcessingOutputLayerDefinition", "Flag"): "Qgis.ProcessingFeatureSourceDefinitionFlag",
    ("QgsMapLayer", "LayerType"): "Qgis.LayerType",
    ("QgsWkbTypes", "Type"): "Qgis.WkbType",
    ("QgsWkbTypes", "GeometryType"): "Qgis.GeometryType",
}
MOVED_CLASSES = {"QgsMapLayerType": "Qgis.LayerType"}
#: Nested classes (not enums) that the plugin names without calling them.
NESTED_TYPES = {("QgsProcessingContext", "LayerDetails"), ("QgsVectorFileWriter", "SaveVectorOptions")}
#: In QtGui under Qt6, QtWidgets under Qt5.
MOVED_TO_QTGUI = {"QAction", "QActionGroup", "QShortcut", "QUndoCommand", "QUndoGroup", "QUndoStack",
                  "QFileSystemModel"}
REMOVED_NAMES = {
    "QVariant": "QVariant (PyQt6 maps it to Python values: use None / the value; QMetaType for types)",
    "qApp": "qApp (removed in PyQt6: QApplication.instance())",
    "QRegExp": "QRegExp (removed in Qt6: QRegularExpression)",
    "QDesktopWidget": "QDesktopWidget (removed in Qt6: QScreen)",
    "resources_rc": "compiled resources (removed in Qt6: load files by path)",
}


class Finding(NamedTuple):
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _chain(node: ast.Attribute) -> Optional[list[str]]:
    """``a.b.c`` -> ["a", "b", "c"]; None when the base is not a plain name."""
    parts: list[str] = []
    cur: ast.AST = node
    while isinstance(cur, ast.Attribute):
        parts.append(cur.attr)
        cur = cur.value
    if not isinstance(cur, ast.Name):
        return None
    return [cur.id, *reversed(parts)]


def _attribute_problem(chain: list[str], called: bool) -> Optional[str]:
    """What is Qt5-only in an outermost attribute chain (``QtCore.Qt.AlignRight`` ...), else None."""
    for i, name in enumerate(chain[:-1]):
        if not _QT_CLASS.match(name):
            continue
        member, rest = chain[i + 1], chain[i + 2:]
        dotted = ".".join(chain[i:])
        if name in MOVED_CLASSES:
            return f"{dotted}: enum moved to {MOVED_CLASSES[name]} (use hrmnet_qgis.compat)"
        if (name, member) in MOVED_ENUMS:
            return f"{dotted}: enum moved to {MOVED_ENUMS[name, member]} (use hrmnet_qgis.compat)"
        if name == "Qt" and called and not rest and member[:1].isupper():
            return f"{dotted}(): QFlags type removed in PyQt6 (use the enum, Qt.{member}Flag...)"
        if (rest or called or not member[:1].isupper() or _CONSTANT.match(member)
                or (name, member) in NESTED_TYPES):
            return None
        if any(owner == name for owner, _ in MOVED_ENUMS):
            return f"{dotted}: unscoped enum, since moved into Qgis (use hrmnet_qgis.compat)"
        return f"{dotted}: unscoped enum (PyQt6 needs {name}.<EnumName>.{member})"
    return None


def _in_import_fallback(parents: dict, node: ast.AST) -> bool:
    cur = parents.get(node)
    while cur is not None:
        if isinstance(cur, ast.ExceptHandler) and _catches_import_error(cur):
            return True
        cur = parents.get(cur)
    return False


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError") for k in kinds)


def _import_problems(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] in ("PyQt5", "PyQt4", "sip"):
                yield f"import {alias.name}: use qgis.PyQt"
            elif alias.name.split(".")[-1] in REMOVED_NAMES:
                yield REMOVED_NAMES[alias.name.split(".")[-1]]
    elif isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if module.split(".")[0] in ("PyQt5", "PyQt4", "sip"):
            yield f"from {module}: use qgis.PyQt"
        names = {a.name for a in node.names}
        if module.endswith("QtWidgets"):
            for name in sorted(names & MOVED_TO_QTGUI):
                yield f"{name} from {module}: in QtGui under Qt6 (use hrmnet_qgis.compat)"
        for name in sorted(names & set(REMOVED_NAMES)):
            yield REMOVED_NAMES[name]
        if "QtWebKit" in module:
            yield f"{module}: removed in Qt6"


def _node_problems(node: ast.AST, parents: dict) -> Iterator[str]:
    parent = parents.get(node)
    if isinstance(node, ast.Attribute) and not isinstance(parent, ast.Attribute):
        chain = _chain(node)
        called = isinstance(parent, ast.Call) and parent.func is node
        if chain:
            problem = _attribute_problem(chain, called)
            if problem:
                yield problem
        if node.attr == "exec_":
            yield "exec_(): PyQt6 has only exec()"
        if node.attr == "width" and isinstance(node.value, ast.Call) and _calls(node.value, "fontMetrics",
                                                                                  "QFontMetrics", "QFontMetricsF"):
            yield "QFontMetrics.width(): removed in Qt6 (horizontalAdvance())"
        if node.attr == "desktop" and called and not parent.args:
            yield "desktop(): QDesktopWidget is removed in Qt6 (QScreen)"
    elif isinstance(node, ast.Name) and node.id in REMOVED_NAMES and not isinstance(parent, ast.alias):
        yield REMOVED_NAMES[node.id]
    elif isinstance(node, ast.FunctionDef) and node.name == "exec_":
        yield "def exec_(): PyQt6 calls exec()"
    elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "activated":
        yield "activated[...]: overloaded signals are gone in Qt6 (textActivated / activated)"
    else:
        yield from _import_problems(node)


def _calls(call: ast.Call, *names: str) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in names


def scan_source(source: str, path: Path) -> list[Finding]:
    """The findings of one file's text."""
    tree = ast.parse(source, filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        problems = list(_node_problems(node, parents))
        if problems and not _in_import_fallback(parents, node):
            found.extend(Finding(path, getattr(node, "lineno", 0), p) for p in problems)
    return sorted(set(found), key=lambda f: (str(f.path), f.line, f.message))


def scan(paths: Sequence[Path]) -> list[Finding]:
    """The findings of every ``.py`` file under ``paths``."""
    found = []
    for base in paths:
        files = [base] if base.is_file() else sorted(base.rglob("*.py"))
        for path in files:
            if "__pycache__" not in path.parts:
                found.extend(scan_source(path.read_text(encoding="utf-8"), path))
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv) or [str(ROOT / "hrmnet_qgis")]
    found = scan([Path(a) for a in args])
    for finding in found:
        print(finding)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
