"""``hrmnet:train``: parameters → ``python -m engine train`` options."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
)

from ..compat import FILE_BEHAVIOR_FOLDER, NUMBER_DOUBLE, NUMBER_INTEGER, PARAMETER_ADVANCED
from .base import DEVICE_LABELS, DEVICES, PRECISION_LABELS, PRECISIONS, EngineAlgorithm, absolute
from .detect import given

__all__ = ["Train", "train_outputs"]


def train_outputs(run_dir: str, done: dict) -> dict[str, Any]:
    """Paths and best validation F1 of a finished training run in ``run_dir``."""
    run = Path(run_dir)
    stats = (done or {}).get("stats") or {}
    outputs = (done or {}).get("outputs") or {}
    best_f1 = (stats.get("best_val") or {}).get("f1")
    return {
        "OUTPUT": str(run),
        "BEST_MODEL": str(outputs.get("best") or run / "best.safetensors"),
        "LAST_MODEL": str(outputs.get("last") or run / "last.safetensors"),
        "METRICS": str(outputs.get("metrics") or run / "metrics.csv"),
        "BEST_F1": float(best_f1) if isinstance(best_f1, (int, float)) else None,
    }


class Train(EngineAlgorithm):
    """Trains an HRMNet model on a dataset in the authors' layout."""

    COMMAND = "train"
    NEEDS_TORCH = True
    ICON = "icons/train.svg"

    def name(self) -> str:
        return "train"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Train a model")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "<p>Trains HRMNet with the authors' recipe (AdamW, poly schedule with warm-up, flips, crops and "
            "date swaps; model selection by validation F1) on a <i>Dataset folder</i> in the authors' layout "
            "(train|val|test/{A,B,label} + list/*.txt, e.g. from <i>Prepare a training dataset</i>).</p>"
            "<p><b>Required:</b> Dataset folder and <i>Run folder</i>.</p>"
            "<p>Writes best.safetensors, last.safetensors, metrics.csv and curves.png into the Run folder. "
            "Cancelling leaves a resumable run: run again on the same folder with <i>Resume the run in the "
            "output folder</i>.</p>"
        )

    def initAlgorithm(self, config: Optional[dict] = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("DATA", self.tr("Dataset folder"),
                                                     behavior=FILE_BEHAVIOR_FOLDER))
        self.addParameter(QgsProcessingParameterNumber("STEPS", self.tr("Training steps"),
                                                       NUMBER_INTEGER, 20000, False, 1))
        self.addParameter(QgsProcessingParameterNumber("BATCH_SIZE", self.tr("Batch size"),
                                                       NUMBER_INTEGER, 8, False, 1))
        self.addParameter(QgsProcessingParameterNumber("LR", self.tr("Learning rate"),
                                                       NUMBER_DOUBLE, 5e-4, False, 0.0))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", self.tr("Device"), DEVICE_LABELS, defaultValue=0))
        self.addParameter(QgsProcessingParameterFile("INIT", self.tr("Initial checkpoint (fine-tune from)"),
                                                     optional=True,
                                                     fileFilter="HRMNet checkpoints (*.safetensors *.pth)"))
        self.addParameter(QgsProcessingParameterBoolean("RESUME", self.tr("Resume the run in the output folder"),
                                                        defaultValue=False))
        self.addParameter(QgsProcessingParameterBoolean("OVERWRITE", self.tr("Start over in an existing run folder"),
                                                        defaultValue=False))
        advanced = [
            QgsProcessingParameterNumber("CROP", self.tr("Crop size (px)"), NUMBER_INTEGER,
                                         None, True, 32),
            QgsProcessingParameterNumber("VAL_EVERY", self.tr("Validate every N steps (0: at the end)"),
                                         NUMBER_INTEGER, None, True, 0),
            QgsProcessingParameterNumber("WORKERS", self.tr("Data loader workers"),
                                         NUMBER_INTEGER, None, True, 0),
            QgsProcessingParameterNumber("SEED", self.tr("Random seed"), NUMBER_INTEGER,
                                         None, True, 0),
            QgsProcessingParameterEnum("PRECISION", self.tr("Precision"), PRECISION_LABELS, defaultValue=0),
            QgsProcessingParameterFile("BACKBONE", self.tr("Backbone weights (ImageNet ResNet-18-D)"), optional=True),
        ]
        self.addParameter(QgsProcessingParameterBoolean(
            "IMAGENET", self.tr("Start from ImageNet weights, as the paper does (downloads 47 MB once; "
                                "not used with an initial checkpoint, backbone file or resume)"),
            defaultValue=True))
        for param in advanced:
            param.setFlags(param.flags() | PARAMETER_ADVANCED)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", self.tr("Run folder")))
        self.addOutput(QgsProcessingOutputFile("BEST_MODEL", self.tr("Best checkpoint (validation F1)")))
        self.addOutput(QgsProcessingOutputFile("LAST_MODEL", self.tr("Last checkpoint")))
        self.addOutput(QgsProcessingOutputFile("METRICS", self.tr("Metrics (CSV)")))
        self.addOutput(QgsProcessingOutputNumber("BEST_F1", self.tr("Best validation F1")))

    def engine_args(self, parameters: dict, context: QgsProcessingContext) -> tuple[list[str], str]:
        """The ``train`` options for these parameters, and the run folder."""
        out = absolute(self.parameterAsFileOutput(parameters, "OUTPUT", context))
        args = ["--data", absolute(self.parameterAsFile(parameters, "DATA", context)), "--out", out,
                "--steps", str(self.parameterAsInt(parameters, "STEPS", context)),
                "--batch-size", str(self.parameterAsInt(parameters, "BATCH_SIZE", context)),
                "--lr", repr(self.parameterAsDouble(parameters, "LR", context)),
                "--device", DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
                "--precision", PRECISIONS[self.parameterAsEnum(parameters, "PRECISION", context)]]
        for name, option in (("CROP", "--crop"), ("VAL_EVERY", "--val-every"), ("WORKERS", "--workers"),
                             ("SEED", "--seed")):
            if given(parameters, name):
                args += [option, str(self.parameterAsInt(parameters, name, context))]
        for name, option in (("INIT", "--init"), ("BACKBONE", "--backbone")):
            path = absolute(self.parameterAsFile(parameters, name, context)) if given(parameters, name) else ""
            if path:
                args += [option, path]
        resume = self.parameterAsBoolean(parameters, "RESUME", context)
        if resume:
            args.append("--resume")
        elif "--init" not in args and "--backbone" not in args and self.parameterAsBoolean(
                parameters, "IMAGENET", context):
            args += ["--backbone", "imagenet"]
        if self.parameterAsBoolean(parameters, "OVERWRITE", context):
            args.append("--overwrite")
        return args, out

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict[str, Any]:  # noqa: N802
        args, out = self.prepared(parameters, context)
        # A cancelled training keeps its folder: it resumes with RESUME.
        run = self.run_engine(args, feedback, cleanup=(), stop_grace_s=120.0)
        self.load_outputs(context, [])  # no layers; nothing left blank is reported as missing
        return train_outputs(out, run.done)
