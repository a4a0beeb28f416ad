"""The chosen model's defaults shown in the detection dialog, as soon as a model is chosen.

QGIS 3.22 has no dynamic default values: a parameter's default is fixed when the algorithm
is created. The closest it allows: THRESHOLD, TILE_SIZE and OVERLAP stay empty ("use the
model's value", which the engine then reads from the checkpoint), and the empty field
says what that value is — "model: 256" — for the checkpoint in the Model field, updated
whenever the model changes (the checkpoint's metadata is read in plain Python, without
torch: :mod:`hrmnet_qgis.model_info`).

This module is the Processing widget wrapper of THRESHOLD (imported by the dialogs only,
through the parameter's ``widget_wrapper`` metadata); in the dialog it also labels the
empty TILE_SIZE and OVERLAP fields, and (the one hook into the standard dialog) it
preselects Detect's Before and After (:func:`hrmnet_qgis.raster_pair.preselect_in_dialog`).
In the batch dialog and the modeler it is a plain number field.
"""
from __future__ import annotations

from typing import Any, Optional

from processing.gui.wrappers import DIALOG_MODELER, DIALOG_STANDARD, WidgetWrapper
from qgis.core import NULL
from qgis.gui import QgsDoubleSpinBox

from ..model_info import read_model_info
from ..raster_pair import preselect_in_dialog

__all__ = ["ModelDefaultsWrapper", "NOT_SET", "empty_text"]

#: What an empty field says when no model metadata is known.
NOT_SET = "model's value"
#: Parameters whose empty field shows the model's value, and the metadata key of each.
FIELDS = {"THRESHOLD": "threshold", "TILE_SIZE": "tile_size", "OVERLAP": "overlap"}


def empty_text(info: Optional[dict], key: str) -> str:
    """``model: 256`` for the model's ``key``, or :data:`NOT_SET` when unknown."""
    value = (info or {}).get(key)
    return f"model: {value:g}" if isinstance(value, (int, float)) else NOT_SET


class ModelDefaultsWrapper(WidgetWrapper):
    """THRESHOLD as an optional number whose empty state shows the chosen model's value."""

    def createWidget(self):  # noqa: N802
        if self.dialogType == DIALOG_MODELER:
            from processing.gui.NumberInputPanel import ModelerNumberInputPanel

            return ModelerNumberInputPanel(self.parameterDefinition(), self.dialog)
        param = self.parameterDefinition()
        box = QgsDoubleSpinBox()
        box.setDecimals(3)
        box.setSingleStep(0.05)
        # One step below the minimum is "empty": the model's value.
        box.setMinimum(param.minimum() - 0.001)
        box.setMaximum(param.maximum())
        box.setSpecialValueText(NOT_SET)
        box.setShowClearButton(True)
        box.setClearValue(box.minimum(), NOT_SET)
        box.setValue(box.minimum())
        box.valueChanged.connect(lambda _value: self.widgetValueHasChanged.emit(self))
        return box

    def setValue(self, value: Any) -> None:  # noqa: N802
        if self.dialogType == DIALOG_MODELER:
            if value is not None and value != NULL:
                self.widget.setValue(value)
            return
        if value is None or value == NULL or value == "":
            self.widget.clear()
        else:
            self.widget.setValue(float(value))

    def value(self) -> Any:
        if self.dialogType == DIALOG_MODELER:
            return self.widget.getValue()
        if self.widget.value() <= self.widget.minimum():
            return None
        return self.widget.value()

    def postInitialize(self, wrappers) -> None:  # noqa: N802
        if self.dialogType != DIALOG_STANDARD:
            return
        by_name = {w.parameterDefinition().name(): w for w in wrappers}
        preselect_in_dialog(by_name)  # Detect's Before/After: never our outputs (hrmnet_qgis.raster_pair)
        model = by_name.get("MODEL")
        if model is None:
            return
        self._boxes = {"THRESHOLD": self.widget}
        for name in ("TILE_SIZE", "OVERLAP"):
            wrapper = by_name.get(name)
            widget = wrapper.wrappedWidget() if wrapper is not None and hasattr(wrapper, "wrappedWidget") else None
            if widget is not None and hasattr(widget, "setSpecialValueText"):
                self._boxes[name] = widget
        model.widgetValueHasChanged.connect(lambda w: self.show_model_defaults(w.parameterValue()))
        self.show_model_defaults(model.parameterValue())

    def show_model_defaults(self, path: Any) -> None:
        """Label the empty fields with the values stored in the checkpoint ``path``."""
        info = read_model_info(str(path)) if path else None
        for name, box in getattr(self, "_boxes", {}).items():
            text = empty_text(info, FIELDS[name])
            box.setSpecialValueText(text)
            if hasattr(box, "setClearValue"):
                box.setClearValue(box.minimum(), text)
            if box.value() <= box.minimum():  # repaint the shown text
                box.setValue(box.minimum())
