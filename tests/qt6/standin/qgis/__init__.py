"""A small stand-in for QGIS 4's ``qgis`` package, for tests/qt6 only (PyQt6 from PyPI, no QGIS).

tests/qt6/pyqt6_checks.py puts its parent folder first on ``sys.path`` inside ``.venv-qt6``
(never in ``.venv``, where the real QGIS 3.22 is). It is not QGIS: ``qgis.PyQt`` re-exports
PyQt6 as QGIS 4 does, and ``qgis.core``/``qgis.gui`` hold just the names the plugin's dialogs
use, so that the dialogs' Qt code runs under Qt 6. Whatever needs QGIS itself (running a
task, layers of a project, Processing) is absent or raises NotImplementedError.
"""
