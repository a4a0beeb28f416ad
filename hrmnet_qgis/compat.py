"""QGIS 3.22 to 4.x (Qt5 and Qt6): the few names whose home differs, resolved in one place.

The rest of the plugin writes every Qt and QGIS enum in its scoped form
(``Qt.AlignmentFlag.AlignRight``, ``QgsTask.Flag.CanCancel``), which PyQt5 (QGIS 3) and
PyQt6 (QGIS 4) both accept; ``tests/test_qt6_scan.py`` keeps it so. What stays here:

- Processing enums that QGIS 3.36 moved into ``Qgis`` (``Qgis.ProcessingSourceType`` ...)
  and layer types (``Qgis.LayerType``, QGIS 3.30). QGIS 4 keeps the old names only as
  monkey patches; each constant below is the new enum where this QGIS has it, else the
  3.22 enum (the values are equal: QGIS keeps them so).
- ``QAction``: in QtGui under Qt6, in QtWidgets under Qt5.
"""
from __future__ import annotations

from typing import Any

import qgis.core
from qgis.core import Qgis

try:  # Qt6 (QGIS 4)
    from qgis.PyQt.QtGui import QAction
except ImportError:  # Qt5 (QGIS 3)
    from qgis.PyQt.QtWidgets import QAction

__all__ = ["QAction", "SOURCE_VECTOR", "SOURCE_VECTOR_POLYGON", "NUMBER_INTEGER", "NUMBER_DOUBLE",
           "FILE_BEHAVIOR_FILE", "FILE_BEHAVIOR_FOLDER", "PARAMETER_ADVANCED", "LAYER_RASTER", "LAYER_FILTER", "newer"]


def newer(qgis_enum: str, member: str, older: str) -> Any:
    """``Qgis.<qgis_enum>.<member>`` where this QGIS has that enum, else ``older``, a dotted
    path in ``qgis.core`` (the 3.22 name; looked up only then, so QGIS 4 may drop it)."""
    scoped = getattr(Qgis, qgis_enum, None)
    if scoped is not None:
        return getattr(scoped, member)
    value: Any = qgis.core
    for part in older.split("."):
        value = getattr(value, part)
    return value


#: Processing layer types (``QgsProcessing.SourceType`` before 3.36).
SOURCE_VECTOR = newer("ProcessingSourceType", "Vector", "QgsProcessing.SourceType.TypeVector")
SOURCE_VECTOR_POLYGON = newer("ProcessingSourceType", "VectorPolygon", "QgsProcessing.SourceType.TypeVectorPolygon")
#: Number parameter types (``QgsProcessingParameterNumber.Type`` before 3.36).
NUMBER_INTEGER = newer("ProcessingNumberParameterType", "Integer", "QgsProcessingParameterNumber.Type.Integer")
NUMBER_DOUBLE = newer("ProcessingNumberParameterType", "Double", "QgsProcessingParameterNumber.Type.Double")
#: File parameter behaviours (``QgsProcessingParameterFile.Behavior`` before 3.36).
FILE_BEHAVIOR_FILE = newer("ProcessingFileParameterBehavior", "File", "QgsProcessingParameterFile.Behavior.File")
FILE_BEHAVIOR_FOLDER = newer("ProcessingFileParameterBehavior", "Folder", "QgsProcessingParameterFile.Behavior.Folder")
#: The "Advanced parameters" flag (``QgsProcessingParameterDefinition.Flag`` before 3.36).
PARAMETER_ADVANCED = newer("ProcessingParameterFlag", "Advanced", "QgsProcessingParameterDefinition.Flag.FlagAdvanced")
#: Raster layer type (``QgsMapLayerType`` before 3.30).
LAYER_RASTER = newer("LayerType", "Raster", "QgsMapLayerType.RasterLayer")
#: Layer filters of the layer combo boxes, the enum itself (``QgsMapLayerProxyModel.Filter``
#: before 3.34, ``Qgis.LayerFilter`` since; looked up by name so QGIS 4 may drop the old one).
LAYER_FILTER = getattr(Qgis, "LayerFilter", None) or getattr(qgis.core.QgsMapLayerProxyModel, "Filter")
