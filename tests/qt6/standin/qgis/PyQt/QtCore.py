"""QGIS 4's ``qgis/PyQt/QtCore.py`` is ``from PyQt6.QtCore import *`` plus a NULL value (QVariant
additions) that the dialogs do not use."""
from PyQt6.QtCore import *  # noqa: F401,F403
