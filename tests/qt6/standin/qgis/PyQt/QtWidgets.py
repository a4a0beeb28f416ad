"""QGIS 4's ``qgis/PyQt/QtWidgets.py``: ``from PyQt6.QtWidgets import *``."""
from PyQt6.QtWidgets import *  # noqa: F401,F403
