"""The plugin object: Processing provider, menu and toolbar.

``initProcessing`` registers the provider without touching ``iface`` so that
``qgis_process`` sees the algorithms; the GUI parts (dialogs) are imported only when
their action is triggered.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtGui import QIcon

from .compat import QAction

from .raster_pair import before_after, raster_pair

__all__ = ["HrmnetPlugin", "MENU", "before_after", "recent_raster_pair"]

MENU = "&HRMNet change detection"
ICONS = Path(__file__).resolve().parent / "icons"


class HrmnetPlugin:
    """Registered by :func:`hrmnet_qgis.classFactory`."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider = None
        self.actions: list[QAction] = []
        self.toolbar = None
        self._dialogs: dict = {}

    # Processing ---------------------------------------------------------------
    def initProcessing(self) -> None:  # noqa: N802 - QGIS calls this (also in qgis_process)
        from .provider import HrmnetProvider

        if self.provider is None:
            provider = HrmnetProvider()
            # QGIS deletes a provider it refuses (same id already registered).
            if QgsApplication.processingRegistry().addProvider(provider):
                self.provider = provider  # the plugin keeps the Python object alive

    # GUI ----------------------------------------------------------------------
    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        if self.iface is None:
            return
        self.toolbar = self.iface.addToolBar("HRMNet")
        self.toolbar.setObjectName("HrmnetToolbar")
        self._add_action("Detect changes…", "detect.svg", self.open_detect, toolbar=True)
        self._add_action("Train a model…", "train.svg", self.open_training, toolbar=True)
        self._add_action("Models…", "models.svg", self.open_models, toolbar=True)
        self._add_action("Set up engine…", "setup.svg", self.open_setup)

    def _add_action(self, text: str, icon: str, slot, toolbar: bool = False) -> QAction:
        action = QAction(QIcon(str(ICONS / icon)), text, self.iface.mainWindow())
        action.triggered.connect(slot)
        self.iface.addPluginToMenu(MENU, action)
        if toolbar and self.toolbar is not None:
            self.toolbar.addAction(action)
        self.actions.append(action)
        return action

    def unload(self) -> None:
        for action in self.actions:
            if self.iface is not None:
                self.iface.removePluginMenu(MENU, action)
        self.actions.clear()
        if self.toolbar is not None:
            self.toolbar.deleteLater()
            self.toolbar = None
        for dialog in self._dialogs.values():
            dialog.close()
        self._dialogs.clear()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # Actions ------------------------------------------------------------------
    def open_detect(self) -> None:
        import processing

        processing.execAlgorithmDialog("hrmnet:detectchanges", recent_raster_pair(QgsProject.instance()))

    def open_training(self) -> None:
        self._show("training", "TrainingDialog")

    def open_models(self) -> None:
        self._show("models", "ModelsDialog")

    def open_setup(self) -> None:
        self._show("setup", "SetupEngineDialog")

    def _show(self, key: str, cls_name: str) -> None:
        dialog = self._dialogs.get(key)
        if dialog is None:
            from . import dialogs

            parent: Optional[object] = self.iface.mainWindow() if self.iface is not None else None
            dialog = getattr(dialogs, cls_name)(parent)
            self._dialogs[key] = dialog
        dialog.show()
        dialog.raise_()
        dialog.activateWindow()


def recent_raster_pair(project: QgsProject) -> dict:
    """BEFORE and AFTER preselected for the detection dialog (:func:`hrmnet_qgis.raster_pair.raster_pair`)."""
    return raster_pair(project)
