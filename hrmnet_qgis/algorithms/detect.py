"""``hrmnet:detectchanges``: parameters → ``python -m engine detect`` options."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBand,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from ..compat import FILE_BEHAVIOR_FILE, NUMBER_DOUBLE, PARAMETER_ADVANCED, SOURCE_VECTOR_POLYGON
from .. import settings
from ..model_info import demo_model, is_demonstration, model_summary, read_model_info
from .base import EngineAlgorithm, OutputLayer, absolute, layer_file
from .detect_options import (
    VECTOR_EXTENSIONS,
    check_vector_output,
    given,
    mapping_options,
    mapping_parameters,
    num,
    tiling_options,
    tiling_parameters,
)

__all__ = ["DetectChanges", "VECTOR_EXTENSIONS", "MODEL_CHOICE", "proposed_model"]

#: MODEL's widget in the dialogs: the models that are here, offered in a list (imported by the
#: dialogs only: qgis_process never loads processing.gui).
MODEL_CHOICE = {"widget_wrapper": {"class": "hrmnet_qgis.algorithms.model_choice.ModelChoiceWrapper"}}


class DetectChanges(EngineAlgorithm):
    """Change polygons (and optionally probability and mask rasters) from two dates."""

    COMMAND = "detect"
    ICON = "icons/detect.svg"
    BEFORE = "BEFORE"
    AFTER = "AFTER"
    MODEL = "MODEL"
    THRESHOLD = "THRESHOLD"
    MIN_AREA = "MIN_AREA"
    SIMPLIFY = "SIMPLIFY"
    EXTENT = "EXTENT"
    BANDS_BEFORE = "BANDS_BEFORE"
    BANDS_AFTER = "BANDS_AFTER"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    PRECISION = "PRECISION"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    OUTPUT_PROBABILITY = "OUTPUT_PROBABILITY"
    OUTPUT_MASK = "OUTPUT_MASK"
    OUTPUT_REVIEW = "OUTPUT_REVIEW"
    OUTPUT_REVIEW_AREAS = "OUTPUT_REVIEW_AREAS"
    REVIEW_THRESHOLD = "REVIEW_THRESHOLD"

    def name(self) -> str:
        return "detectchanges"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Detect changes")

    def shortHelpString(self) -> str:  # noqa: N802
        model = proposed_model()
        info = read_model_info(model) if model else None
        if not model:
            about_default = self.tr("No default model is set: choose a checkpoint in <i>Model checkpoint</i>.")
        elif is_demonstration(info):
            about_default = self.tr("The default <i>Model checkpoint</i> is the bundled <b>demonstration model</b> "
                                    "({}): it is made for synthetic scenes and gives poor or empty results on "
                                    "real imagery.").format(model_summary(info))
        else:
            about_default = self.tr("The default <i>Model checkpoint</i>: {} ({}).").format(model, model_summary(info))
        return self.tr(
            "<p>Finds what changed between <i>Before (earlier date)</i> and <i>After (later date)</i>, two rasters "
            "of the same place, with an HRMNet model, and writes <i>Change polygons</i> (attributes id, "
            "area_m2, mean_prob, max_prob) in the Before raster's CRS; optionally <i>Change probability</i> "
            "(shown 0-1; stored as 0-254 = probability × 254, 255 = no data) and <i>Change mask</i> (0/1).</p>"
            "<p><b>Required:</b> Before, After, Model checkpoint, and at least one output.</p>"
            "<p><b>What the model expects:</b> each date as the bands it was trained on (3 bands: red, green, "
            "blue; pick others under <i>Advanced › Bands of Before/After</i>), 8-bit (16-bit and float "
            "imagery is stretched per band), at about the ground resolution the model was trained at. "
            "When the run starts, the log shows the model's architecture, bands, resolution, purpose and "
            "training, and warns when the rasters' resolution differs from the model's by more than 2× "
            "or the model is a demonstration model. {}</p>"
            "<p>The After raster is warped to the Before raster's grid on the fly; only the area both "
            "cover (and <i>Limit to extent</i>, when set) is processed. <i>Change probability threshold</i>, "
            "<i>Tile size</i> and <i>Tile overlap</i> left empty use the values stored in the model (the "
            "empty field shows them). <i>Minimum polygon area</i> is in m², <i>Simplification "
            "tolerance</i> in metres.</p>"
            "<p><i>Review</i> (optional) is the model's own map of where it is likely wrong (HRMNet's "
            "hard-region score, 0-1, transparent where low): check the change polygons drawn in magenta "
            "(highest <i>review</i> attribute) first, sort the attribute table by <i>review</i>, and look "
            "at the dashed <i>Review areas</i>: regions of high score with no change polygon, where a "
            "change may have been missed.</p>"
            "<p>The engine runs in a separate Python process (<i>Plugins › HRMNet change detection › Set up "
            "engine…</i>).</p>"
        ).format(about_default)

    def initAlgorithm(self, config: Optional[dict] = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.BEFORE, self.tr("Before (earlier date)")))
        self.addParameter(QgsProcessingParameterRasterLayer(self.AFTER, self.tr("After (later date)")))
        default_model = proposed_model()
        demo = bool(default_model) and default_model == demo_model()
        model = QgsProcessingParameterFile(
            self.MODEL,
            self.tr("Model checkpoint (default: the DEMO model, for synthetic scenes only)") if demo
            else self.tr("Model checkpoint"),
            behavior=FILE_BEHAVIOR_FILE,
            defaultValue=default_model or None,
            optional=True,  # empty: the default model (qgis_process 3.22 ignores a mandatory one's default)
            fileFilter=self.tr("HRMNet models (*.safetensors *.pth *.onnx);;All files (*.*)"),
        )
        model.setMetadata(MODEL_CHOICE)  # the dialog offers the models that are here
        self.addParameter(model)
        threshold = QgsProcessingParameterNumber(
            self.THRESHOLD,
            self.tr("Change probability threshold (empty: the model's)"),
            NUMBER_DOUBLE,
            defaultValue=None,
            optional=True,
            minValue=0.0,
            maxValue=1.0,
        )
        # In the dialog, the empty threshold, tile size and overlap fields show the chosen model's values.
        threshold.setMetadata({"widget_wrapper": {"class": "hrmnet_qgis.algorithms.model_defaults.ModelDefaultsWrapper"}})
        self.addParameter(threshold)
        for param in mapping_parameters(self.tr):
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, self.tr("Limit to extent"), optional=True))

        advanced = [
            QgsProcessingParameterBand(self.BANDS_BEFORE, self.tr("Bands of Before: red, green, blue (empty: 1,2,3)"),
                                       None, self.BEFORE, optional=True, allowMultiple=True),
            QgsProcessingParameterBand(self.BANDS_AFTER, self.tr("Bands of After: red, green, blue (empty: 1,2,3)"),
                                       None, self.AFTER, optional=True, allowMultiple=True),
            *tiling_parameters(self.tr),
            QgsProcessingParameterNumber(self.REVIEW_THRESHOLD,
                                         self.tr("Review areas: score threshold (empty: the model's, 0.3)"),
                                         NUMBER_DOUBLE, None, True, 0.0, 1.0),
        ]
        for param in advanced:
            param.setFlags(param.flags() | PARAMETER_ADVANCED)
            self.addParameter(param)

        polygons = QgsProcessingParameterVectorDestination(
            self.OUTPUT_POLYGONS, self.tr("Change polygons"), SOURCE_VECTOR_POLYGON
        )
        self.addParameter(polygons)
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_PROBABILITY, self.tr("Change probability"), optional=True, createByDefault=False
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_MASK, self.tr("Change mask"), optional=True, createByDefault=False
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.OUTPUT_REVIEW, self.tr("Review (where the model is likely wrong)"), optional=True,
                createByDefault=False
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.OUTPUT_REVIEW_AREAS, self.tr("Review areas (possible missed changes)"),
                SOURCE_VECTOR_POLYGON, optional=True, createByDefault=False
            )
        )

    def engine_args(self, parameters: dict, context: QgsProcessingContext) -> tuple[list[str], dict[str, str]]:
        """The ``detect`` options for these parameters, and the output paths by output name."""
        before = self.parameterAsRasterLayer(parameters, self.BEFORE, context)
        after = self.parameterAsRasterLayer(parameters, self.AFTER, context)
        args = ["--before", layer_file(before, self.label(self.BEFORE)), "--after",
                layer_file(after, self.label(self.AFTER))]
        model = absolute(self.parameterAsFile(parameters, self.MODEL, context)) or proposed_model()
        if not model:
            raise QgsProcessingException(self.tr("{}: no model given and no default model (HRMNet › Models…)").format(self.label(self.MODEL)))
        args += ["--model", model]

        outputs = {
            self.OUTPUT_POLYGONS: absolute(self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context)),
            self.OUTPUT_PROBABILITY: absolute(self.parameterAsOutputLayer(parameters, self.OUTPUT_PROBABILITY, context)),
            self.OUTPUT_MASK: absolute(self.parameterAsOutputLayer(parameters, self.OUTPUT_MASK, context)),
            self.OUTPUT_REVIEW: absolute(self.parameterAsOutputLayer(parameters, self.OUTPUT_REVIEW, context)),
            self.OUTPUT_REVIEW_AREAS: absolute(self.parameterAsOutputLayer(parameters, self.OUTPUT_REVIEW_AREAS,
                                                                           context)),
        }
        options = {self.OUTPUT_POLYGONS: "--out-vector", self.OUTPUT_PROBABILITY: "--out-probability",
                   self.OUTPUT_MASK: "--out-mask", self.OUTPUT_REVIEW: "--out-review",
                   self.OUTPUT_REVIEW_AREAS: "--out-review-areas"}
        for polygons in (outputs[self.OUTPUT_POLYGONS], outputs[self.OUTPUT_REVIEW_AREAS]):
            if polygons:
                check_vector_output(polygons)
        for key, path in outputs.items():
            if path:
                args += [options[key], path]
        if not any(outputs.values()):
            raise QgsProcessingException(self.tr("No output chosen: set change polygons, probability or mask"))

        args += mapping_options(self, parameters, context)
        if given(parameters, self.REVIEW_THRESHOLD):
            args += ["--review-threshold", num(self.parameterAsDouble(parameters, self.REVIEW_THRESHOLD, context))]
        if given(parameters, self.EXTENT):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, before.crs())
            if not rect.isNull() and not rect.isEmpty():
                args += ["--extent", ",".join(num(v) for v in (rect.xMinimum(), rect.yMinimum(),
                                                                 rect.xMaximum(), rect.yMaximum()))]
        for name, option in ((self.BANDS_BEFORE, "--bands-before"), (self.BANDS_AFTER, "--bands-after")):
            if given(parameters, name):
                bands = [b for b in self.parameterAsInts(parameters, name, context) if b > 0]
                if bands:
                    args += [option, ",".join(str(b) for b in bands)]
        args += tiling_options(self, parameters, context)
        # Processing has already asked the user about existing outputs.
        args.append("--overwrite")
        return args, {k: v for k, v in outputs.items() if v}

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict[str, Any]:  # noqa: N802
        args, outputs = self.prepared(parameters, context)
        self.run_engine(args, feedback, cleanup=list(outputs.values()))
        label = Path(args[args.index("--after") + 1]).stem
        self.load_outputs(context, [
            OutputLayer(key, outputs[key], qml, rank, label)
            for rank, (key, qml) in enumerate(((self.OUTPUT_POLYGONS, "polygons.qml"),
                                               (self.OUTPUT_REVIEW_AREAS, "review_areas.qml"),
                                               (self.OUTPUT_MASK, "mask.qml"),
                                               (self.OUTPUT_REVIEW, "review.qml"),
                                               (self.OUTPUT_PROBABILITY, "probability.qml")))
            if outputs.get(key)
        ])
        return {
            self.OUTPUT_POLYGONS: outputs.get(self.OUTPUT_POLYGONS),
            self.OUTPUT_PROBABILITY: outputs.get(self.OUTPUT_PROBABILITY),
            self.OUTPUT_MASK: outputs.get(self.OUTPUT_MASK),
            self.OUTPUT_REVIEW: outputs.get(self.OUTPUT_REVIEW),
            self.OUTPUT_REVIEW_AREAS: outputs.get(self.OUTPUT_REVIEW_AREAS),
        }


def proposed_model() -> str:
    """The model proposed when none is given: the one set as default (*Models…*, *Set up engine*
    or the training dialog), else the bundled demo model when present."""
    try:
        chosen = settings.get(settings.DEFAULT_MODEL)
    except Exception:  # noqa: BLE001 - no settings storage (e.g. a bare QgsApplication): no setting
        chosen = ""
    return chosen or demo_model()
