"""The training dialog's first step: the layers a dataset is prepared from.

Before/After rasters, and either change labels (a raster or polygons) or two building
footprint layers, and optionally the area where the labels are complete: polygons (all
or the selected ones) or an extent (typed, the current map extent, a layer's, or drawn on
the map: QGIS's extent widget, as the algorithm's own dialog has).
:meth:`DataSection.parameters` turns the choice into the parameters of *Prepare a training
dataset* (``hrmnet:preparedataset``), whose own parameter mapping then makes the ``prepare``
command line: the dialog adds nothing the algorithm lacks.
"""
from __future__ import annotations

from typing import Any, Optional

from qgis.core import QgsMapLayer, QgsProcessingFeatureSourceDefinition, QgsReferencedRectangle
from qgis.gui import QgsExtentWidget, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import QCheckBox, QDoubleSpinBox, QFormLayout, QSpinBox, QWidget

from ..compat import LAYER_FILTER

__all__ = ["DataSection"]

Filter = LAYER_FILTER


def _combo(filters: Any, empty: bool = True) -> QgsMapLayerComboBox:
    combo = QgsMapLayerComboBox()
    combo.setFilters(filters)
    combo.setAllowEmptyLayer(empty)
    if empty:
        combo.setLayer(None)
    return combo


class DataSection(QWidget):
    """Layers of the project to prepare a dataset from (see the module docstring)."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.before = _combo(Filter.RasterLayer)
        self.after = _combo(Filter.RasterLayer)
        self.labels = _combo(Filter.RasterLayer | Filter.PolygonLayer)
        self.footprints_before = _combo(Filter.PolygonLayer)
        self.footprints_after = _combo(Filter.PolygonLayer)
        self.tolerance = QDoubleSpinBox()
        self.tolerance.setRange(0.0, 100.0)
        self.tolerance.setDecimals(2)
        self.tolerance.setValue(1.0)
        self.tolerance.setSuffix(" m")
        self.area = _combo(Filter.PolygonLayer)
        self.selected_only = QCheckBox("Selected features only")
        self.extent = QgsExtentWidget()  # or the labelled area as an extent, in the Before raster's CRS
        self.extent.setNullValueAllowed(True, "Not set")
        self.extent.clear()
        canvas = _map_canvas()
        if canvas is not None:  # "Use current map canvas extent" and "Draw on canvas"
            self.extent.setMapCanvas(canvas)
        self.before.layerChanged.connect(self._before_changed)
        self.tile_size = QSpinBox()
        self.tile_size.setRange(32, 4096)
        self.tile_size.setSingleStep(32)
        self.tile_size.setValue(512)
        self.gsd = QDoubleSpinBox()  # 0: the rasters are georeferenced
        self.gsd.setRange(0.0, 1000.0)
        self.gsd.setDecimals(3)
        self.gsd.setSpecialValueText("georeferenced")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Before raster", self.before)
        form.addRow("After raster", self.after)
        form.addRow("Change labels (raster or polygons)", self.labels)
        form.addRow("or building footprints before", self.footprints_before)
        form.addRow("and building footprints after", self.footprints_after)
        form.addRow("Footprint tolerance", self.tolerance)
        form.addRow("Labelled area (optional)", self.area)
        form.addRow("", self.selected_only)
        form.addRow("or labelled extent (optional)", self.extent)
        form.addRow("Tile size (px)", self.tile_size)
        form.addRow("GSD of rasters without georeference (m)", self.gsd)

    def widgets(self) -> list[QWidget]:
        """The fields (to disable them while a run goes on)."""
        return [self.before, self.after, self.labels, self.footprints_before, self.footprints_after, self.tolerance,
                self.area, self.selected_only, self.extent, self.tile_size, self.gsd]

    def missing(self) -> str:
        """What the user still has to choose ('' when a dataset can be prepared)."""
        if self.before.currentLayer() is None or self.after.currentLayer() is None:
            return "Choose the Before and After rasters."
        footprints = [self.footprints_before.currentLayer(), self.footprints_after.currentLayer()]
        if self.labels.currentLayer() is None and not all(footprints):
            return "Choose change labels, or both building footprint layers."
        if self.labels.currentLayer() is not None and any(footprints):
            return "Choose change labels or building footprints, not both."
        return ""

    def parameters(self, out: str, overwrite: bool = False) -> dict:
        """The parameters of ``hrmnet:preparedataset`` for these fields, writing into ``out``."""
        params: dict = {"BEFORE": _id(self.before.currentLayer()), "AFTER": _id(self.after.currentLayer()),
                        "TILE_SIZE": self.tile_size.value(), "OUTPUT": out, "OVERWRITE": overwrite}
        if self.labels.currentLayer() is not None:
            params["LABELS"] = _id(self.labels.currentLayer())
        else:
            params.update(FOOTPRINTS_BEFORE=_id(self.footprints_before.currentLayer()),
                          FOOTPRINTS_AFTER=_id(self.footprints_after.currentLayer()),
                          FOOTPRINT_TOLERANCE=self.tolerance.value())
        area = self.area.currentLayer()
        if area is not None:
            params["LABELLED_AREA"] = QgsProcessingFeatureSourceDefinition(area.id(), self.selected_only.isChecked())
        if self.extent.isValid():  # both given: the algorithm refuses, in one line
            params["LABELLED_EXTENT"] = QgsReferencedRectangle(self.extent.outputExtent(), self.extent.outputCrs())
        if self.gsd.value() > 0:
            params["GSD"] = self.gsd.value()
        return params

    def _before_changed(self, layer: Optional[QgsMapLayer]) -> None:
        """The extent is given in the Before raster's CRS; "use the layer's extent" offers its extent."""
        if layer is not None:
            self.extent.setOriginalExtent(layer.extent(), layer.crs())
            self.extent.setOutputCrs(layer.crs())


def _map_canvas() -> Any:
    """QGIS's map canvas (None outside the desktop application)."""
    from qgis.utils import iface

    return iface.mapCanvas() if iface is not None else None


def _id(layer: Optional[QgsMapLayer]) -> Optional[str]:
    return layer.id() if layer is not None else None
