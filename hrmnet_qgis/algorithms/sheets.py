"""``hrmnet:detectchangessheets``: a sheet index → ``python -m engine sheets`` options.

One algorithm does the whole job (QGIS's batch mode and "iterate over this layer" run
sheets one by one, each a new engine process, with seams at the sheet edges). The sheet
index is a feature source: a layer filter and "Selected features only" are passed to the
engine as QGIS's own ``path|layername=…|subset=SQL`` notation, so relative image paths still
resolve against the index's folder. A layer that is not a file (memory, database) is saved
to a GeoPackage in the run folder first.

Cancel stops the engine; the run folder keeps every finished sheet, and running the
algorithm again with the same settings resumes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from qgis.core import (
    QgsCoordinateTransformContext,
    QgsFeatureRequest,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
    QgsProviderRegistry,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from ..compat import (
    FILE_BEHAVIOR_FILE,
    NUMBER_DOUBLE,
    NUMBER_INTEGER,
    PARAMETER_ADVANCED,
    SOURCE_VECTOR,
    SOURCE_VECTOR_POLYGON,
)
from ..runner import EngineRun
from .base import (
    KEEP_ALIVE,
    EngineAlgorithm,
    OutputLayer,
    StyleLoader,
    absolute,
    layer_name,
    queued_layers,
)
from .detect import MODEL_CHOICE, proposed_model
from .detect_options import (
    check_vector_output,
    given,
    mapping_options,
    mapping_parameters,
    tiling_options,
    tiling_parameters,
)

__all__ = ["DetectChangesSheets", "EXIT_SOME_FAILED", "selection_filter", "engine_source", "sheet_line"]

#: Exit status of ``sheets`` when some sheets failed (the merged layer holds the others).
EXIT_SOME_FAILED = 3
#: The run folder's status layer (one feature per sheet).
STATUS_FILE = "status.gpkg"
#: What a layer that is not a file is saved as, inside the run folder.
EXPORTED_INDEX = "sheets-from-qgis.gpkg"


def sql_value(value: Any) -> str:
    """An attribute value as an OGR SQL literal (numbers bare, text quoted)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def selection_filter(field: str, values: list) -> str:
    """``"field" IN (v1, v2, …)``: the OGR SQL filter that keeps these features."""
    name = '"' + field.replace('"', '""') + '"'
    return f"{name} IN ({', '.join(sql_value(v) for v in values)})"


def engine_source(path: str, layer_name_: str = "", subset: str = "") -> str:
    """QGIS's ``path|layername=x|subset=SQL`` notation, which the engine reads."""
    text = path
    if layer_name_:
        text += f"|layername={layer_name_}"
    if subset:
        text += f"|subset={subset}"
    return text


class DetectChangesSheets(EngineAlgorithm):
    """Change polygons over many map sheets, merged into one layer, with a status layer."""

    COMMAND = "sheets"
    ICON = "icons/detect.svg"
    SHEETS = "SHEETS"
    SHEETS_FILE = "SHEETS_FILE"
    ID_FIELD = "ID_FIELD"
    BEFORE = "BEFORE"
    AFTER = "AFTER"
    MODEL = "MODEL"
    THRESHOLD = "THRESHOLD"
    MIN_AREA = "MIN_AREA"
    SIMPLIFY = "SIMPLIFY"
    SKIP_MISSING = "SKIP_MISSING"
    WORKERS = "WORKERS"
    SCHEDULER = "SCHEDULER"
    RESTART = "RESTART"
    BANDS_BEFORE = "BANDS_BEFORE"
    BANDS_AFTER = "BANDS_AFTER"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    PRECISION = "PRECISION"
    RUN_FOLDER = "RUN_FOLDER"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    OUTPUT_STATUS = "OUTPUT_STATUS"
    OUTPUT_REVIEW = "OUTPUT_REVIEW"
    OUTPUT_REVIEW_AREAS = "OUTPUT_REVIEW_AREAS"
    FAILED = "FAILED"

    def name(self) -> str:
        return "detectchangessheets"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Detect changes over map sheets")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "<p>Runs change detection over many map sheets (one before and one after image per sheet) "
            "and writes <b>one</b> merged layer of <i>Change polygons</i>: polygons that cross sheet "
            "edges come out whole, as if the sheets were one mosaic. Attributes: id, area_m2, "
            "mean_prob, max_prob and sheet.</p>"
            "<p><b>Sheets</b>: a sheet index layer (one feature per sheet, e.g. made with "
            "<i>Raster › Miscellaneous › Tile Index</i>, or your agency's grid); <i>Selected features "
            "only</i> and a layer filter work. Or a <i>Sheet list file</i>: a CSV with columns "
            "<code>id,before,after</code> (paths may be relative to the CSV).</p>"
            "<p><b>Before/After image path</b>: templates whose <code>{FIELD}</code> parts take the "
            "sheet's attributes, e.g. <code>/ortho/2019/{id}.tif</code>, <code>{location}</code> "
            "(the Tile Index field) or <code>D:/ortho/2023/{row}_{col}.tif</code>. Relative paths are "
            "relative to the sheet index's folder. Empty: the <code>before</code>/<code>after</code> "
            "field.</p>"
            "<p><b>Run folder</b>: keeps every finished sheet and <i>status.gpkg</i> (one feature per "
            "sheet: done, failed or skipped, seconds, polygons, message), loaded as <i>Sheet status</i>. "
            "Cancel leaves the run resumable: run again with the same settings to continue; finished "
            "sheets are not computed again. A sheet that fails does not stop the others: the merged "
            "layer is written for the rest and the status says why.</p>"
            "<p><b>Workers</b>: empty = one per GPU, or one on CPU. <i>Advanced › Dask scheduler</i>: "
            "the address (<code>tcp://host:8786</code>) or scheduler file of a Dask cluster to run "
            "the sheets on.</p>"
        )

    def initAlgorithm(self, config: Optional[dict] = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.SHEETS, self.tr("Sheets (sheet index layer)"), [SOURCE_VECTOR], optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.SHEETS_FILE, self.tr("Sheet list file instead (CSV id,before,after, or a sheet index file)"),
            behavior=FILE_BEHAVIOR_FILE, optional=True,
            fileFilter=self.tr("Sheet lists (*.csv *.gpkg *.shp *.fgb *.geojson);;All files (*.*)")))
        self.addParameter(QgsProcessingParameterField(
            self.ID_FIELD, self.tr("Sheet id field (empty: id)"), parentLayerParameterName=self.SHEETS, optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.BEFORE, self.tr("Before image path, e.g. /ortho/2019/{id}.tif (empty: the before field)"),
            optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.AFTER, self.tr("After image path, e.g. /ortho/2023/{id}.tif (empty: the after field)"),
            optional=True))
        model = QgsProcessingParameterFile(
            self.MODEL, self.tr("Model checkpoint"), behavior=FILE_BEHAVIOR_FILE,
            defaultValue=proposed_model() or None, optional=True,  # empty: the default model (qgis_process too)
            fileFilter=self.tr("HRMNet models (*.safetensors *.pth *.onnx);;All files (*.*)"))
        model.setMetadata(MODEL_CHOICE)  # the dialog offers the models that are here
        self.addParameter(model)
        threshold = QgsProcessingParameterNumber(
            self.THRESHOLD, self.tr("Change probability threshold (empty: the model's)"),
            NUMBER_DOUBLE, defaultValue=None, optional=True, minValue=0.0, maxValue=1.0)
        # In the dialog, the empty threshold, tile size and overlap fields show the model's values (as Detect).
        threshold.setMetadata({"widget_wrapper": {
            "class": "hrmnet_qgis.algorithms.model_defaults.ModelDefaultsWrapper"}})
        self.addParameter(threshold)
        for param in mapping_parameters(self.tr):
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterBoolean(
            self.SKIP_MISSING, self.tr("Skip sheets whose images are missing (else stop and list them)"),
            defaultValue=False))
        self.addParameter(QgsProcessingParameterNumber(
            self.WORKERS, self.tr("Worker processes (empty: one per GPU, or one on CPU)"),
            NUMBER_INTEGER, defaultValue=None, optional=True, minValue=1, maxValue=256))
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.RUN_FOLDER, self.tr("Run folder (finished sheets and status; run again to resume)")))
        for param in self._advanced():
            param.setFlags(param.flags() | PARAMETER_ADVANCED)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_POLYGONS, self.tr("Change polygons"), SOURCE_VECTOR_POLYGON))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_REVIEW, self.tr("Review (where the model is likely wrong; a VRT of the sheets' rasters)"),
            optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_REVIEW_AREAS, self.tr("Review areas (possible missed changes)"),
            SOURCE_VECTOR_POLYGON, optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputVectorLayer(self.OUTPUT_STATUS, self.tr("Sheet status"),
                                                      SOURCE_VECTOR_POLYGON))
        self.addOutput(QgsProcessingOutputNumber(self.FAILED, self.tr("Sheets failed")))

    def _advanced(self) -> list:
        return [
            QgsProcessingParameterString(self.SCHEDULER, self.tr(
                "Dask scheduler: address (tcp://host:8786) or scheduler file (empty: a local cluster)"),
                optional=True),
            QgsProcessingParameterBoolean(self.RESTART, self.tr(
                "Start over: discard the finished sheets in the run folder"), defaultValue=False),
            QgsProcessingParameterString(self.BANDS_BEFORE, self.tr("Bands of Before: red, green, blue (empty: 1,2,3)"),
                                         optional=True),
            QgsProcessingParameterString(self.BANDS_AFTER, self.tr("Bands of After: red, green, blue (empty: 1,2,3)"),
                                         optional=True),
            *tiling_parameters(self.tr),
        ]

    # -- parameters → engine options -------------------------------------------------------

    def engine_args(self, parameters: dict, context: QgsProcessingContext) -> tuple[list[str], dict[str, str], bool]:
        """The ``sheets`` options, the output paths by name, and whether the SHEETS layer must be
        saved to a file first (it is not a file the engine can read); nothing is written here."""
        sheets, export = self._sheets_source(parameters, context)
        run = absolute(self.parameterAsFileOutput(parameters, self.RUN_FOLDER, context))
        if not run:
            raise QgsProcessingException(self.tr("{}: choose a folder for the run").format(self.label(self.RUN_FOLDER)))
        model = absolute(self.parameterAsFile(parameters, self.MODEL, context)) or proposed_model()
        if not model:
            raise QgsProcessingException(self.tr("{}: no model given and no default model (HRMNet › Models…)").format(self.label(self.MODEL)))
        polygons = absolute(self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context))
        check_vector_output(polygons)
        args = ["--sheets", sheets, "--run", run, "--model", model, "--out-vector", polygons]
        outputs = {self.OUTPUT_POLYGONS: polygons, self.RUN_FOLDER: run}
        review = absolute(self.parameterAsOutputLayer(parameters, self.OUTPUT_REVIEW, context))
        if review:  # the sheets' review GeoTIFFs stay in the run folder: the output is their VRT mosaic
            review = str(Path(review).with_suffix(".vrt"))
            args += ["--out-review", review]
            outputs[self.OUTPUT_REVIEW] = review
        areas = absolute(self.parameterAsOutputLayer(parameters, self.OUTPUT_REVIEW_AREAS, context))
        if areas:
            check_vector_output(areas)
            args += ["--out-review-areas", areas]
            outputs[self.OUTPUT_REVIEW_AREAS] = areas
        args += self._sheet_options(parameters, context) + self._detect_options(parameters, context)
        args += self._cluster_options(parameters, context)
        args.append("--overwrite")  # Processing has already asked about an existing output layer
        return args, outputs, export

    def _sheets_source(self, parameters: dict, context: QgsProcessingContext) -> tuple[str, bool]:
        """(what ``--sheets`` gets, whether the layer must be exported first)."""
        path = absolute(self.parameterAsFile(parameters, self.SHEETS_FILE, context)) \
            if given(parameters, self.SHEETS_FILE) else ""
        if path and given(parameters, self.SHEETS):
            raise QgsProcessingException(self.tr("{} and {}: give one of them").format(
                self.label(self.SHEETS), self.label(self.SHEETS_FILE)))
        if path:
            if not Path(path).is_file():
                raise QgsProcessingException(f"{path}: no such file")
            return path, False
        if not given(parameters, self.SHEETS):
            raise QgsProcessingException(self.tr("{}: choose a sheet index layer or a sheet list file").format(
                self.label(self.SHEETS)))
        layer = self._sheet_layer(parameters, context)
        if layer is None:
            raise QgsProcessingException(self.tr("{}: the sheet index layer could not be read").format(
                self.label(self.SHEETS)))
        selected = _selected_only(parameters.get(self.SHEETS))
        parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
        file = parts.get("path") or ""
        if layer.providerType() not in ("ogr", "delimitedtext") or not file or not Path(file).is_file() or \
                (layer.providerType() == "delimitedtext" and layer.subsetString()) or \
                layer.subsetString().lstrip()[:7].upper() == "SELECT ":
            # not a file GDAL reads, a CSV layer's filter (a QGIS expression) or a whole SQL query
            # as an OGR filter (not a WHERE clause): saved to the run folder in processAlgorithm
            return "", True
        subset = layer.subsetString()
        if selected:
            subset = _and(subset, self._selection(layer, parameters, context))
        return engine_source(absolute(file), parts.get("layerName") or "", subset), False

    def _sheet_layer(self, parameters: dict, context: QgsProcessingContext) -> Optional[QgsVectorLayer]:
        """The SHEETS layer, also when given as a feature source definition (selected features only)."""
        value = parameters.get(self.SHEETS)
        if isinstance(value, QgsProcessingFeatureSourceDefinition):  # QGIS 3.22 does not unwrap it here
            text = value.source.valueAsString(context.expressionContext())[0]
            layer = QgsProcessingUtils.mapLayerFromString(text, context)
            return layer if isinstance(layer, QgsVectorLayer) else None
        return self.parameterAsVectorLayer(parameters, self.SHEETS, context)

    def _selection(self, layer: QgsVectorLayer, parameters: dict, context: QgsProcessingContext) -> str:
        """OGR SQL keeping the selected features, by their id (or Tile Index location) values."""
        field = self.parameterAsString(parameters, self.ID_FIELD, context) or "id"
        names = layer.fields().names()
        if field not in names and not given(parameters, self.ID_FIELD) and "location" in names:
            field = "location"
        if field not in names:
            raise QgsProcessingException(f"{self.label(self.ID_FIELD)}: the sheet index has no field '{field}' "
                                         f"(fields: {', '.join(names)})")
        values = [f[field] for f in layer.getSelectedFeatures(QgsFeatureRequest().setSubsetOfAttributes([field],
                                                                                                       layer.fields()))]
        if not values:
            raise QgsProcessingException(self.tr("{}: 'Selected features only' is on but no sheet is selected").format(
                self.label(self.SHEETS)))
        return selection_filter(field, values)

    def _sheet_options(self, parameters: dict, context: QgsProcessingContext) -> list[str]:
        args = []
        if given(parameters, self.ID_FIELD):
            args += ["--id-field", self.parameterAsString(parameters, self.ID_FIELD, context)]
        for name, option in ((self.BEFORE, "--before"), (self.AFTER, "--after")):
            if given(parameters, name):
                args += [option, self.parameterAsString(parameters, name, context).strip()]
        if self.parameterAsBoolean(parameters, self.SKIP_MISSING, context):
            args.append("--skip-missing")
        if self.parameterAsBoolean(parameters, self.RESTART, context):
            args.append("--restart")
        return args

    def _detect_options(self, parameters: dict, context: QgsProcessingContext) -> list[str]:
        args = mapping_options(self, parameters, context)
        for name, option in ((self.BANDS_BEFORE, "--bands-before"), (self.BANDS_AFTER, "--bands-after")):
            if given(parameters, name):
                args += [option, self.parameterAsString(parameters, name, context).replace(" ", "")]
        return args + tiling_options(self, parameters, context)

    def _cluster_options(self, parameters: dict, context: QgsProcessingContext) -> list[str]:
        scheduler = self.parameterAsString(parameters, self.SCHEDULER, context).strip() \
            if given(parameters, self.SCHEDULER) else ""
        if scheduler and given(parameters, self.WORKERS):
            raise QgsProcessingException(self.tr("{} and {}: the cluster has its own workers; give one").format(
                self.label(self.WORKERS), self.label(self.SCHEDULER)))
        if scheduler:
            is_file = "://" not in scheduler and Path(absolute(scheduler)).is_file()
            return ["--scheduler-file", absolute(scheduler)] if is_file else ["--scheduler", scheduler]
        if given(parameters, self.WORKERS):
            return ["--workers", str(self.parameterAsInt(parameters, self.WORKERS, context))]
        return []

    # -- running ---------------------------------------------------------------------------

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        args, outputs, export = self.prepared(parameters, context)
        run = outputs[self.RUN_FOLDER]
        if export:
            args = list(args)
            args[args.index("--sheets") + 1] = self._export(parameters, context, Path(run), feedback)
        result = self._run(args, feedback, cleanup=[outputs[k] for k in (self.OUTPUT_POLYGONS, self.OUTPUT_REVIEW,
                                                                          self.OUTPUT_REVIEW_AREAS) if outputs.get(k)])
        stats = (result.done or {}).get("stats") or {}
        failed = int(stats.get("failed") or 0)
        if result.returncode == EXIT_SOME_FAILED and feedback is not None:
            feedback.pushWarning(self.tr("Some sheets failed; the merged layer holds the others. The layer "
                                         "'Sheet status' says why; run again to retry only those."))
        status = str(Path(run) / STATUS_FILE)
        label = Path(run).name
        self.load_outputs(context, [OutputLayer(key, outputs[key], qml, rank, label) for rank, (key, qml) in enumerate(
            ((self.OUTPUT_POLYGONS, "polygons.qml"), (self.OUTPUT_REVIEW_AREAS, "review_areas.qml"),
             (self.OUTPUT_REVIEW, "review.qml"))) if outputs.get(key)])
        if absolute(outputs[self.OUTPUT_POLYGONS]) in (getattr(self, "_to_load", None) or {}) and Path(status).exists():
            self._load_status(context, status, label)
        return {self.OUTPUT_POLYGONS: outputs[self.OUTPUT_POLYGONS], self.RUN_FOLDER: run,
                self.OUTPUT_REVIEW: outputs.get(self.OUTPUT_REVIEW),
                self.OUTPUT_REVIEW_AREAS: outputs.get(self.OUTPUT_REVIEW_AREAS),
                self.OUTPUT_STATUS: status if Path(status).exists() else None, self.FAILED: failed}

    def _export(self, parameters: dict, context: QgsProcessingContext, run: Path,
                feedback: Optional[QgsProcessingFeedback]) -> str:
        """Save the SHEETS source (honouring "Selected features only") as a GeoPackage in the run folder."""
        source = self.parameterAsSource(parameters, self.SHEETS, context)
        if source is None:
            raise QgsProcessingException(self.tr("{}: the sheet index layer could not be read").format(
                self.label(self.SHEETS)))
        run.mkdir(parents=True, exist_ok=True)
        path = run / EXPORTED_INDEX
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = "sheets"
        writer = QgsVectorFileWriter.create(str(path), source.fields(), source.wkbType(), source.sourceCrs(),
                                            QgsCoordinateTransformContext(), options)
        if writer.hasError() != QgsVectorFileWriter.WriterError.NoError:
            raise QgsProcessingException(f"{path}: cannot write the sheet index ({writer.errorMessage()})")
        count = 0
        for feature in source.getFeatures():
            writer.addFeature(feature)
            count += 1
        del writer
        if count == 0:
            raise QgsProcessingException(self.tr("{}: no sheet to process (nothing selected?)").format(
                self.label(self.SHEETS)))
        if feedback is not None:
            feedback.pushInfo(f"The sheet layer is not a file: {count} sheet(s) saved to {path} "
                              "(relative image paths are relative to the run folder)")
        return str(path)

    def _run(self, args: list[str], feedback: Optional[QgsProcessingFeedback], cleanup: list[str]) -> EngineRun:
        """The engine run; exit status 3 (some sheets failed) is a result, a cancel keeps the run folder."""

        def on_event(event: dict) -> None:
            if event.get("event") == "sheet" and event.get("status") == "done" and feedback is not None:
                feedback.pushInfo(sheet_line(event))  # a failed sheet comes as the engine's warning

        return self.run_engine(args, feedback, cleanup=cleanup, on_event=on_event, partial_codes=(EXIT_SOME_FAILED,),
                               cancelled=self.tr("Cancelled: the finished sheets are kept in the run folder; "
                                                 "run again to resume."))

    def _load_status(self, context: QgsProcessingContext, status: str, label: str) -> None:
        """Queue the run's status layer, styled by status, below the polygons."""
        details = QgsProcessingContext.LayerDetails(layer_name(label, self.tr("Sheet status")), context.project(),
                                                    self.OUTPUT_STATUS)
        loader = StyleLoader("status.qml", 1, {})
        KEEP_ALIVE.append(loader)
        details.setPostProcessor(loader)
        layers = queued_layers(context)
        layers[absolute(status)] = details
        context.setLayersToLoadOnCompletion(layers)


def sheet_line(event: dict) -> str:
    """``sheet A1: done in 3.2 s, 5 polygons`` for the engine's per-sheet event."""
    seconds = event.get("seconds")
    took = f" in {float(seconds):.1f} s" if isinstance(seconds, (int, float)) else ""
    polygons = event.get("polygons")
    count = f", {int(polygons)} polygon(s)" if isinstance(polygons, (int, float)) else ""
    return f"sheet {event.get('id')}: {event.get('status')}{took}{count}"


def _selected_only(value: Any) -> bool:
    return isinstance(value, QgsProcessingFeatureSourceDefinition) and bool(value.selectedFeaturesOnly)


def _and(first: str, second: str) -> str:
    return f"({first}) AND ({second})" if first and second else (first or second)
