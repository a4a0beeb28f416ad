"""The plugin's dialogs (imported only when a menu action opens one)."""
from __future__ import annotations

__all__ = ["TrainingDialog", "SetupEngineDialog", "ModelsDialog"]


def __getattr__(name: str):
    if name == "TrainingDialog":
        from .training_dialog import TrainingDialog

        return TrainingDialog
    if name == "SetupEngineDialog":
        from .setup_dialog import SetupEngineDialog

        return SetupEngineDialog
    if name == "ModelsDialog":
        from .models_dialog import ModelsDialog

        return ModelsDialog
    raise AttributeError(name)
