"""Raster stages of detection, in flow order: read and pair the dates (:mod:`.pair`), scale
their bands (:mod:`.radiometry`), cut the area into overlapping tiles (:mod:`.tiles`), blend
the predicted tiles (:mod:`.blend`), write GeoTIFF strips (:mod:`.write`). The tile runner
(:mod:`engine.core.runner`) calls them; none of them knows about models or front ends."""
