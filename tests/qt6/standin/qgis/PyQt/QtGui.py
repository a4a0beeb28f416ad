"""QGIS 4's ``qgis/PyQt/QtGui.py``: ``from PyQt6.QtGui import *``."""
from PyQt6.QtGui import *  # noqa: F401,F403
