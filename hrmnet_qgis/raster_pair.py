"""Which two rasters of the project the detection dialog preselects as Before and After.

Layers this plugin loaded (its outputs) carry the custom property :data:`OUTPUT_PROPERTY`
and are never proposed. Of the other rasters, highest in the *Layers* panel first (QGIS adds
new layers on top), the first two that overlap and have the same number of bands are
proposed, ordered by :func:`before_after`; otherwise nothing is (the user chooses).

:func:`raster_pair` is the choice (toolbar action and dialog alike);
:func:`preselect_in_dialog` applies it to the Processing dialog's Before/After widgets,
also when the dialog was opened from the toolbox (QGIS would propose the active layer,
often one of our outputs).
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

from qgis.core import (
    QgsCoordinateTransform,
    QgsCsException,
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingParameterRasterLayer,
    QgsProject,
    QgsRasterLayer,
)

from .compat import LAYER_RASTER

__all__ = ["OUTPUT_PROPERTY", "mark_as_output", "is_output", "before_after", "raster_pair", "preselect_in_dialog"]

#: Layer custom property set on every layer this plugin loads (value: the output's style name).
OUTPUT_PROPERTY = "hrmnet/output"

_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})(?:[-_.]?(\d{2}))?(?:[-_.]?(\d{2}))?(?!\d)")


def mark_as_output(layer: QgsMapLayer, kind: str) -> None:
    """Mark ``layer`` as an output of this plugin (saved with the project)."""
    layer.setCustomProperty(OUTPUT_PROPERTY, kind or "output")


def is_output(layer: QgsMapLayer) -> bool:
    """Whether this plugin loaded ``layer`` (see :func:`mark_as_output`)."""
    return bool(layer.customProperty(OUTPUT_PROPERTY, ""))


def before_after(names: Sequence[str]) -> tuple[int, int]:
    """Which of two layer names is Before and which After: ``(before, after)`` indices.

    ``names[0]`` is the most recently added layer. A date in both names (``2015``,
    ``2021-06-30``, ``20210630``) decides when they differ, else the words before/after,
    else the more recent layer is After.
    """
    dates = [_DATE.search(n) for n in names]
    if all(dates):
        keys = [tuple(int(g or 0) for g in d.groups()) for d in dates]  # type: ignore[union-attr]
        if keys[0] != keys[1]:
            return (0, 1) if keys[0] < keys[1] else (1, 0)
    words = [n.lower() for n in names]
    if "before" in words[0] and "before" not in words[1] or "after" in words[1] and "after" not in words[0]:
        return 0, 1
    return 1, 0


def _overlap(a: QgsRasterLayer, b: QgsRasterLayer, project: QgsProject) -> bool:
    """Whether the extents of ``a`` and ``b`` intersect (``b`` taken into ``a``'s CRS)."""
    extent = b.extent()
    if a.crs().isValid() and b.crs().isValid() and a.crs() != b.crs():
        try:
            extent = QgsCoordinateTransform(b.crs(), a.crs(), project).transformBoundingBox(extent)
        except QgsCsException:
            return False
    return a.extent().intersects(extent)


def _fits(a: QgsRasterLayer, b: QgsRasterLayer, project: QgsProject) -> bool:
    return a.bandCount() == b.bandCount() and _overlap(a, b, project)


def raster_pair(project: QgsProject) -> dict:
    """``{"BEFORE": id, "AFTER": id}`` for the detection dialog, or {} (see the module docstring)."""
    rasters = [node.layer() for node in project.layerTreeRoot().findLayers()
               if node.layer() is not None and node.layer().type() == LAYER_RASTER
               and node.layer().isValid() and not is_output(node.layer())]
    for j in range(1, len(rasters)):
        for i in range(j):
            if _fits(rasters[i], rasters[j], project):
                pair = (rasters[i], rasters[j])
                b, a = before_after([layer.name() for layer in pair])
                return {"BEFORE": pair[b].id(), "AFTER": pair[a].id()}
    return {}


def preselect_in_dialog(wrappers: dict, project: Optional[QgsProject] = None) -> None:
    """Set the dialog's BEFORE and AFTER raster widgets (``wrappers``: name -> widget wrapper)
    to :func:`raster_pair`, or leave them empty when there is no such pair."""
    chosen = [wrappers.get(name) for name in ("BEFORE", "AFTER")]
    if any(w is None or not isinstance(w.parameterDefinition(), QgsProcessingParameterRasterLayer) for w in chosen):
        return
    pair = raster_pair(project or QgsProject.instance())
    context = QgsProcessingContext()
    context.setProject(project or QgsProject.instance())
    for name, wrapper in zip(("BEFORE", "AFTER"), chosen):
        if pair:
            wrapper.setParameterValue(pair[name], context)
        else:
            _clear(wrapper)


def _clear(wrapper) -> None:
    """Show no layer in a required layer widget (QGIS always shows one otherwise)."""
    from qgis.gui import QgsMapLayerComboBox
    from qgis.PyQt import sip
    from qgis.PyQt.QtWidgets import QComboBox

    widget = wrapper.wrappedWidget() if hasattr(wrapper, "wrappedWidget") else None
    for child in widget.findChildren(QComboBox) if widget is not None else []:
        # PyQt sees the child as a QComboBox (its parent widget is not in the Python API)
        if child.metaObject().className() == "QgsMapLayerComboBox":
            combo = sip.cast(child, QgsMapLayerComboBox)
            combo.setAllowEmptyLayer(True)
            combo.setLayer(None)
