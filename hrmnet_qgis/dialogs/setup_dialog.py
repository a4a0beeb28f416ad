"""The "Set up engine" dialog: create the engine's virtual environment as a QgsTask.

It offers two kinds of engine: "Detection only" (light: onnxruntime, no torch, for exported
``.onnx`` models) and "Detection and training" (PyTorch). It shows the Python the engine really
runs with, the PyTorch or onnxruntime build that will be installed (picked for this computer's
GPU and driver; the user may choose another) with its download size, and a "Test engine"
button that runs ``python -m engine doctor`` with that Python. With the full engine it also
exports an ``.onnx`` copy of a ``.safetensors`` model for the light engine (the engine's
``export``, shared with the *Models…* dialog: :mod:`.onnx_export`) and can make that copy the
default model.
"""
from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

from qgis.core import QgsApplication
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QComboBox,
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
from ..engine_python import can_import_onnxruntime, can_import_torch, engine_python, qgis_python_candidates
from ..models import set_default_model
from ..runner import run_engine
from ..setup_engine import (
    ENGINE_KINDS,
    FULL,
    LIGHT,
    OnnxRuntimeBuild,
    SetupCancelled,
    TorchBuild,
    choose_onnxruntime,
    choose_torch_build,
    create_engine_env,
    default_env_dir,
    describe_engine_python,
    detect_gpu,
    doctor_summary,
    find_torch_wheel,
    onnxruntime_options,
    torch_build_options,
)
from .onnx_export import EXPORT_TIP, NEEDS_FULL_TIP, can_export, default_checkpoint, exported_text, start_export
from .task import BackgroundTask

__all__ = ["SetupEngineDialog"]


class SetupEngineDialog(QDialog):
    """Creates a dedicated environment, installs the engine's requirements, stores it."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("HRMNet: set up engine")
        self.task: Optional[BackgroundTask] = None
        self.task_kind = FULL
        self.test_task: Optional[BackgroundTask] = None
        self.report: Optional[dict] = None
        self.folder = QgsFileWidget()
        self.folder.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.folder.setFilePath(str(default_env_dir(QgsApplication.qgisSettingsDirPath())))
        self.current = QLabel()
        self.current.setWordWrap(True)
        self._show_current()
        intro = QLabel(
            "Creates a separate Python environment for the engine and installs its requirements into it with "
            "pip, with the project's locked versions (every package pinned, with hashes). QGIS's own Python is "
            "not changed. <i>Detection only</i> installs onnxruntime instead of PyTorch (about 0.72 GB on disk, "
            "measured) and runs exported .onnx models "
            "(Detect changes, map sheets); <i>Detection and training</i> installs PyTorch (about 1.6 GB with "
            "the CPU build, several GB with a CUDA build for NVIDIA GPUs) and runs every model and training."
        )
        intro.setWordWrap(True)
        self.kind = QComboBox()
        for kind, label in ENGINE_KINDS:
            self.kind.addItem(label, kind)
        self.kind.setCurrentIndex(self.kind.findData(FULL))
        self.build = QComboBox()
        self.runtime = QComboBox()
        self.build_note = QLabel()
        self.build_note.setWordWrap(True)
        self._fill_builds()
        self.build.currentIndexChanged.connect(self._show_build)
        self.runtime.currentIndexChanged.connect(self._show_build)
        self.kind.currentIndexChanged.connect(self._kind_changed)
        form = QFormLayout()
        form.addRow("Engine", self.kind)
        form.addRow("Environment folder", self.folder)
        form.addRow("PyTorch build", self.build)
        form.addRow("onnxruntime build", self.runtime)
        form.addRow("", self.build_note)
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
        self.test_button = QPushButton("Test engine")
        self.test_button.setToolTip("Run python -m engine doctor with the engine's Python: device, torch, CUDA")
        existing = QPushButton("Use an existing Python…")
        self.export_task: Optional[BackgroundTask] = None
        self.exported = ""
        self.export_button = QPushButton("Export ONNX copy of a model…")
        self.use_copy_button = QPushButton("Use the copy as default model")
        self.use_copy_button.setEnabled(False)
        self.use_copy_button.setToolTip("Detect changes and Map sheets then propose the ONNX copy just written")
        self.export_button.clicked.connect(self.choose_export)
        self.use_copy_button.clicked.connect(self.use_copy_as_default)
        close = QPushButton("Close")
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.test_button.clicked.connect(self.test_engine)
        existing.clicked.connect(self.choose_existing)
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.cancel_button, self.test_button, existing):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(close)
        export_row = QHBoxLayout()
        export_row.addWidget(self.export_button)
        export_row.addWidget(self.use_copy_button)
        export_row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.log, 1)
        layout.addLayout(export_row)
        layout.addLayout(buttons)
        self.resize(640, 520)
        self.log_path: Optional[Path] = None
        self._show_export()

    def _show_current(self) -> None:
        self.current.setText(describe_engine_python(settings.get(settings.ENGINE_PYTHON), os.environ,
                                                    qgis_python_candidates(), can_import_torch))

    def _fill_builds(self) -> None:
        """The automatic choice for this computer first, then every build by hand (PyTorch and onnxruntime)."""
        gpu, note = detect_gpu()
        local = find_torch_wheel(os.environ.get("PIP_FIND_LINKS", "").split(), sys.version_info[:2])
        auto = choose_torch_build(gpu, note, local_wheel=local)
        self.build.addItem(f"Automatic: {auto.label}", auto)
        for option in torch_build_options(gpu):
            self.build.addItem(option.label, option)
        runtime = choose_onnxruntime(gpu, note)
        self.runtime.addItem(f"Automatic: {runtime.label}", runtime)
        for option in onnxruntime_options():
            self.runtime.addItem(option.label, option)
        self._show_build()

    def chosen_kind(self) -> str:
        """:data:`~hrmnet_qgis.setup_engine.LIGHT` or :data:`~hrmnet_qgis.setup_engine.FULL`."""
        return self.kind.currentData() or FULL

    def _kind_changed(self) -> None:
        """Show the builds of the chosen kind; a default folder follows the kind (a chosen one stays)."""
        profile = QgsApplication.qgisSettingsDirPath()
        defaults = {str(default_env_dir(profile, k)) for k, _ in ENGINE_KINDS}
        if self.folder.filePath() in defaults:
            self.folder.setFilePath(str(default_env_dir(profile, self.chosen_kind())))
        self._show_build()

    def _show_build(self) -> None:
        light = self.chosen_kind() == LIGHT
        self.build.setEnabled(not light)
        self.runtime.setEnabled(light)
        choice = self.runtime.currentData() if light else self.build.currentData()
        if choice is None:
            return
        text = f"Download: {choice.size}."
        if choice.reason and choice.reason != "chosen by hand":
            text += f" Why: {choice.reason}."
        if getattr(choice, "index_url", None):
            text += f" From {choice.index_url}."
        if light:
            text += f" Installs {choice.package} (no torch): detection with .onnx models only."
        self.build_note.setText(text)

    def chosen_build(self) -> Optional[TorchBuild]:
        """The build picked in the list (None: automatic, decided again where the environment is made)."""
        return None if self.build.currentIndex() == 0 else self.build.currentData()

    def chosen_runtime(self) -> Optional[OnnxRuntimeBuild]:
        """The onnxruntime build picked for the light engine (None: automatic)."""
        return None if self.runtime.currentIndex() == 0 else self.runtime.currentData()

    def _append(self, line: str) -> None:
        self.log.appendPlainText(line)
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def start(self) -> bool:
        """Start creating the environment in the chosen folder (not while an export uses the engine)."""
        if self.task is not None or self.export_task is not None:
            return False
        folder = Path(self.folder.filePath())
        if not self.folder.filePath():
            self.status.setText("Choose a folder for the environment.")
            return False
        folder.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = folder.parent / f"{folder.name}-setup.log"
        self._append(f"--- {datetime.now().isoformat(timespec='seconds')} set up {folder}")

        build, kind, runtime = self.chosen_build(), self.chosen_kind(), self.chosen_runtime()
        self.report = None

        def work(task: BackgroundTask) -> str:
            return str(create_engine_env(
                folder,
                log=lambda line: task.report({"event": "log", "message": line}),
                progress=lambda f: task.report({"event": "progress", "done": int(1000 * f), "total": 1000}),
                is_cancelled=task.isCanceled,
                torch_build=build,
                on_report=lambda report: task.report({"event": "report", "report": report}),
                kind=kind,
                onnx_build=runtime,
            ))

        self.task = BackgroundTask("HRMNet: set up engine", work, cancelled_types=(SetupCancelled,))
        self.task_kind = kind
        self.task.reported.connect(self._on_event)
        self.task.ended.connect(self._on_ended)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._show_export()
        self.status.setText(f"Setting up (log: {self.log_path})…")
        QgsApplication.taskManager().addTask(self.task)
        return True

    def cancel(self) -> None:
        for task in (self.task, self.export_task):
            if task is not None:
                task.cancel()

    # -- ONNX copy of a checkpoint (full engine) ---------------------------------
    def _show_export(self) -> None:
        """Export only with an engine that has torch, and while nothing else changes the engine."""
        full = can_export()
        self.export_button.setEnabled(full and self.task is None and self.export_task is None)
        self.export_button.setToolTip(EXPORT_TIP if full else NEEDS_FULL_TIP)

    def choose_export(self) -> bool:
        """Pick a ``.safetensors`` model (the default model when it is one) and export its ONNX copy."""
        path, _ = QFileDialog.getOpenFileName(self, "Model to copy as ONNX (for the light engine)",
                                              default_checkpoint(), "PyTorch checkpoints (*.safetensors)")
        return self.export_model(path) if path else False

    def export_model(self, model: str) -> bool:
        """Start ``export MODEL MODEL.onnx`` with the engine's Python (the copy goes beside ``model``)."""
        if self.export_task is not None or not can_export():
            return False
        if not model.lower().endswith(".safetensors"):
            self.status.setText(f"{model}: choose a .safetensors model (an .onnx one needs no copy)")
            return False
        self.exported = ""
        self.use_copy_button.setEnabled(False)
        self._append(f"--- export an ONNX copy of {model}")
        self.export_task = start_export(model, self._on_event, self._on_exported)
        self.progress.setRange(0, 0)  # busy: the export reports lines, not a fraction
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._show_export()
        self.status.setText(f"Exporting an ONNX copy of {model}…")
        return True

    def _on_exported(self, kind: str, value: object) -> None:
        self.export_task = None
        self.progress.setRange(0, 100)
        self.progress.setValue(100 if kind == "ok" else 0)
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self._show_export()
        if kind == "ok":
            self.exported = str(value)
            self.use_copy_button.setEnabled(True)
            self.status.setText(exported_text(value))
        else:
            self.status.setText(f"Export {'cancelled' if kind == 'cancelled' else 'failed'}: {value}")

    def use_copy_as_default(self) -> bool:
        """Make the ONNX copy just written the default model (as *Models…* "Use as default")."""
        if not self.exported:
            return False
        self.status.setText(set_default_model(self.exported))
        return True

    def test_engine(self) -> bool:
        """Run ``python -m engine doctor`` with the engine's Python; show device, torch, CUDA, precision."""
        if self.test_task is not None:
            return False
        try:
            python = engine_python()
        except Exception as exc:  # EngineSetupError: say what to do
            self.status.setText(str(exc))
            return False
        self.report = None
        self._append(f"--- test engine: {python} -m engine doctor")

        def work(task: BackgroundTask) -> dict:
            got: dict = {}

            def on_event(event: dict) -> None:
                if event.get("event") == "done":
                    got.update(event.get("stats") or {})
                    task.report({"event": "report", "report": got})
                elif event.get("message"):
                    task.report({"event": "log", "message": str(event["message"])})

            try:
                run_engine("doctor", [], python=python, on_event=on_event, is_cancelled=task.isCanceled)
            except Exception:
                if not got:
                    raise
            return got

        self.test_task = BackgroundTask("HRMNet: test engine", work)
        self.test_task.reported.connect(self._on_event)
        self.test_task.ended.connect(self._on_tested)
        self.test_button.setEnabled(False)
        self.status.setText(f"Testing the engine ({python})…")
        QgsApplication.taskManager().addTask(self.test_task)
        return True

    def _on_tested(self, kind: str, value: object) -> None:
        self.test_task = None
        self.test_button.setEnabled(True)
        if kind == "ok" and isinstance(value, dict):
            verdict = "Engine OK" if value.get("ok") else "Engine problem"
            self.status.setText(f"{verdict}: {doctor_summary(value)}")
        else:
            self.status.setText(f"Engine test failed: {value}")

    def choose_existing(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Python interpreter with the engine's requirements")
        if path:
            settings.put(settings.ENGINE_PYTHON, path)
            settings.put(settings.ENGINE_KIND, "")  # not known: the engine says what it lacks
            self._show_current()
            self._show_export()

    def _on_event(self, event: dict) -> None:
        if event.get("event") == "progress":
            self.progress.setValue(int(100 * event["done"] / max(event["total"], 1)))
        elif event.get("event") == "report":
            self.report = dict(event["report"])
            for check in self.report.get("checks", []):
                mark = "ok  " if check.get("ok") else "FAIL"
                self._append(f"{mark} {check.get('name')}: {check.get('value')}")
        elif event.get("message"):
            self._append(str(event["message"]))

    def _on_ended(self, kind: str, value: object) -> None:
        self.task = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if kind == "ok":
            settings.put(settings.ENGINE_PYTHON, str(value))
            settings.put(settings.ENGINE_KIND, getattr(self, "task_kind", FULL))
            can_import_torch.cache_clear()  # the interpreter may have been probed before it had its packages
            can_import_onnxruntime.cache_clear()
            # No provider refresh (it would collapse the toolbox's HRMNet group): every dialog, batch
            # or script creates a fresh algorithm, whose default model follows the kind just set.
            self.progress.setValue(100)
            summary = f" It will use: {doctor_summary(self.report)}." if self.report else ""
            self.status.setText(f"Ready: the engine runs with {value}.{summary}")
        elif kind == "cancelled":
            self.status.setText("Cancelled; the incomplete environment was removed.")
        else:
            self.status.setText(f"Set-up failed: {value} (details in {self.log_path})")
        self._show_current()
        self._show_export()

