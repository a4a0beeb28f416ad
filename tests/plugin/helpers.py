"""Shared helpers of the plugin tests (QGIS only; never the engine's libraries)."""
from __future__ import annotations

import time
from pathlib import Path


def wait_until(predicate, timeout_s: float = 600.0) -> bool:
    """Process Qt events until ``predicate()`` holds or ``timeout_s`` passed; its last value."""
    from qgis.PyQt.QtCore import QCoreApplication

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        QCoreApplication.processEvents()
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def detect_params(scene, model_path, threshold: float, out_dir: Path, **extra) -> dict:
    """Parameters of hrmnet:detectchanges for one synthetic scene (128 px tiles, CPU)."""
    before, after, _ = scene
    params = {"BEFORE": str(before), "AFTER": str(after), "MODEL": str(model_path), "THRESHOLD": threshold,
              "TILE_SIZE": 128, "OVERLAP": 32, "DEVICE": 1, "OUTPUT_POLYGONS": str(out_dir / "changes.shp")}
    params.update(extra)
    return params
