"""Stand-ins for the ``qgis.gui`` widgets the plugin's dialogs use (see ``qgis/__init__.py``).

Real QWidgets, with QGIS's method names and enum types, so the dialogs' layouts, signals
and enum arguments run under PyQt6; their QGIS behaviour (file browsing, the project's
layers, the map canvas) is not imitated: a layer combo box lists the layers it was given by
``setLayer``; an extent widget holds the extent it was given, in its output CRS (no transformation).
"""
from __future__ import annotations

import enum
from typing import Optional

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QComboBox, QHBoxLayout, QLineEdit, QWidget

from .core import Qgis, QgsCoordinateReferenceSystem, QgsMapLayer, QgsRectangle

__all__ = ["QgsExtentWidget", "QgsFileWidget", "QgsMapLayerComboBox"]


class QgsFileWidget(QWidget):
    """A line edit holding a path; ``fileChanged`` when the path changes (as QgsFileWidget)."""

    class StorageMode(enum.IntEnum):
        GetFile = 0
        GetDirectory = 1
        SaveFile = 3

    fileChanged = pyqtSignal(str)  # noqa: N815 - QGIS's name

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._edit = QLineEdit()
        self._mode = QgsFileWidget.StorageMode.GetFile
        self._filter = ""
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._edit)
        self._edit.textChanged.connect(self.fileChanged.emit)

    def setStorageMode(self, mode: "QgsFileWidget.StorageMode") -> None:  # noqa: N802 - QGIS's name
        if not isinstance(mode, QgsFileWidget.StorageMode):
            raise TypeError(f"setStorageMode takes QgsFileWidget.StorageMode, not {type(mode).__name__}")
        self._mode = mode

    def storageMode(self) -> "QgsFileWidget.StorageMode":  # noqa: N802 - QGIS's name
        return self._mode

    def setFilePath(self, path: str) -> None:  # noqa: N802 - QGIS's name
        self._edit.setText(path)

    def filePath(self) -> str:  # noqa: N802 - QGIS's name
        return self._edit.text()

    def setFilter(self, file_filter: str) -> None:  # noqa: N802 - QGIS's name
        self._filter = file_filter

    def filter(self) -> str:
        return self._filter


class QgsMapLayerComboBox(QComboBox):
    """A combo box of layers: an empty entry when allowed, and each layer given to ``setLayer``;
    ``layerChanged`` when the current layer changes."""

    layerChanged = pyqtSignal(object)  # noqa: N815 - QGIS's name

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._filters = Qgis.LayerFilter(0)
        self._allow_empty = False
        self.currentIndexChanged.connect(lambda _index: self.layerChanged.emit(self.currentLayer()))

    def setFilters(self, filters: Qgis.LayerFilter) -> None:  # noqa: N802 - QGIS's name
        if not isinstance(filters, Qgis.LayerFilter):
            raise TypeError(f"setFilters takes Qgis.LayerFilter flags, not {type(filters).__name__}")
        self._filters = filters

    def filters(self) -> Qgis.LayerFilter:
        return self._filters

    def setAllowEmptyLayer(self, allowed: bool) -> None:  # noqa: N802 - QGIS's name
        self._allow_empty = bool(allowed)
        if allowed and self.findData(None) < 0:
            self.insertItem(0, "", None)

    def setLayer(self, layer: Optional[QgsMapLayer]) -> None:  # noqa: N802 - QGIS's name
        if layer is None:
            self.setCurrentIndex(self.findData(None) if self._allow_empty else -1)
            return
        for i in range(self.count()):
            if self.itemData(i) is layer:
                self.setCurrentIndex(i)
                return
        self.addItem(layer.name(), layer)
        self.setCurrentIndex(self.count() - 1)

    def currentLayer(self) -> Optional[QgsMapLayer]:  # noqa: N802 - QGIS's name
        data = self.currentData()
        return data if isinstance(data, QgsMapLayer) else None


class QgsExtentWidget(QWidget):
    """An extent or none ("not set" when allowed): QGIS's output extent and output CRS."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._extent: Optional[QgsRectangle] = None
        self._crs = QgsCoordinateReferenceSystem()
        self._original: Optional[QgsRectangle] = None
        self._canvas = None
        self._null_allowed = False

    def setNullValueAllowed(self, allowed: bool, text: str = "") -> None:  # noqa: N802 - QGIS's name
        self._null_allowed = bool(allowed)

    def clear(self) -> None:
        if self._null_allowed:
            self._extent = None

    def setMapCanvas(self, canvas) -> None:  # noqa: N802 - QGIS's name
        self._canvas = canvas

    def setOriginalExtent(self, extent: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> None:  # noqa: N802
        self._original = extent

    def setOutputCrs(self, crs: QgsCoordinateReferenceSystem) -> None:  # noqa: N802 - QGIS's name
        self._crs = crs

    def setOutputExtentFromUser(self, extent: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> None:  # noqa: N802
        self._extent = extent

    def isValid(self) -> bool:  # noqa: N802 - QGIS's name
        return self._extent is not None

    def outputExtent(self) -> QgsRectangle:  # noqa: N802 - QGIS's name
        return self._extent if self._extent is not None else QgsRectangle()

    def outputCrs(self) -> QgsCoordinateReferenceSystem:  # noqa: N802 - QGIS's name
        return self._crs
