"""The training dialog: choose data and options, Start/Stop, live curves, use the best model.

It runs ``python -m engine train`` as a :class:`BackgroundTask` (QGIS stays
responsive). Stop interrupts the engine, which saves its state: Start again with
"Continue the stopped run" resumes exactly where it stopped (``train --resume``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from qgis.core import QgsApplication
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import settings
from ..algorithms.base import DEVICE_LABELS, DEVICES, describe_start
from ..engine_python import EngineSetupError, engine_python
from ..runner import EngineCancelled, EngineRun, run_engine
from .curves import CurvesWidget
from .task import BackgroundTask

__all__ = ["TrainingDialog", "train_args"]


def train_args(data: str, out: str, steps: int, batch_size: int, lr: float, device: str, init: str = "",
               resume: bool = False, val_every: Optional[int] = None, imagenet: bool = False) -> list[str]:
    """``python -m engine train`` options for the dialog's fields (``imagenet``: ``--backbone imagenet``
    when no initial checkpoint is given)."""
    args = ["--data", data, "--out", out, "--steps", str(steps), "--batch-size", str(batch_size),
            "--lr", repr(float(lr)), "--device", device]
    if val_every is not None:
        args += ["--val-every", str(val_every)]
    if init and not resume:
        args += ["--init", init]
    elif imagenet and not resume:
        args += ["--backbone", "imagenet"]
    if resume:
        args.append("--resume")
    return args


class TrainingDialog(QDialog):
    """Non-modal dialog that trains a model and shows loss and validation F1 live."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("HRMNet: train a model")
        self.task: Optional[BackgroundTask] = None
        self.best_model = ""
        self.last_step = 0

        self.data = QgsFileWidget()
        self.data.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.out = QgsFileWidget()
        self.out.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.out.fileChanged.connect(self._out_changed)
        self.steps = QSpinBox()
        self.steps.setRange(1, 10_000_000)
        self.steps.setValue(20000)
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 4096)
        self.batch_size.setValue(8)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(5e-4)
        self.device = QComboBox()
        self.device.addItems(DEVICE_LABELS)  # plain words; DEVICES[index] goes to the engine
        self.init = QgsFileWidget()
        self.init.setFilter("HRMNet checkpoints (*.safetensors *.pth)")
        self.resume = QCheckBox("Continue the stopped run in this folder")
        self.imagenet = QCheckBox("Start from ImageNet weights, as the paper does (downloads 47 MB once)")
        self.imagenet.setChecked(True)
        self.resume.setEnabled(False)

        form = QFormLayout()
        form.addRow("Dataset folder", self.data)
        form.addRow("Output folder", self.out)
        form.addRow("Steps", self.steps)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Learning rate", self.lr)
        form.addRow("Device", self.device)
        form.addRow("Initial checkpoint (optional)", self.init)
        form.addRow("", self.resume)
        form.addRow("", self.imagenet)

        self.curves = CurvesWidget()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)

        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.use_best_button = QPushButton("Use best checkpoint for detection")
        self.use_best_button.setEnabled(False)
        close_button = QPushButton("Close")
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.use_best_button.clicked.connect(self.use_best)
        close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.stop_button, self.use_best_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(close_button)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.curves, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.log, 1)
        layout.addLayout(buttons)
        self.resize(640, 760)

    # State --------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.task is not None

    def _out_changed(self, path: str) -> None:
        resumable = bool(path) and (Path(path) / "state.pt").is_file()
        self.resume.setEnabled(resumable)
        self.resume.setChecked(resumable)

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        for w in (self.data, self.out, self.steps, self.batch_size, self.lr, self.device, self.init, self.resume):
            w.setEnabled(not running)
        if not running:
            self._out_changed(self.out.filePath())

    def _append(self, line: str) -> None:
        self.log.appendPlainText(line)

    # Actions ------------------------------------------------------------------
    def start(self) -> bool:
        """Start training with the fields' values; False (and a message) when it cannot start."""
        if self.running:
            return False
        data, out = self.data.filePath(), self.out.filePath()
        if not data or not out:
            self.status.setText("Choose a dataset folder and an output folder.")
            return False
        try:
            python = engine_python(needs_torch="train")
        except EngineSetupError as exc:
            self.status.setText(str(exc))
            return False
        resume = self.resume.isEnabled() and self.resume.isChecked()
        args = train_args(data, out, self.steps.value(), self.batch_size.value(), self.lr.value(),
                          DEVICES[self.device.currentIndex()], self.init.filePath(), resume,
                          imagenet=self.imagenet.isChecked())
        if not resume:
            self.curves.clear(self.steps.value())
        self.curves.total_steps = self.steps.value()
        self.best_model = ""
        self.use_best_button.setEnabled(False)
        self.progress.setValue(0)
        self._append(f"$ {python} -m engine train {' '.join(args)}")

        def work(task: BackgroundTask) -> EngineRun:
            return run_engine("train", args, python=python, on_event=task.report,
                              on_stderr=lambda line: task.report({"event": "stderr", "message": line}),
                              is_cancelled=task.isCanceled, stop_grace_s=300.0)

        self.task = BackgroundTask("HRMNet training", work, cancelled_types=(EngineCancelled,))
        self.task.reported.connect(self._on_event)
        self.task.ended.connect(self._on_ended)
        self._set_running(True)
        self.status.setText("Training…")
        QgsApplication.taskManager().addTask(self.task)
        return True

    def stop(self) -> None:
        """Stop the engine after its current step; it saves a resumable state."""
        if self.task is not None:
            self.status.setText("Stopping after the current step…")
            self.stop_button.setEnabled(False)
            self.task.cancel()

    def use_best(self) -> None:
        """Make the best checkpoint the default MODEL of 'Detect changes'."""
        if self.best_model:
            settings.put(settings.DEFAULT_MODEL, self.best_model)
            self.status.setText(f"'Detect changes' now proposes {self.best_model} as its model.")

    # Events (main thread) -----------------------------------------------------
    def _on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            step, total = int(event.get("done", 0)), max(int(event.get("total") or 1), 1)
            self.last_step = step
            self.progress.setValue(int(100 * step / total))
            if "loss" in event:
                self.curves.add_loss(step, float(event["loss"]))
        elif kind == "log":
            val = event.get("val")
            if isinstance(val, dict) and isinstance(val.get("f1"), (int, float)):
                self.curves.add_f1(int(event.get("step", self.last_step)), float(val["f1"]))
            prefix = "warning: " if event.get("level") == "warning" else ""
            self._append(prefix + str(event.get("message", "")))
        elif kind == "start":
            self._append("started: " + describe_start(event))
        elif kind in ("stderr", "error"):
            self._append(str(event.get("message", "")))

    def _on_ended(self, kind: str, value: object) -> None:
        self.task = None
        self._set_running(False)
        if kind == "ok" and isinstance(value, EngineRun):
            outputs = value.done.get("outputs") or {}
            stats = value.done.get("stats") or {}
            self.best_model = str(outputs.get("best") or "")
            best = stats.get("best_val") or {}
            self.progress.setValue(100)
            text = f"Finished {stats.get('steps', '?')} steps."
            if best:
                text += f" Best validation F1 {best.get('f1', float('nan')):.4f} at step {stats.get('best_step')}."
            if self.best_model and Path(self.best_model).is_file():
                self.use_best_button.setEnabled(True)
                text += " Use the best checkpoint for detection?"
            self.status.setText(text)
        elif kind == "cancelled":
            self.status.setText(f"Stopped at step {self.last_step}: press Start with 'Continue the stopped run' "
                                "checked to resume.")
        else:
            self.status.setText(f"Training failed: {value}")
