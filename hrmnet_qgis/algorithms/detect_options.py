"""Parameters shared by ``hrmnet:detectchanges`` and ``hrmnet:detectchangessheets``, and the
``detect`` options they become (the engine's ``sheets`` takes the same ones)."""
from __future__ import annotations

from typing import Callable

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
)

from ..compat import NUMBER_DOUBLE, NUMBER_INTEGER
from .base import DEVICE_LABELS, DEVICES, PRECISION_LABELS, PRECISIONS

__all__ = ["VECTOR_EXTENSIONS", "check_vector_output", "given", "mapping_parameters", "num", "mapping_options",
           "tiling_parameters", "tiling_options"]

#: Vector formats the engine writes (chosen by extension).
VECTOR_EXTENSIONS = ["gpkg", "shp", "fgb", "geojson"]


def given(parameters: dict, name: str) -> bool:
    """True when the user set the optional parameter ``name``: not None, not a NULL variant
    (what an empty field of the dialog gives in QGIS 3.22; tested by its ``isNull()``, as
    PyQt6 has no QVariant values), not blank text, not an empty list."""
    value = parameters.get(name)
    is_null = getattr(value, "isNull", None)
    if value is None or (callable(is_null) and not isinstance(value, str) and is_null()):
        return False
    return not (isinstance(value, str) and value.strip() == "") and not (isinstance(value, list) and not value)


def num(value: float) -> str:
    """A number as the engine's command line takes it."""
    return repr(float(value))


def check_vector_output(path: str) -> None:
    """Refuse a vector output the engine cannot write, naming it."""
    ext = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if ext not in VECTOR_EXTENSIONS:
        raise QgsProcessingException(f"{path}: unsupported vector format (use one of .{', .'.join(VECTOR_EXTENSIONS)})")


def mapping_parameters(tr: Callable[[str], str]) -> list:
    """MIN_AREA and SIMPLIFY (the threshold is built by each algorithm: the detect dialog
    gives it a widget that shows the model's value)."""
    return [
        QgsProcessingParameterNumber("MIN_AREA", tr("Minimum polygon area (m²)"), NUMBER_DOUBLE,
                                     defaultValue=0.0, minValue=0.0),
        QgsProcessingParameterNumber("SIMPLIFY", tr("Simplification tolerance (m, 0 = none)"),
                                     NUMBER_DOUBLE, defaultValue=0.0, minValue=0.0),
    ]


def tiling_parameters(tr: Callable[[str], str]) -> list:
    """The advanced TILE_SIZE, OVERLAP, BATCH_SIZE, DEVICE and PRECISION parameters."""
    return [
        QgsProcessingParameterNumber("TILE_SIZE", tr("Tile size (pixels, multiple of 32; empty: the model's)"),
                                     NUMBER_INTEGER, None, True, 32, 8192),
        QgsProcessingParameterNumber("OVERLAP", tr("Tile overlap (pixels; empty: the model's)"),
                                     NUMBER_INTEGER, None, True, 0, 4096),
        QgsProcessingParameterNumber("BATCH_SIZE", tr("Tiles per batch (empty: automatic)"),
                                     NUMBER_INTEGER, None, True, 1, 1024),
        QgsProcessingParameterEnum("DEVICE", tr("Device"), DEVICE_LABELS, defaultValue=0),
        QgsProcessingParameterEnum("PRECISION", tr("Precision"), PRECISION_LABELS, defaultValue=0),
    ]


def mapping_options(alg: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext) -> list[str]:
    """``--threshold`` (when given), ``--min-area`` and ``--simplify``."""
    args = []
    if given(parameters, "THRESHOLD"):
        args += ["--threshold", num(alg.parameterAsDouble(parameters, "THRESHOLD", context))]
    args += ["--min-area", num(alg.parameterAsDouble(parameters, "MIN_AREA", context))]
    args += ["--simplify", num(alg.parameterAsDouble(parameters, "SIMPLIFY", context))]
    return args


def tiling_options(alg: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext) -> list[str]:
    """``--tile-size --overlap --batch-size`` (when given), ``--device`` and ``--precision``."""
    args = []
    for name, option in (("TILE_SIZE", "--tile-size"), ("OVERLAP", "--overlap"), ("BATCH_SIZE", "--batch-size")):
        if given(parameters, name):
            args += [option, str(alg.parameterAsInt(parameters, name, context))]
    args += ["--device", DEVICES[alg.parameterAsEnum(parameters, "DEVICE", context)]]
    args += ["--precision", PRECISIONS[alg.parameterAsEnum(parameters, "PRECISION", context)]]
    return args
