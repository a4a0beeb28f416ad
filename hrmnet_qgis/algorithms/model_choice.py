"""The Model field of Detect changes, Map sheets and Evaluate: the models that are here, offered
in a list, and a button to choose any other file.

Offered: the default model, the bundled demo model and the models the *Models…* dialog found
here (downloaded or local; it stores their paths in the plugin settings). The field stays
editable (a path typed or pasted is taken as is); empty means the algorithm's default model.
This module is the Processing widget wrapper of MODEL (through the parameter's
``widget_wrapper`` metadata, :data:`hrmnet_qgis.algorithms.detect.MODEL_CHOICE`). Written for Qt5 and Qt6 alike.
"""
from __future__ import annotations

from typing import Any

from processing.gui.wrappers import WidgetWrapper
from qgis.core import NULL
from qgis.PyQt.QtWidgets import QComboBox, QHBoxLayout, QToolButton, QWidget

from ..models import offered_models

__all__ = ["ModelChoiceWrapper"]


class ModelChoiceWrapper(WidgetWrapper):
    """An editable list of the models that are here, plus "…" to browse for a file."""

    def createWidget(self):  # noqa: N802
        widget = QWidget()
        layout = QHBoxLayout(widget)
        layout.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        for path in offered_models():
            self.combo.addItem(path, path)
        self.combo.setEditText("")
        self.combo.setToolTip(self.tr("The models that are here (Models… downloads more); … chooses another file"))
        self.combo.currentTextChanged.connect(lambda _text: self.widgetValueHasChanged.emit(self))
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip(self.tr("Choose a model file"))
        browse.clicked.connect(self._browse)
        layout.addWidget(self.combo, 1)
        layout.addWidget(browse)
        return widget

    def _browse(self) -> None:
        filename, _ = self.getFileName(self.combo.currentText())
        if filename:
            self.combo.setEditText(filename)

    def setValue(self, value: Any) -> None:  # noqa: N802
        self.combo.setEditText("" if value is None or value == NULL else str(value))

    def value(self) -> Any:
        return self.combo.currentText().strip() or None
