"""``hrmnet:preparedataset``: parameters → ``python -m engine prepare`` options."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..compat import NUMBER_DOUBLE, NUMBER_INTEGER, PARAMETER_ADVANCED, SOURCE_VECTOR_POLYGON
from .base import EngineAlgorithm, absolute, layer_file
from .detect import given

__all__ = ["PrepareDataset"]


class PrepareDataset(EngineAlgorithm):
    """Cuts before/after/labels into training tiles in the authors' layout."""

    COMMAND = "prepare"

    def name(self) -> str:
        return "preparedataset"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Prepare a training dataset")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "<p>Cuts a <i>Before</i> / <i>After</i> raster pair and <i>Change labels</i> (a raster, or polygons "
            "rasterized onto the Before grid) into georeferenced tiles in the authors' layout "
            "(train|val|test/{A,B,label} + list/*.txt) plus dataset.json, in <i>Dataset folder</i>.</p>"
            "<p><b>Required:</b> Before, After and Change labels (or the two <i>Building footprints</i> "
            "layers), or a <i>Sheets CSV</i> (rows before,after,labels) for many map sheets; and the Dataset "
            "folder. The split is made by sheet/region so tiles of one area never leak between train, val "
            "and test; <i>Validation sheets</i> names them yourself.</p>"
            "<p><b>Labelled area</b> (polygons, or an extent): where your labels are complete. Tiles are cut "
            "only where they meet it; pixels outside are 'not labelled' and training and evaluation ignore "
            "them, instead of learning that the changes nobody drew are no change.</p>"
            "<p><b>Building footprints before/after</b>: instead of change labels, two footprint layers of the "
            "two dates (e.g. a cadastre): buildings that appeared or vanished are change; an outline redrawn "
            "within the <i>tolerance</i> (metres) is the same building. The labelled area defaults to the "
            "two layers' common extent.</p>"
            "<p>Layers of the project work, with 'Selected features only'. Rasters without georeference "
            "(PNG tiles) need their <i>ground sampling distance</i>.</p>"
        )

    def initAlgorithm(self, config: Optional[dict] = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("BEFORE", self.tr("Before"), optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer("AFTER", self.tr("After"), optional=True))
        self.addParameter(QgsProcessingParameterMapLayer("LABELS", self.tr("Change labels (raster or polygons)"),
                                                         optional=True))
        self.addParameter(QgsProcessingParameterFile("PAIRS", self.tr("Sheets CSV (before,after,labels rows)"),
                                                     optional=True, extension="csv"))
        polygons = [SOURCE_VECTOR_POLYGON]
        self.addParameter(QgsProcessingParameterFeatureSource(
            "FOOTPRINTS_BEFORE", self.tr("Building footprints before (instead of change labels)"), polygons,
            optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "FOOTPRINTS_AFTER", self.tr("Building footprints after"), polygons, optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "FOOTPRINT_TOLERANCE", self.tr("Footprint tolerance (m): outlines redrawn within it are no change"),
            NUMBER_DOUBLE, 1.0, False, 0.0))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "LABELLED_AREA", self.tr("Labelled area (polygons where the labels are complete)"), polygons,
            optional=True))
        self.addParameter(QgsProcessingParameterExtent(
            "LABELLED_EXTENT", self.tr("Labelled area as an extent (instead of polygons)"), optional=True))
        self.addParameter(QgsProcessingParameterNumber("TILE_SIZE", self.tr("Tile size (px)"),
                                                       NUMBER_INTEGER, 512, False, 32))
        advanced = [
            QgsProcessingParameterNumber("STRIDE", self.tr("Stride (px; empty: the tile size)"),
                                         NUMBER_INTEGER, None, True, 1),
            QgsProcessingParameterString("SPLIT", self.tr("Train,val,test fractions"), "0.6,0.3,0.1"),
            QgsProcessingParameterNumber("SEED", self.tr("Random seed"), NUMBER_INTEGER, 42),
            QgsProcessingParameterNumber("KEEP_EMPTY", self.tr("Fraction of tiles without change to keep"),
                                         NUMBER_DOUBLE, None, True, 0.0, 1.0),
            QgsProcessingParameterString("VAL_SHEETS", self.tr("Validation sheets (names, comma-separated; "
                                                               "empty: drawn by the fractions)"), optional=True),
            QgsProcessingParameterString("TEST_SHEETS", self.tr("Test sheets (names, comma-separated)"),
                                         optional=True),
            QgsProcessingParameterNumber("GSD", self.tr("Ground sampling distance (m/px) of rasters without "
                                                        "georeference"),
                                         NUMBER_DOUBLE, None, True, 0.0),
        ]
        for param in advanced:
            param.setFlags(param.flags() | PARAMETER_ADVANCED)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterBoolean("OVERWRITE", self.tr("Replace a non-empty dataset folder"),
                                                        defaultValue=False))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", self.tr("Dataset folder")))
        self.addOutput(QgsProcessingOutputFile("DATASET_JSON", self.tr("Dataset description (dataset.json)")))

    def engine_args(self, parameters: dict, context: QgsProcessingContext) -> tuple[list[str], str]:
        """The ``prepare`` options for these parameters, and the dataset folder.

        Vector layers of the project that are not plain files, or with 'Selected features
        only', are saved to temporary GeoPackages the engine reads."""
        out = absolute(self.parameterAsFileOutput(parameters, "OUTPUT", context))
        pairs = absolute(self.parameterAsFile(parameters, "PAIRS", context)) if given(parameters, "PAIRS") else ""
        footprints = self._footprints(parameters, context)
        if pairs:
            args = ["--pairs", pairs]
        else:
            wanted = ("BEFORE", "AFTER") + (() if footprints else ("LABELS",))
            missing = [n for n in wanted if not given(parameters, n)]
            if missing:
                raise QgsProcessingException(
                    self.tr("Give BEFORE, AFTER and LABELS (or the two building footprint layers), or a SHEETS CSV "
                            "(missing: {})").format(", ".join(missing)))
            args = ["--before", layer_file(self.parameterAsRasterLayer(parameters, "BEFORE", context), "BEFORE"),
                    "--after", layer_file(self.parameterAsRasterLayer(parameters, "AFTER", context), "AFTER")]
            if not footprints:
                args += ["--labels", layer_file(self.parameterAsLayer(parameters, "LABELS", context), "LABELS")]
        args += footprints + self._labelled_area(parameters, context)
        args += ["--out", out, "--tile-size", str(self.parameterAsInt(parameters, "TILE_SIZE", context)),
                 "--split", self.parameterAsString(parameters, "SPLIT", context),
                 "--seed", str(self.parameterAsInt(parameters, "SEED", context))]
        if given(parameters, "STRIDE"):
            args += ["--stride", str(self.parameterAsInt(parameters, "STRIDE", context))]
        if given(parameters, "KEEP_EMPTY"):
            args += ["--keep-empty", repr(self.parameterAsDouble(parameters, "KEEP_EMPTY", context))]
        if given(parameters, "GSD") and self.parameterAsDouble(parameters, "GSD", context) > 0:  # NULL reads as 0
            args += ["--gsd", repr(self.parameterAsDouble(parameters, "GSD", context))]
        for name, option in (("VAL_SHEETS", "--val"), ("TEST_SHEETS", "--test")):
            if given(parameters, name) and self.parameterAsString(parameters, name, context).strip():
                args += [option, self.parameterAsString(parameters, name, context).replace(" ", "")]
        if self.parameterAsBoolean(parameters, "OVERWRITE", context):
            args.append("--overwrite")
        return args, out

    def _vector_file(self, parameters: dict, name: str, context: QgsProcessingContext) -> str:
        """A file the engine reads for a feature source parameter: the layer's own file, or a
        temporary GeoPackage (a layer that is no plain file, or 'Selected features only')."""
        # A feedback is needed: QGIS 3.22 crashes exporting the selection without one.
        path = self.parameterAsCompatibleSourceLayerPath(parameters, name, context, ["gpkg", "shp", "geojson", "fgb"],
                                                         "gpkg", QgsProcessingFeedback())
        if not path:
            raise QgsProcessingException(f"{name}: no layer given")
        return absolute(path.split("|")[0])

    def _footprints(self, parameters: dict, context: QgsProcessingContext) -> list[str]:
        """``--footprints-before/--footprints-after/--footprint-tolerance`` when both layers are given."""
        names = ("FOOTPRINTS_BEFORE", "FOOTPRINTS_AFTER")
        chosen = [given(parameters, n) for n in names]
        if not any(chosen):
            return []
        if not all(chosen):
            raise QgsProcessingException(self.tr("Give both building footprint layers (before and after)"))
        if given(parameters, "LABELS"):
            raise QgsProcessingException(self.tr("Give either Change labels or the building footprint layers, "
                                                 "not both"))
        return ["--footprints-before", self._vector_file(parameters, names[0], context),
                "--footprints-after", self._vector_file(parameters, names[1], context),
                "--footprint-tolerance", repr(self.parameterAsDouble(parameters, "FOOTPRINT_TOLERANCE", context))]

    def _labelled_area(self, parameters: dict, context: QgsProcessingContext) -> list[str]:
        """``--labelled-area`` from the polygons or the extent (with its CRS)."""
        if given(parameters, "LABELLED_AREA"):
            if given(parameters, "LABELLED_EXTENT"):
                raise QgsProcessingException(self.tr("Give the labelled area as polygons or as an extent, not both"))
            return ["--labelled-area", self._vector_file(parameters, "LABELLED_AREA", context)]
        if not given(parameters, "LABELLED_EXTENT"):
            return []
        extent = self.parameterAsExtent(parameters, "LABELLED_EXTENT", context)
        if extent.isNull() or extent.isEmpty():  # a NULL value from the dialog
            return []
        crs = self.parameterAsExtentCrs(parameters, "LABELLED_EXTENT", context)
        text = ",".join(repr(v) for v in (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()))
        return ["--labelled-area", text + (f",{crs.authid()}" if crs.isValid() and crs.authid() else "")]

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict[str, Any]:  # noqa: N802
        args, out = self.prepared(parameters, context)
        self.run_engine(args, feedback, cleanup=[out])
        self.load_outputs(context, [])  # no layers; nothing left blank is reported as missing
        return {"OUTPUT": out, "DATASET_JSON": str(Path(out) / "dataset.json")}
