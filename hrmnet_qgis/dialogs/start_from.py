"""The training dialog's "Start from" field: what the first step's weights are.

Offered: the ImageNet backbone (the paper's start, the default), the models of the catalogue
and the model files that are here, as the *Models…* dialog lists them
(:func:`hrmnet_qgis.models.model_rows`; ``.safetensors`` and ``.pth`` only, an ``.onnx``
cannot be fine-tuned), random weights, or a model file chosen below. A catalogue model goes
to the engine by name (``train --init NAME``): the engine downloads and verifies it, its
progress in the training log. The catalogue is read by the engine in a background task each
time the field is shown, so the dialog opens at once; until it answers, and when the engine
is not set up, the local files are offered. Written for Qt5 and Qt6 alike.
"""
from __future__ import annotations

from typing import Optional

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QComboBox, QVBoxLayout, QWidget

from ..engine_python import EngineSetupError, engine_python
from ..models import describe_row, init_choices, list_models, model_rows
from ..runner import EngineCancelled
from .task import BackgroundTask, start_task

__all__ = ["StartFrom"]

IMAGENET, MODEL, RANDOM, FILE = "imagenet:", "model:", "random:", "file:"  # item data: the kind, then the value


class StartFrom(QWidget):
    """A list of starts (see the module docstring) above a file field for "the model file below"."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.listing: Optional[BackgroundTask] = None
        self.combo = QComboBox()
        self.file = QgsFileWidget()
        self.file.setFilter("HRMNet checkpoints (*.safetensors *.pth)")
        self.file.fileChanged.connect(self._file_chosen)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        layout.addWidget(self.file)
        self.fill(model_rows([]))

    def choice(self) -> tuple[str, bool]:
        """``(--init value or '', ImageNet backbone?)`` for the current choice."""
        data = str(self.combo.currentData() or IMAGENET)
        if data == FILE:
            return self.file.filePath(), False
        return data.removeprefix(MODEL) if data.startswith(MODEL) else "", data == IMAGENET

    def select(self, value: str) -> bool:
        """Choose the model whose ``--init`` value is ``value`` (False when it is not offered)."""
        index = self.combo.findData(MODEL + value)
        if index >= 0:
            self.combo.setCurrentIndex(index)
        return index >= 0

    def offered(self) -> list[str]:
        """The ``--init`` values of the models offered."""
        data = (str(self.combo.itemData(i)) for i in range(self.combo.count()))
        return [d.removeprefix(MODEL) for d in data if d.startswith(MODEL)]

    def fill(self, rows: list[dict]) -> None:
        """Offer the trainable models of ``rows`` (rows of :func:`model_rows`); the current choice
        stays when it is still offered."""
        current = self.combo.currentData()
        self.combo.clear()
        self.combo.addItem("ImageNet backbone, as the paper does (downloads 47 MB once)", IMAGENET)
        for label, value, row in init_choices(rows):
            self.combo.addItem(label, MODEL + value)
            self.combo.setItemData(self.combo.count() - 1, describe_row(row), Qt.ItemDataRole.ToolTipRole)
        self.combo.addItem("Random weights (no download)", RANDOM)
        self.combo.addItem("The model file below", FILE)
        self.combo.setCurrentIndex(max(self.combo.findData(current), 0) if current is not None else 0)

    def reload(self) -> bool:
        """Read the catalogue in the background (False when a reading is under way or the engine is not set up)."""
        if self.listing is not None:
            return False
        try:
            python = str(engine_python())
        except EngineSetupError:
            return False
        self.combo.setToolTip("Reading the model catalogue…")
        self.listing = start_task("HRMNet: list models", lambda task: list_models(python, task.isCanceled),
                                  lambda _event: None, self._listed, cancelled_types=(EngineCancelled,))
        return True

    def _listed(self, kind: str, value: object) -> None:
        self.listing = None
        listed = kind == "ok" and isinstance(value, list)
        self.fill(model_rows(list(value) if listed else []))
        self.combo.setToolTip("" if listed else f"The model catalogue could not be read: {value}")

    def _file_chosen(self, path: str) -> None:
        if path:
            self.combo.setCurrentIndex(self.combo.findData(FILE))

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        self.reload()
