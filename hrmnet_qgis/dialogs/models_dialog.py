"""The *Models…* dialog: the catalogue and the local models, download, "Use as default", ONNX copy.

The list comes from the engine (``python -m engine models list``) in a background task; a
download runs ``models get NAME --format F`` with its progress in bytes; "Use as default"
stores the file as the default model of Detect changes and Map sheets; "Export ONNX copy"
(full engine) runs ``export MODEL MODEL.onnx`` so a light engine can run a ``.safetensors``
model. The catalogue address (plugin setting) reaches the engine as ``HRMNET_MODELS_URL``.
Written for Qt5 and Qt6 alike (scoped enums, ``exec()``).
"""
from __future__ import annotations

from typing import Callable, Optional

from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import settings
from ..engine_python import engine_python
from ..model_info import demo_model
from ..models import describe_row, download_model, list_models, model_rows, remember_models, set_default_model
from ..runner import EngineCancelled
from .onnx_export import EXPORT_TIP, NEEDS_FULL_TIP, can_export, exported_text, start_export
from .task import BackgroundTask, start_task

__all__ = ["ModelsDialog"]

COLUMNS = ["Model", "Format", "Size", "Here", "GSD (m)", "Purpose"]


class ModelsDialog(QDialog):
    """Lists catalogue and local models; downloads; sets the default model."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("HRMNet: models")
        self.rows: list[dict] = []
        self.task: Optional[BackgroundTask] = None
        self.url = QLineEdit(settings.get(settings.MODELS_URL))
        self.url.setPlaceholderText("another catalogue: https://…/models.json or a file (optional)")
        reload_button = QPushButton("Reload")
        reload_button.clicked.connect(self.reload)
        top = QHBoxLayout()
        top.addWidget(QLabel("Catalogue"))
        top.addWidget(self.url, 1)
        top.addWidget(reload_button)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._selected)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setMaximumHeight(150)
        self.default_label = QLabel()
        self.default_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.download_button = QPushButton("Download")
        self.default_button = QPushButton("Use as default")
        self.export_button = QPushButton("Export ONNX copy")
        self.cancel_button = QPushButton("Cancel")
        close = QPushButton("Close")
        self.download_button.clicked.connect(self.download)
        self.default_button.clicked.connect(self.use_as_default)
        self.export_button.clicked.connect(self.export_copy)
        self.cancel_button.clicked.connect(self.cancel)
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        for b in (self.download_button, self.default_button, self.export_button, self.cancel_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.details)
        layout.addWidget(self.default_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.resize(860, 560)
        self._show_default()
        self._selected()
        self.reload()

    # -- listing -------------------------------------------------------------
    def reload(self) -> bool:
        """Store the catalogue address and list the models again (in the background)."""
        settings.put(settings.MODELS_URL, self.url.text().strip())
        return self._start("Reading the catalogue…", self._listed,
                           self._engine("HRMNet: list models",
                                        lambda task: list_models(self._python(), task.isCanceled)))

    def _listed(self, rows: object) -> None:
        catalogue = list(rows) if isinstance(rows, list) else []
        self.rows = model_rows(catalogue)
        remember_models(self.rows)
        self.table.setRowCount(len(self.rows))
        for i, row in enumerate(self.rows):
            size = f"{row['size'] / 1e6:.1f} MB" if row.get("size") else ""
            values = [row.get("name"), row.get("format"), size, "yes" if row.get("available") else "—",
                      f"{row['gsd']:g}" if row.get("gsd") else "", row.get("purpose") or ""]
            for j, value in enumerate(values):
                item = QTableWidgetItem(str(value or ""))
                item.setToolTip(describe_row(row))
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        self.status.setText(f"{len(self.rows)} models ({sum(1 for r in self.rows if r.get('available'))} here)")
        self._selected()

    # -- selection and actions -------------------------------------------------
    def selected(self) -> Optional[dict]:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.rows[rows[0].row()] if rows and rows[0].row() < len(self.rows) else None

    def select(self, name: str, fmt: str) -> bool:
        """Select the row of model ``name`` in format ``fmt`` (False when absent)."""
        for i, row in enumerate(self.rows):
            if row.get("name") == name and row.get("format") == fmt:
                self.table.selectRow(i)
                return True
        return False

    def _selected(self) -> None:
        row = self.selected()
        busy = self.task is not None
        self.details.setPlainText(describe_row(row) if row else "Choose a model.")
        here = bool(row and row.get("available"))
        self.download_button.setEnabled(bool(row) and not here and not busy and row.get("catalogue") != "local file")
        self.default_button.setEnabled(here and not busy)
        self.export_button.setEnabled(here and not busy and row.get("format") == "safetensors" and can_export())
        self.export_button.setToolTip(EXPORT_TIP if can_export() else NEEDS_FULL_TIP)
        self.cancel_button.setEnabled(busy)

    def download(self) -> bool:
        row = self.selected()
        if not row:
            return False
        name, fmt = str(row["name"]), str(row["format"])
        return self._start(f"Downloading {name} ({fmt})…", lambda path: self._downloaded(name, fmt, path),
                           self._engine(f"HRMNet: download {name}",
                                        lambda task: download_model(self._python(), name, fmt, task.report,
                                                                    task.isCanceled)))

    def _downloaded(self, name: str, fmt: str, path: object) -> None:
        self.status.setText(f"{name} ({fmt}) is here: {path}")
        self.reload()

    def use_as_default(self) -> bool:
        row = self.selected()
        if not row or not row.get("path"):
            return False
        self.status.setText(set_default_model(str(row["path"])))
        self._show_default()
        return True

    def export_copy(self) -> bool:
        row = self.selected()
        if not row or not row.get("path"):
            return False
        model = str(row["path"])
        return self._start(f"Exporting an ONNX copy of {model}…", self._exported,
                           lambda on_event, on_ended: start_export(model, on_event, on_ended))

    def _exported(self, path: object) -> None:
        self.status.setText(exported_text(path))

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _show_default(self) -> None:
        chosen = settings.get(settings.DEFAULT_MODEL)
        shown = chosen or demo_model() or "none"
        self.default_label.setText(f"Default model: {shown}" + ("" if chosen else " (the bundled demo model)"))

    # -- background work --------------------------------------------------------
    def _python(self) -> str:
        return str(engine_python())

    @staticmethod
    def _engine(description: str, work) -> Callable:
        """A starter for :meth:`_start`: ``work(task)`` as a background task (engine cancellations
        count as "cancelled")."""
        return lambda on_event, on_ended: start_task(description, work, on_event, on_ended,
                                                     cancelled_types=(EngineCancelled,))

    def _start(self, status: str, on_ok, begin: Callable) -> bool:
        """Start one job (``begin(on_event, on_ended)`` returns its task) unless one runs; ``on_ok(result)``."""
        if self.task is not None:
            return False
        self.progress.setValue(0)
        self.status.setText(status)
        self.task = begin(self._on_event, lambda kind, value: self._ended(kind, value, on_ok))
        self._selected()
        return True

    def _on_event(self, event: dict) -> None:
        if event.get("event") == "progress" and event.get("total"):
            self.progress.setValue(int(100 * float(event.get("done") or 0) / float(event["total"])))
        elif event.get("event") == "log" and event.get("message"):
            self.status.setText(str(event["message"]))

    def _ended(self, kind: str, value: object, on_ok) -> None:
        self.task = None
        self._selected()
        if kind == "ok":
            self.progress.setValue(100)
            on_ok(value)
        else:
            self.status.setText(f"{'Cancelled' if kind == 'cancelled' else 'Failed'}: {value}")
