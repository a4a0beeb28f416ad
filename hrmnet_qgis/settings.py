"""The plugin's settings (QgsSettings keys under ``hrmnet/``)."""
from __future__ import annotations

__all__ = ["ENGINE_PYTHON", "ENGINE_KIND", "DEFAULT_MODEL", "MODELS_URL", "MODELS_HERE", "get", "put"]

#: Path of the Python interpreter that runs the engine (set by "Set up engine").
ENGINE_PYTHON = "hrmnet/engine_python"
#: What "Set up engine" installed there: "light" (onnxruntime, no torch) or "full" (empty: not known).
ENGINE_KIND = "hrmnet/engine_kind"
#: Checkpoint proposed as MODEL by the detection algorithm (set by the training dialog).
DEFAULT_MODEL = "hrmnet/default_model"
#: Another model catalogue (an http(s) address or a file), given to the engine as HRMNET_MODELS_URL.
MODELS_URL = "hrmnet/models_url"
#: JSON list of the model files the Models… dialog last found here (offered by the Model fields).
MODELS_HERE = "hrmnet/models_here"


def get(key: str, default: str = "") -> str:
    """The setting ``key`` as a string (``default`` when unset)."""
    from qgis.core import QgsSettings

    value = QgsSettings().value(key, default)
    return "" if value is None else str(value)


def put(key: str, value: str) -> None:
    """Store ``value`` under ``key`` (empty string removes it)."""
    from qgis.core import QgsSettings

    settings = QgsSettings()
    if value:
        settings.setValue(key, str(value))
    else:
        settings.remove(key)
