"""HRMNet change detection for QGIS (the plugin; runs the engine in a separate process)."""
from __future__ import annotations


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    """QGIS entry point: the plugin object (no heavy import happens here)."""
    from .plugin import HrmnetPlugin

    return HrmnetPlugin(iface)
