"""hrmnet-qgis engine: headless HRMNet change detection (never imports qgis).

Detection flows one way: read -> pair -> tile -> infer -> blend -> write -> vectorize.
Front ends (:mod:`engine.detect` for one scene, :mod:`engine.sheets` for map sheets, reached
through :mod:`engine.cli`) check the request and call the detection core (:mod:`engine.core`:
options, predictors, plan, runner), which runs the stages of :mod:`engine.raster` (pair,
radiometry, tiles, blend, write); :mod:`engine.vector` turns the written mask into polygons.
Calls go down these floors, never back up.
"""
__version__ = "0.1.0"
