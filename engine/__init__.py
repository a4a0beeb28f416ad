"""hrmnet-qgis engine: headless HRMNet change detection (never imports qgis)."""
__version__ = "0.1.0"
