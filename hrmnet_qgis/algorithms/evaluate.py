"""``hrmnet:evaluate``: parameters → ``python -m engine evaluate`` options; metrics as outputs."""
from __future__ import annotations

from typing import Any, Optional

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
)

from ..compat import FILE_BEHAVIOR_FOLDER, NUMBER_INTEGER, PARAMETER_ADVANCED
from .base import DEVICE_LABELS, DEVICES, PRECISION_LABELS, PRECISIONS, EngineAlgorithm, absolute
from .detect import MODEL_CHOICE, given

__all__ = ["Evaluate", "METRICS", "metrics_from"]

#: Metric keys of the engine (lowercase) → algorithm outputs (uppercase).
METRICS = ["kappa", "iou", "f1", "precision", "recall", "oa"]
SPLITS = ["test", "val", "train"]


def metrics_from(done: dict, extra: list) -> dict[str, float]:
    """The six metrics from the engine's ``done`` event (``stats.metrics``) or a JSON report."""
    candidates = [done.get("stats") or {}, done.get("metrics") or {}, (done.get("stats") or {}).get("metrics") or {}]
    candidates += [e for e in extra if isinstance(e, dict)]
    candidates += [e.get("metrics") for e in extra if isinstance(e, dict) and isinstance(e.get("metrics"), dict)]
    for source in candidates:
        if all(isinstance(source.get(k), (int, float)) for k in METRICS):
            return {k: float(source[k]) for k in METRICS}
    raise QgsProcessingException("the engine reported no metrics")


class Evaluate(EngineAlgorithm):
    """Scores a checkpoint on one split of a dataset."""

    COMMAND = "evaluate"
    NEEDS_TORCH = True  # evaluate runs on torch, also for an .onnx model

    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Evaluate a model")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "<p>Kappa, IoU, F1, precision, recall and overall accuracy of the change class over one confusion "
            "matrix of the chosen <i>Split</i> of a <i>Dataset folder</i>, for a <i>Model checkpoint</i>.</p>"
            "<p><b>Required:</b> Dataset folder and Model checkpoint.</p>"
            "<p>With a <i>Colour maps folder</i>, writes a colour map per tile: true positives white, false "
            "positives red, false negatives cyan, true negatives black.</p>"
        )

    def initAlgorithm(self, config: Optional[dict] = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("DATA", self.tr("Dataset folder"),
                                                     behavior=FILE_BEHAVIOR_FOLDER))
        self.addParameter(QgsProcessingParameterEnum("SPLIT", self.tr("Split"), SPLITS, defaultValue=0))
        model = QgsProcessingParameterFile("MODEL", self.tr("Model checkpoint"),
                                           fileFilter="HRMNet models (*.safetensors *.pth *.onnx)")
        model.setMetadata(MODEL_CHOICE)  # the dialog offers the models that are here
        self.addParameter(model)
        advanced = [
            QgsProcessingParameterEnum("DEVICE", self.tr("Device"), DEVICE_LABELS, defaultValue=0),
            QgsProcessingParameterEnum("PRECISION", self.tr("Precision"), PRECISION_LABELS, defaultValue=0),
            QgsProcessingParameterNumber("BATCH_SIZE", self.tr("Batch size (tiles; empty: the engine's)"),
                                         NUMBER_INTEGER, None, True, 1),
        ]
        for param in advanced:
            param.setFlags(param.flags() | PARAMETER_ADVANCED)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterBoolean("OVERWRITE", self.tr("Replace colour maps already in the "
                                                                             "folder"), defaultValue=False))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", self.tr("Colour maps folder"),
                                                                  optional=True, createByDefault=False))
        for key in METRICS:
            self.addOutput(QgsProcessingOutputNumber(key.upper(), key))

    def engine_args(self, parameters: dict, context: QgsProcessingContext) -> tuple[list[str], str]:
        """The ``evaluate`` options for these parameters, and the colour-map folder ('' = none)."""
        args = ["--data", absolute(self.parameterAsFile(parameters, "DATA", context)),
                "--split", SPLITS[self.parameterAsEnum(parameters, "SPLIT", context)],
                "--model", absolute(self.parameterAsFile(parameters, "MODEL", context)),
                "--device", DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
                "--precision", PRECISIONS[self.parameterAsEnum(parameters, "PRECISION", context)]]
        if given(parameters, "BATCH_SIZE"):
            args += ["--batch-size", str(self.parameterAsInt(parameters, "BATCH_SIZE", context))]
        out = absolute(self.parameterAsFileOutput(parameters, "OUTPUT", context)) if given(parameters, "OUTPUT") else ""
        if out:
            args += ["--out", out]
            if self.parameterAsBoolean(parameters, "OVERWRITE", context):
                args.append("--overwrite")
        return args, out

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict[str, Any]:  # noqa: N802
        args, out = self.prepared(parameters, context)
        run = self.run_engine(args, feedback, cleanup=[out] if out else [])
        self.load_outputs(context, [])  # no layers; nothing left blank is reported as missing
        metrics = metrics_from(run.done, run.extra)
        feedback.pushInfo("  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        result: dict[str, Any] = {k.upper(): v for k, v in metrics.items()}
        if out:
            result["OUTPUT"] = out
        return result
