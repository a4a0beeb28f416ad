"""hrmnet_qgis/compat.py: on QGIS 3.22 each name is the 3.22 enum and the parameters built with
it behave as before; where QGIS has the newer ``Qgis`` enum (3.30/3.36, QGIS 4) that one is
taken and the old name is never looked up (QGIS 4 may drop it)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.qgis


def test_on_qgis_3_22_the_names_are_the_3_22_enums(qgis_app):
    from qgis.core import (
        QgsMapLayerType,
        QgsProcessing,
        QgsProcessingParameterDefinition,
        QgsProcessingParameterFile,
        QgsProcessingParameterNumber,
        QgsProcessingParameterVectorDestination,
    )

    from hrmnet_qgis import compat

    assert compat.SOURCE_VECTOR_POLYGON == QgsProcessing.TypeVectorPolygon
    assert compat.SOURCE_VECTOR == QgsProcessing.TypeVector
    assert compat.LAYER_RASTER == QgsMapLayerType.RasterLayer
    number = QgsProcessingParameterNumber("N", "n", compat.NUMBER_INTEGER)
    assert number.dataType() == QgsProcessingParameterNumber.Integer
    double = QgsProcessingParameterNumber("D", "d", compat.NUMBER_DOUBLE)
    assert double.dataType() == QgsProcessingParameterNumber.Double
    folder = QgsProcessingParameterFile("F", "f", behavior=compat.FILE_BEHAVIOR_FOLDER)
    assert folder.behavior() == QgsProcessingParameterFile.Folder
    assert QgsProcessingParameterFile("G", "g", behavior=compat.FILE_BEHAVIOR_FILE).behavior() == 0
    number.setFlags(number.flags() | compat.PARAMETER_ADVANCED)
    assert number.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    out = QgsProcessingParameterVectorDestination("P", "p", compat.SOURCE_VECTOR_POLYGON)
    assert out.dataType() == QgsProcessing.TypeVectorPolygon


def test_the_newer_qgis_enum_wins_and_the_old_name_is_not_read(qgis_app, monkeypatch):
    from hrmnet_qgis import compat

    new = "Qgis.ProcessingSourceType.VectorPolygon"
    newer_qgis = SimpleNamespace(ProcessingSourceType=SimpleNamespace(VectorPolygon=new))
    monkeypatch.setattr(compat, "Qgis", newer_qgis)
    assert compat.newer("ProcessingSourceType", "VectorPolygon", "NoSuchClass.Gone") == new
    with pytest.raises(AttributeError):  # without the newer enum the 3.22 path is read
        compat.newer("ProcessingNumberParameterType", "Integer", "NoSuchClass.Gone")
