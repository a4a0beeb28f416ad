"""The "Set up engine" dialog: create the engine's virtual environment as a QgsTask."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

from qgis.core import QgsApplication
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .. import settings
from ..setup_engine import SetupCancelled, create_engine_env, default_env_dir
from .task import BackgroundTask

__all__ = ["SetupEngineDialog"]


class SetupEngineDialog(QDialog):
    """Creates a dedicated environment, installs the engine's requirements, stores it."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("HRMNet: set up engine")
        self.task: Optional[BackgroundTask] = None
        self.folder = QgsFileWidget()
        self.folder.setStorageMode(QgsFileWidget.GetDirectory)
        self.folder.setFilePath(str(default_env_dir(QgsApplication.qgisSettingsDirPath())))
        self.current = QLabel()
        self.current.setWordWrap(True)
        self._show_current()
        intro = QLabel(
            "Creates a separate Python environment for the engine and installs its requirements (PyTorch, "
            "rasterio, GeoPandas, …) into it with pip. QGIS's own Python is not changed. The first run "
            "downloads several hundred MB."
        )
        intro.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Environment folder", self.folder)
        form.addRow("Engine Python now", self.current)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(20000)
        self.start_button = QPushButton("Set up")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        existing = QPushButton("Use an existing Python…")
        close = QPushButton("Close")
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        existing.clicked.connect(self.choose_existing)
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.cancel_button, existing):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.log, 1)
        layout.addLayout(buttons)
        self.resize(640, 520)
        self.log_path: Optional[Path] = None

    def _show_current(self) -> None:
        self.current.setText(settings.get(settings.ENGINE_PYTHON) or "(not set: HRMNET_PYTHON or QGIS's Python)")

    def _append(self, line: str) -> None:
        self.log.appendPlainText(line)
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def start(self) -> bool:
        """Start creating the environment in the chosen folder."""
        if self.task is not None:
            return False
        folder = Path(self.folder.filePath())
        if not self.folder.filePath():
            self.status.setText("Choose a folder for the environment.")
            return False
        folder.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = folder.parent / f"{folder.name}-setup.log"
        self._append(f"--- {datetime.now().isoformat(timespec='seconds')} set up {folder}")

        def work(task: BackgroundTask) -> str:
            return str(create_engine_env(
                folder,
                log=lambda line: task.report({"event": "log", "message": line}),
                progress=lambda f: task.report({"event": "progress", "done": int(1000 * f), "total": 1000}),
                is_cancelled=task.isCanceled,
            ))

        self.task = BackgroundTask("HRMNet: set up engine", work, cancelled_types=(SetupCancelled,))
        self.task.reported.connect(self._on_event)
        self.task.ended.connect(self._on_ended)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"Setting up (log: {self.log_path})…")
        QgsApplication.taskManager().addTask(self.task)
        return True

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def choose_existing(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Python interpreter with the engine's requirements")
        if path:
            settings.put(settings.ENGINE_PYTHON, path)
            self._show_current()

    def _on_event(self, event: dict) -> None:
        if event.get("event") == "progress":
            self.progress.setValue(int(100 * event["done"] / max(event["total"], 1)))
        else:
            self._append(str(event.get("message", "")))

    def _on_ended(self, kind: str, value: object) -> None:
        self.task = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if kind == "ok":
            settings.put(settings.ENGINE_PYTHON, str(value))
            self.progress.setValue(100)
            self.status.setText(f"Ready: the engine runs with {value}.")
        elif kind == "cancelled":
            self.status.setText("Cancelled; the incomplete environment was removed.")
        else:
            self.status.setText(f"Set-up failed: {value} (details in {self.log_path})")
        self._show_current()
