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
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..compat import NUMBER_DOUBLE, NUMBER_INTEGER, PARAMETER_ADVANCED
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
            "<p><b>Required:</b> Before, After and Change labels, or a <i>Sheets CSV</i> (rows "
            "before,after,labels) for many map sheets; and the Dataset folder. The split is made by "
            "sheet/region so tiles of one area never leak between train, val and test.</p>"
        )

    def initAlgorithm(self, config: Optional[dict] = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("BEFORE", self.tr("Before"), optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer("AFTER", self.tr("After"), optional=True))
        self.addParameter(QgsProcessingParameterMapLayer("LABELS", self.tr("Change labels (raster or polygons)"),
                                                         optional=True))
        self.addParameter(QgsProcessingParameterFile("PAIRS", self.tr("Sheets CSV (before,after,labels rows)"),
                                                     optional=True, extension="csv"))
        self.addParameter(QgsProcessingParameterNumber("TILE_SIZE", self.tr("Tile size (px)"),
                                                       NUMBER_INTEGER, 512, False, 32))
        advanced = [
            QgsProcessingParameterNumber("STRIDE", self.tr("Stride (px; empty: the tile size)"),
                                         NUMBER_INTEGER, None, True, 1),
            QgsProcessingParameterString("SPLIT", self.tr("Train,val,test fractions"), "0.6,0.3,0.1"),
            QgsProcessingParameterNumber("SEED", self.tr("Random seed"), NUMBER_INTEGER, 42),
            QgsProcessingParameterNumber("KEEP_EMPTY", self.tr("Fraction of tiles without change to keep"),
                                         NUMBER_DOUBLE, None, True, 0.0, 1.0),
        ]
        for param in advanced:
            param.setFlags(param.flags() | PARAMETER_ADVANCED)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterBoolean("OVERWRITE", self.tr("Replace a non-empty dataset folder"),
                                                        defaultValue=False))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", self.tr("Dataset folder")))
        self.addOutput(QgsProcessingOutputFile("DATASET_JSON", self.tr("Dataset description (dataset.json)")))

    def engine_args(self, parameters: dict, context: QgsProcessingContext) -> tuple[list[str], str]:
        """The ``prepare`` options for these parameters, and the dataset folder."""
        out = absolute(self.parameterAsFileOutput(parameters, "OUTPUT", context))
        pairs = absolute(self.parameterAsFile(parameters, "PAIRS", context)) if given(parameters, "PAIRS") else ""
        if pairs:
            args = ["--pairs", pairs]
        else:
            missing = [n for n in ("BEFORE", "AFTER", "LABELS") if not given(parameters, n)]
            if missing:
                raise QgsProcessingException(
                    self.tr("Give BEFORE, AFTER and LABELS, or a SHEETS CSV (missing: {})").format(", ".join(missing))
                )
            args = ["--before", layer_file(self.parameterAsRasterLayer(parameters, "BEFORE", context), "BEFORE"),
                    "--after", layer_file(self.parameterAsRasterLayer(parameters, "AFTER", context), "AFTER"),
                    "--labels", layer_file(self.parameterAsLayer(parameters, "LABELS", context), "LABELS")]
        args += ["--out", out, "--tile-size", str(self.parameterAsInt(parameters, "TILE_SIZE", context)),
                 "--split", self.parameterAsString(parameters, "SPLIT", context),
                 "--seed", str(self.parameterAsInt(parameters, "SEED", context))]
        if given(parameters, "STRIDE"):
            args += ["--stride", str(self.parameterAsInt(parameters, "STRIDE", context))]
        if given(parameters, "KEEP_EMPTY"):
            args += ["--keep-empty", repr(self.parameterAsDouble(parameters, "KEEP_EMPTY", context))]
        if self.parameterAsBoolean(parameters, "OVERWRITE", context):
            args.append("--overwrite")
        return args, out

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict[str, Any]:  # noqa: N802
        args, out = self.prepared(parameters, context)
        self.run_engine(args, feedback, cleanup=[out])
        self.load_outputs(context, [])  # no layers; nothing left blank is reported as missing
        return {"OUTPUT": out, "DATASET_JSON": str(Path(out) / "dataset.json")}
