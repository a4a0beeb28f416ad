"""The training dialog: the whole flow from layers to a model that detection uses.

1. *Data*: Before/After rasters of the project, change labels or two building-footprint
   layers, and the area where the labels are complete → **Prepare** (``engine prepare``,
   through the *Prepare a training dataset* algorithm's own parameter mapping). Or an
   existing dataset folder.
2. *Train*: from the ImageNet backbone by default, or a model of the catalogue, a model
   that is here or a file (:class:`.start_from.StartFrom`); live loss and validation F1 curves. Stop interrupts the engine, which saves its state: Start again with "Continue
   the stopped run" resumes exactly where it stopped (``train --resume``).
3. **Evaluate** the best model on the held-out part (the test split, else validation).
4. **Use this model**: the default model of *Detect changes*.

Each engine run is a :class:`BackgroundTask` (QGIS stays responsive); one at a time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException, QgsProject
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtGui import QTextCursor
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
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
from ..engine_options import DEVICE_LABELS, DEVICES, describe_start
from ..engine_python import EngineSetupError, engine_python
from ..model_info import read_model_info
from ..runner import EngineCancelled, EngineRun, run_engine
from .curves import CurvesWidget
from .start_from import StartFrom
from .task import BackgroundTask
from .training_data import DataSection

__all__ = ["TrainingDialog", "train_args", "heldout_split", "run_finished"]


def train_args(data: str, out: str, steps: int, batch_size: int, lr: float, device: str, init: str = "",
               resume: bool = False, val_every: Optional[int] = None, imagenet: bool = False,
               crop: Optional[int] = None) -> list[str]:
    """``python -m engine train`` options for the dialog's fields (``imagenet``: ``--backbone imagenet``
    when no initial checkpoint is given)."""
    args = ["--data", data, "--out", out, "--steps", str(steps), "--batch-size", str(batch_size),
            "--lr", repr(float(lr)), "--device", device]
    if val_every is not None:
        args += ["--val-every", str(val_every)]
    if crop is not None:
        args += ["--crop", str(crop)]
    if init and not resume:
        args += ["--init", init]
    elif imagenet and not resume:
        args += ["--backbone", "imagenet"]
    if resume:
        args.append("--resume")
    return args


def heldout_split(data: str) -> str:
    """The split to evaluate on: ``test`` when its list names tiles, else ``val`` ('' when neither)."""
    for split in ("test", "val"):
        listed = Path(data) / split / "list" / f"{split}.txt"
        if listed.is_file() and listed.read_text(errors="replace").strip():
            return split
    return ""


def run_finished(out: str) -> bool:
    """True when the run in ``out`` reached its last step (its last checkpoint says so)."""
    info = read_model_info(str(Path(out) / "last.safetensors")) or {}
    training = info.get("training") if isinstance(info.get("training"), dict) else {}
    step, steps = training.get("step"), training.get("steps")
    return isinstance(step, int) and isinstance(steps, int) and step >= steps


class TrainingDialog(QDialog):
    """Non-modal dialog: prepare, train (loss and validation F1 live), evaluate, use the model."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("HRMNet: train a model on your area")
        self.task: Optional[BackgroundTask] = None
        self.stage = ""
        self.best_model = ""
        self.last_step = 0
        self._errors: set[str] = set()
        self._build_fields()
        self._build_layout()

    # Building -----------------------------------------------------------------
    def _build_fields(self) -> None:
        self.source = DataSection()
        self.prepare_button = QPushButton("Prepare the dataset")
        self.prepare_button.clicked.connect(self.prepare)
        self.data = QgsFileWidget()
        self.data.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.out = QgsFileWidget()
        self.out.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.out.fileChanged.connect(self._out_changed)
        self.steps = _spin(1, 10_000_000, 20000)
        self.batch_size = _spin(1, 4096, 8)
        self.crop = _spin(32, 4096, 512, step=32)
        self.val_every = _spin(0, 10_000_000, 1000)
        self.val_every.setSpecialValueText("at the end only")
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(5e-4)
        self.device = QComboBox()
        self.device.addItems(DEVICE_LABELS)  # plain words; DEVICES[index] goes to the engine
        self.start_from = StartFrom()
        self.resume = QCheckBox("Continue the stopped run in this folder")
        self.resume.setEnabled(False)
        self.resume.toggled.connect(lambda _on: self._sync_start_from())
        self.curves = CurvesWidget()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.start_button = QPushButton("Start training")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.evaluate_button = QPushButton("Evaluate on the held-out part")
        self.evaluate_button.setEnabled(False)
        self.use_best_button = QPushButton("Use this model for detection")
        self.use_best_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.evaluate_button.clicked.connect(self.evaluate)
        self.use_best_button.clicked.connect(self.use_best)

    def _build_layout(self) -> None:
        data_box = QGroupBox("1. Data: prepare a dataset from layers of the project (or choose a dataset folder below)")
        data_layout = QVBoxLayout(data_box)
        data_layout.addWidget(self.source)
        data_layout.addWidget(self.prepare_button)
        form = QFormLayout()
        for label, widget in (("Dataset folder", self.data), ("Run folder", self.out), ("Steps", self.steps),
                              ("Batch size", self.batch_size), ("Crop size (px)", self.crop),
                              ("Validate every (steps)", self.val_every), ("Learning rate", self.lr),
                              ("Device", self.device), ("Start from", self.start_from), ("", self.resume)):
            form.addRow(label, widget)
        train_box = QGroupBox("2. Train")
        train_box.setLayout(form)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.stop_button, self.evaluate_button, self.use_best_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        close_button = QPushButton("Close")
        close_button.clicked.connect(self.close)
        buttons.addWidget(close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(data_box)
        layout.addWidget(train_box)
        layout.addWidget(self.curves, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.log, 1)
        layout.addLayout(buttons)
        self.resize(720, 980)

    # State --------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.task is not None

    def _out_changed(self, path: str) -> None:
        """A stopped run in the folder can be continued (checked); a finished one cannot."""
        resumable = bool(path) and (Path(path) / "state.pt").is_file() and not run_finished(path)
        self.resume.setEnabled(resumable)
        self.resume.setChecked(resumable)
        self._sync_start_from()

    def _sync_start_from(self) -> None:
        """A continued run keeps its own weights: *Start from* is off while "Continue" is checked."""
        self.start_from.setEnabled(not self.running and not (self.resume.isEnabled() and self.resume.isChecked()))

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.prepare_button.setEnabled(not running)
        self.evaluate_button.setEnabled(not running and bool(self._model_to_evaluate()))
        for w in [self.data, self.out, self.steps, self.batch_size, self.crop, self.val_every, self.lr, self.device,
                  self.start_from, self.resume] + self.source.widgets():
            w.setEnabled(not running)
        if not running:
            self._out_changed(self.out.filePath())

    def _append(self, line: str) -> None:
        """A log line; the view follows the end."""
        self.log.appendPlainText(line)
        self.log.moveCursor(QTextCursor.MoveOperation.End)
        self.log.ensureCursorVisible()

    def _model_to_evaluate(self) -> str:
        if self.best_model and Path(self.best_model).is_file():
            return self.best_model
        out = self.out.filePath()
        best = Path(out) / "best.safetensors" if out else None
        return str(best) if best is not None and best.is_file() else ""

    # Actions ------------------------------------------------------------------
    def _launch(self, stage: str, command: str, args: list[str], python: str, title: str) -> None:
        """Run ``python -m engine COMMAND ARGS`` as a background task; events reach :meth:`_on_event`."""
        self._append(f"$ {python} -m engine {command} {' '.join(args)}")
        self._errors.clear()
        self.progress.setValue(0)

        def work(task: BackgroundTask) -> EngineRun:
            return run_engine(command, args, python=python, on_event=task.report,
                              on_stderr=lambda line: task.report({"event": "stderr", "message": line}),
                              is_cancelled=task.isCanceled, stop_grace_s=300.0)

        self.stage = stage
        self.task = BackgroundTask(title, work, cancelled_types=(EngineCancelled,))
        self.task.reported.connect(self._on_event)
        self.task.ended.connect(self._on_ended)
        self._set_running(True)
        QgsApplication.taskManager().addTask(self.task)

    def _python(self, needs_torch: str) -> str:
        """The engine interpreter, or '' (and the reason in the status line)."""
        try:
            return engine_python(needs_torch=needs_torch)
        except EngineSetupError as exc:
            self.status.setText(str(exc))
            return ""

    def prepare(self) -> bool:
        """Prepare a dataset from the data fields into the dataset folder; False when it cannot start."""
        if self.running:
            return False
        missing = self.source.missing() or ("" if self.data.filePath() else "Choose a dataset folder to write.")
        if missing:
            self.status.setText(missing)
            return False
        context = QgsProcessingContext()
        context.setProject(QgsProject.instance())
        try:
            args, _ = _prepare_algorithm().engine_args(self.source.parameters(self.data.filePath()), context)
        except QgsProcessingException as exc:
            self.status.setText(str(exc))
            return False
        python = self._python("")
        if not python:
            return False
        self.status.setText("Preparing the dataset…")
        self._launch("prepare", "prepare", args, python, "HRMNet: prepare a training dataset")
        return True

    def start(self) -> bool:
        """Start training with the fields' values; False (and a message) when it cannot start."""
        if self.running:
            return False
        data, out = self.data.filePath(), self.out.filePath()
        if not data or not out:
            self.status.setText("Choose a dataset folder and a run folder.")
            return False
        python = self._python("train")
        if not python:
            return False
        resume = self.resume.isEnabled() and self.resume.isChecked()
        init, imagenet = self.start_from.choice()
        args = train_args(data, out, self.steps.value(), self.batch_size.value(), self.lr.value(),
                          DEVICES[self.device.currentIndex()], init, resume, val_every=self.val_every.value(),
                          imagenet=imagenet, crop=self.crop.value())
        if not resume:
            self.curves.clear(self.steps.value())
        self.curves.total_steps = self.steps.value()
        self.best_model = ""
        self.use_best_button.setEnabled(False)
        self.status.setText("Training…")
        self._launch("train", "train", args, python, "HRMNet training")
        return True

    def evaluate(self) -> bool:
        """Score the best model on the held-out split of the dataset; False when it cannot start."""
        if self.running:
            return False
        data, model = self.data.filePath(), self._model_to_evaluate()
        split = heldout_split(data) if data else ""
        if not model or not split:
            self.status.setText("Evaluation needs a trained model and a dataset with a test or validation split.")
            return False
        python = self._python("evaluate")
        if not python:
            return False
        self.status.setText(f"Evaluating on the {split} split…")
        args = ["--data", data, "--split", split, "--model", model, "--device", DEVICES[self.device.currentIndex()]]
        self._launch("evaluate", "evaluate", args, python, "HRMNet: evaluate a model")
        return True

    def stop(self) -> None:
        """Stop the engine (training: after its current step; it saves a resumable state)."""
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
            self.progress.setValue(int(100 * step / total))
            if event.get("stage") == "train":  # prepare and evaluate report tiles
                self.last_step = step
                if "loss" in event:
                    self.curves.add_loss(step, float(event["loss"]))
        elif kind == "log":
            val = event.get("val")  # training's validation only
            if isinstance(val, dict) and isinstance(val.get("f1"), (int, float)):
                self.curves.add_f1(int(event.get("step", self.last_step)), float(val["f1"]))
            prefix = "warning: " if event.get("level") == "warning" else ""
            self._append(prefix + str(event.get("message", "")))
        elif kind == "start":
            self._append("started: " + describe_start(event))
        elif kind == "error":
            message = str(event.get("message", ""))
            self._errors.add(message)
            self._append(f"error: {message}")
        elif kind == "stderr":
            line = str(event.get("message", ""))
            if line.removeprefix("error: ") not in self._errors:  # the engine says its error twice
                self._append(line)

    def _on_ended(self, kind: str, value: object) -> None:
        self.task = None
        stage, self.stage = self.stage, ""
        ended: dict[str, Callable[[EngineRun], None]] = {
            "prepare": self._prepared, "train": self._trained, "evaluate": self._evaluated}
        if kind == "ok" and isinstance(value, EngineRun):
            self.progress.setValue(100)
            ended[stage](value)
        elif kind == "cancelled":
            self.status.setText(f"Stopped at step {self.last_step}: press Start with 'Continue the stopped run' "
                                "checked to resume." if stage == "train" else "Stopped.")
        else:
            self.status.setText(f"{stage.capitalize()} failed: {value}")
        self._set_running(False)

    def _prepared(self, run: EngineRun) -> None:
        stats = run.done.get("stats") or {}
        counts = ", ".join(f"{sp} {(stats.get(sp) or {}).get('tiles', 0)}" for sp in ("train", "val", "test"))
        self.status.setText(f"Dataset prepared in {self.data.filePath()} (tiles: {counts}). Choose a run folder "
                            "and start training.")

    def _trained(self, run: EngineRun) -> None:
        outputs = run.done.get("outputs") or {}
        stats = run.done.get("stats") or {}
        self.best_model = str(outputs.get("best") or "")
        best = stats.get("best_val") or {}
        text = f"Finished {stats.get('steps', '?')} steps."
        if best:
            text += f" Best validation F1 {best.get('f1', float('nan')):.4f} at step {stats.get('best_step')}."
        if self.best_model and Path(self.best_model).is_file():
            self.use_best_button.setEnabled(True)
            text += " Evaluate it on the held-out part, or use it for detection."
        self.status.setText(text)

    def _evaluated(self, run: EngineRun) -> None:
        stats = run.done.get("stats") or {}
        m = stats.get("metrics") or {}
        if not m:
            self.status.setText("The evaluation reported no metrics.")
            return
        text = (f"{stats.get('split', 'held-out')} split, {stats.get('tiles', '?')} tiles: F1 {m['f1']:.4f}, "
                f"kappa {m['kappa']:.4f}, IoU {m['iou']:.4f}, precision {m['precision']:.4f}, "
                f"recall {m['recall']:.4f}")
        self._append(text)
        self.status.setText(text)
        if self.best_model:
            self.use_best_button.setEnabled(True)


def _spin(low: int, high: int, value: int, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    return box


def _prepare_algorithm():
    """*Prepare a training dataset*, from the registry (or made here when the provider is not loaded)."""
    alg = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:preparedataset")
    if alg is None:
        from ..algorithms.prepare import PrepareDataset

        alg = PrepareDataset().create()
    return alg
