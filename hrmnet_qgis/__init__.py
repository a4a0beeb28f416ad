"""HRMNet change detection for QGIS (the plugin; runs the engine in a separate process)."""
