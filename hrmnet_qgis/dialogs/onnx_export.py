""""Export ONNX copy" in the dialogs (*Models…* and *Set up engine*): one action, shared.

The copy is the engine's own ``export MODEL MODEL.onnx`` (:func:`hrmnet_qgis.models.export_onnx_copy`),
run with the engine's Python in a :class:`~hrmnet_qgis.dialogs.task.BackgroundTask`. It needs
torch, so it is offered only when the engine set up is not the light one. Written for Qt5 and Qt6.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .. import settings
from ..engine_python import engine_python
from ..models import export_onnx_copy
from ..runner import EngineCancelled
from ..setup_engine import LIGHT
from .task import BackgroundTask, start_task

__all__ = ["EXPORT_TIP", "NEEDS_FULL_TIP", "can_export", "default_checkpoint", "start_export", "exported_text"]

#: Tooltip of an enabled export button.
EXPORT_TIP = ("python -m engine export: an .onnx copy of a .safetensors model, beside it, for the light engine "
              "(needs the full engine)")
#: Tooltip of the button when the engine set up is the light one.
NEEDS_FULL_TIP = ("Needs the full engine (Detection and training, with PyTorch): the light engine has no torch "
                  "to export with. Set up the full engine, or export on a computer that has it.")


def can_export() -> bool:
    """Whether the engine set up can export: not the light one (an engine of unknown kind is tried)."""
    return settings.get(settings.ENGINE_KIND) != LIGHT


def default_checkpoint() -> str:
    """The default model when it is a ``.safetensors`` file that exists, else ''."""
    model = settings.get(settings.DEFAULT_MODEL)
    return model if model.lower().endswith(".safetensors") and Path(model).is_file() else ""


def start_export(model: str, on_event: Callable[[dict], None],
                 on_ended: Callable[[str, object], None]) -> BackgroundTask:
    """Start ``export MODEL MODEL.onnx`` in the background; ``on_ended("ok", path of the copy)``
    (or ``"cancelled"``/``"error"`` with a message) in the main thread."""
    return start_task("HRMNet: export ONNX copy",
                      lambda task: export_onnx_copy(str(engine_python()), model, task.report, task.isCanceled),
                      on_event, on_ended, cancelled_types=(EngineCancelled,))


def exported_text(path: object) -> str:
    """What the dialogs say once the copy is written."""
    return f"ONNX copy written: {path} (the light engine runs it; 'Use as default' to propose it)"
