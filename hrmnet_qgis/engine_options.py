"""The engine's device and precision choices as the plugin shows them, and its events in words.

No QGIS here: the Processing algorithms (:mod:`hrmnet_qgis.algorithms.base`) and the
training dialog both use it (and tests/qt6 builds that dialog under PyQt6 without QGIS).
"""
from __future__ import annotations

from typing import Any

__all__ = ["DEVICES", "PRECISIONS", "DEVICE_LABELS", "PRECISION_LABELS", "describe_start", "short_value"]

#: ``--device`` values, in the order the dialogs list them.
DEVICES = ["auto", "cpu", "cuda"]
#: ``--precision`` values, in the order the dialogs list them.
PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
#: What the dialogs show for DEVICES and PRECISIONS (same order; scripts pass the index).
DEVICE_LABELS = ["automatic (GPU when there is one)", "CPU", "GPU (CUDA)"]
PRECISION_LABELS = ["automatic", "full (fp32)", "fast (bf16)", "half (fp16, GPU only)"]


def describe_start(event: dict) -> str:
    """``device=…, precision=…`` first, then the other scalar fields of a start event."""
    keys = ["device", "precision"] + [k for k in event if k not in ("event", "device", "precision")]
    parts = [f"{k}={short_value(event[k])}" for k in keys if k in event and not isinstance(event[k], (dict, list))]
    return ", ".join(parts)


def short_value(value: Any) -> str:
    """An event field in a log line: floats to 4 significant digits, containers cut at 200 characters."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return str(value)[:200]
    return str(value)
