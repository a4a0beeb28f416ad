"""What every HRMNet algorithm shares: running the engine and reporting to Processing.

An algorithm only maps its parameters to the engine's command-line options
(:meth:`EngineAlgorithm.engine_args`); this base class runs the engine with
:func:`hrmnet_qgis.runner.run_engine`, shows its events in the Processing log and
turns its failures into :class:`QgsProcessingException` with the engine's message.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from qgis.core import (
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingUtils,
    QgsProject,
    QgsProviderRegistry,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..engine_options import DEVICE_LABELS, DEVICES, PRECISION_LABELS, PRECISIONS, describe_start, short_value
from ..engine_python import EngineSetupError, engine_python
from ..progress import STAGES, StageProgress
from ..raster_pair import mark_as_output
from ..runner import EngineCancelled, EngineError, EngineRun, run_engine

__all__ = ["EngineAlgorithm", "FeedbackReporter", "OutputLayer", "layer_file", "absolute", "StyleLoader", "stack_layers",
           "DEVICES", "PRECISIONS", "DEVICE_LABELS", "PRECISION_LABELS", "KEEP_ALIVE", "option_value", "quoted"]

PLUGIN_DIR = Path(__file__).resolve().parents[1]
STYLES = PLUGIN_DIR / "styles"


class FeedbackReporter:
    """Shows engine events in a :class:`QgsProcessingFeedback`.

    progress → ``setProgress``: one bar across the command's stages (see
    :mod:`hrmnet_qgis.progress`), with a log line now and then giving done/total and the time
    left; the progress text is left to QGIS (the batch dialog shows "Processing algorithm
    3/4" there). log → ``pushInfo`` / ``pushWarning``, start → one line with device,
    precision and sizes.
    """

    def __init__(self, feedback: Optional[QgsProcessingFeedback], command: str = "") -> None:
        self.feedback = feedback
        self.progress = StageProgress(STAGES.get(command))
        self.error = ""

    def __call__(self, event: dict) -> None:
        fb = self.feedback
        if fb is None:
            return
        kind = event.get("event")
        if kind == "progress":
            percent, line = self.progress.update(str(event.get("stage") or ""), event.get("done") or 0,
                                                 event.get("total") or 0)
            if line:
                fb.pushInfo(line)
            fb.setProgress(percent)
        elif kind == "log":
            message = str(event.get("message", ""))
            if event.get("level") == "warning":
                fb.pushWarning(message)
            else:
                fb.pushInfo(message)
        elif kind == "start":
            fb.pushInfo("Engine started: " + describe_start(event))
        elif kind == "done":
            stats = event.get("stats") or {}
            if stats:
                fb.pushInfo("Engine finished: " + ", ".join(f"{k}={short_value(v)}" for k, v in stats.items()))
        elif kind == "error":  # QGIS shows it once, from the QgsProcessingException raised after the run
            self.error = str(event.get("message", "")).strip()

    def stderr(self, line: str) -> None:
        """The engine's stderr as console text, less the CLI's ``error: …`` copy of its error
        event (the two streams are read in parallel, so the event may come second)."""
        text = line.strip()
        if self.feedback is not None and text and not text.startswith("error: "):
            self.feedback.pushConsoleInfo(line)


def absolute(path: str) -> str:
    """``path`` made absolute against QGIS's working folder ('' stays ''): the engine runs elsewhere."""
    return os.path.abspath(path) if path else path


def layer_file(layer: Optional[QgsMapLayer], name: str) -> str:
    """The file behind a file-based layer, or a QgsProcessingException naming ``name`` (the
    parameter's label, :meth:`EngineAlgorithm.label`)."""
    if layer is None:
        raise QgsProcessingException(f"{name}: no layer given")
    parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
    path = parts.get("path") or ""
    if not path or not Path(path).exists():
        raise QgsProcessingException(
            f"{name}: layer '{layer.name()}' is not a file the engine can read ({layer.source()}); save it to a file first"
        )
    return absolute(path)


class StyleLoader(QgsProcessingLayerPostProcessorInterface):
    """After QGIS loads an output: applies a shipped QML style and stacks the run's layers.

    Also marks the layer as this plugin's output (:func:`hrmnet_qgis.raster_pair.mark_as_output`:
    the detection dialog never proposes it as Before or After).

    Args:
        qml: file name in ``hrmnet_qgis/styles``.
        rank: place among the run's loaded layers, 0 on top (polygons above rasters).
        stack: shared by the loaders of one run; filled with ``layer id -> rank``.
        numbered: give the layer a counter, "NAME (2)", when the project has one of that name.
    """

    def __init__(self, qml: str, rank: int = 0, stack: Optional[dict] = None, numbered: bool = False) -> None:
        super().__init__()
        self.qml = str(STYLES / qml)
        self.rank = rank
        self.stack = stack if stack is not None else {}
        self.numbered = numbered

    def postProcessLayer(self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> None:  # noqa: N802
        if layer is None or not layer.isValid():
            return
        _msg, ok = layer.loadNamedStyle(self.qml)
        if ok:
            layer.triggerRepaint()
        mark_as_output(layer, Path(self.qml).stem)  # after the style, which replaces custom properties
        self.stack[layer.id()] = self.rank
        project = layer.project() or context.project() or QgsProject.instance()
        if self.numbered:
            layer.setName(unique_name(layer.name(), {other.name() for other in project.mapLayers().values()
                                                     if other.id() != layer.id()}))
        stack_layers(project.layerTreeRoot(), self.stack)


def unique_name(name: str, taken: set) -> str:
    """``name``, or ``name (2)``, ``name (3)``… : the first not in ``taken``."""
    if name not in taken:
        return name
    k = 2
    while f"{name} ({k})" in taken:
        k += 1
    return f"{name} ({k})"


def stack_layers(root: QgsLayerTreeGroup, ranks: dict) -> None:
    """Order the layer-tree nodes of the layers in ``ranks`` (id -> rank, 0 on top) within each
    group, keeping them where the topmost of them is (QGIS 3.22 loads a run's outputs in the
    order of their paths, each new one on top)."""
    by_parent: dict = {}
    for layer_id in ranks:
        node = root.findLayer(layer_id)
        if node is not None and node.parent() is not None:
            by_parent.setdefault(id(node.parent()), (node.parent(), []))[1].append(node)
    for parent, nodes in by_parent.values():
        children = parent.children()
        nodes.sort(key=lambda n: children.index(n))
        wanted = sorted(nodes, key=lambda n: ranks[n.layerId()])
        if [n.layerId() for n in nodes] == [n.layerId() for n in wanted]:
            continue
        top = children.index(nodes[0])
        # Clones first, originals after: a layer never leaves the tree (the project would drop it).
        for k, node in enumerate(wanted):
            parent.insertChildNode(top + k, node.clone())
        for node in nodes:
            parent.removeChildNode(node)


@dataclass
class OutputLayer:
    """An output file of a run that QGIS may load into the project afterwards.

    Attributes:
        key: the destination parameter (OUTPUT_POLYGONS).
        path: the file the engine wrote (absolute).
        qml: style in ``hrmnet_qgis/styles``.
        rank: place among the run's layers, 0 on top.
        label: what distinguishes this run's layers (the AFTER raster's or sheet's name).
    """

    key: str
    path: str
    qml: str
    rank: int = 0
    label: str = ""


# Post-processors must outlive processAlgorithm (QGIS keeps a raw pointer to them).
KEEP_ALIVE: list = []


def queued_layers(context: QgsProcessingContext) -> dict:
    """The context's layers to load on completion, by absolute path (empty paths left out)."""
    return {absolute(path): details for path, details in context.layersToLoadOnCompletion().items() if path}


def short_label(description: str) -> str:
    """A parameter's label without the hints after it: ``Sheet id field (empty: id)`` ->
    ``Sheet id field``, ``Before image path, e.g. /ortho/{id}.tif (…)`` -> ``Before image path``."""
    return re.split(r" \(|, e\.g\. ", description, maxsplit=1)[0].strip() or description


def layer_name(label: str, description: str) -> str:
    """``LABEL: description`` (e.g. ``after_2021: change polygons``), or the description alone."""
    return f"{label}: {description[:1].lower()}{description[1:]}" if label else description


def output_layer_name(path: str, label: str, description: str) -> tuple[str, bool, bool]:
    """``(name, numbered, forced)`` of an output layer the user did not name: a file the user
    chose is named after the file (``changes.gpkg`` -> ``changes``, whatever QGIS's "prefer
    output filename" setting); a temporary output (Processing's temporary folder) after the run,
    ``LABEL: description``, numbered when the project already has that name."""
    temporary = QgsProcessingUtils.tempFolder()
    if temporary and Path(path).resolve().is_relative_to(Path(temporary).resolve()):
        return layer_name(label, description), True, False
    return Path(path).stem, False, True


class EngineAlgorithm(QgsProcessingAlgorithm):
    """Base class: one engine subcommand per algorithm."""

    COMMAND = ""
    #: The engine command always needs torch (training): a light engine is refused before running.
    NEEDS_TORCH = False
    #: Icon file in the plugin folder (``icons/…`` for the algorithms with their own).
    ICON = "icon.png"
    #: The parameter behind an engine option (its argparse dest), where it is not the dest in
    #: capitals (``id_field`` -> ``ID_FIELD``): error messages show the parameter's label.
    ENGINE_PARAMETERS = {"out_vector": "OUTPUT_POLYGONS", "out_probability": "OUTPUT_PROBABILITY",
                         "out_mask": "OUTPUT_MASK", "out_review": "OUTPUT_REVIEW",
                         "out_review_areas": "OUTPUT_REVIEW_AREAS", "run": "RUN_FOLDER",
                         "scheduler_file": "SCHEDULER"}

    def tr(self, text: str) -> str:
        return QCoreApplication.translate(type(self).__name__, text)

    def createInstance(self) -> "EngineAlgorithm":  # noqa: N802
        return type(self)()

    def icon(self) -> QIcon:
        return QIcon(str(PLUGIN_DIR / self.ICON))

    def group(self) -> str:
        return ""

    def groupId(self) -> str:  # noqa: N802
        return ""

    def helpUrl(self) -> str:  # noqa: N802
        return "https://github.com/hrmnet-qgis/hrmnet-qgis#readme"

    def label(self, name: str) -> str:
        """The label the dialog shows for parameter ``name``, quoted and without its hints in
        brackets (``"Sheet id field"``); the name itself when there is no such parameter."""
        definition = self.parameterDefinition(name)
        return f'"{short_label(definition.description())}"' if definition is not None else name

    def engine_error(self, exc: EngineError) -> QgsProcessingException:
        """The engine's error with the options it names (``--id-field``) given as the labels the
        user sees (``"Sheet id field"``); the CLI's own message is unchanged."""
        message = str(exc)
        for flag, dest in sorted(exc.options.items(), key=lambda item: -len(item[0])):
            name = self.ENGINE_PARAMETERS.get(dest, dest.upper())
            if self.parameterDefinition(name) is not None:
                message = re.sub(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", lambda _m: self.label(name), message)
        return QgsProcessingException(message)

    def engine_args(self, parameters: dict, context: QgsProcessingContext) -> tuple:
        """The engine options for ``parameters`` and the output location(s) (per algorithm)."""
        raise NotImplementedError

    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext) -> tuple:  # noqa: N802
        """QGIS's checks, then the mapping to engine options (its one-line message when it fails)."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        try:
            self.engine_args(parameters, context)
            # No engine (or a light one for a torch model): said once, before running (qgis_process
            # printed a failure three times).
            engine_python(self._model_file(parameters, context), self.COMMAND if self.NEEDS_TORCH else "")
        except QgsProcessingException as exc:
            return False, str(exc)
        except EngineSetupError as exc:
            return False, str(exc)
        return True, ""

    def _model_file(self, parameters: dict, context: QgsProcessingContext) -> str:
        """The MODEL parameter's file ('' when the algorithm has none or it is empty)."""
        if self.parameterDefinition("MODEL") is None:
            return ""
        return self.parameterAsFile(parameters, "MODEL", context) or ""

    def prepareAlgorithm(self, parameters: dict, context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> bool:
        """Read layers and parameters in the main thread (layers belong to it)."""
        self._prepared = self.engine_args(parameters, context)
        # The outputs Processing was asked to load: QGIS registers them here, in the main thread's
        # context, but a background task (the algorithm dialog) replaces that list with the one of
        # the context processAlgorithm runs in (QgsProcessingAlgorithm::postProcess ->
        # QgsProcessingContext::takeResultsFrom). processAlgorithm registers them again there.
        self._to_load = queued_layers(context)
        return True

    def prepared(self, parameters: dict, context: QgsProcessingContext) -> tuple:
        """What :meth:`prepareAlgorithm` computed (or compute it now when it did not run)."""
        prepared = getattr(self, "_prepared", None)
        return prepared if prepared is not None else self.engine_args(parameters, context)

    def run_engine(
        self,
        args: Sequence[str],
        feedback: Optional[QgsProcessingFeedback],
        cleanup: Sequence[str] = (),
        stop_grace_s: float = 30.0,
        on_event: Optional[Callable[[dict], None]] = None,
        partial_codes: Sequence[int] = (),
        cancelled: str = "",
    ) -> EngineRun:
        """Run ``python -m engine COMMAND args`` with this feedback; errors as QgsProcessingException.

        ``on_event`` sees each engine event before the feedback does; ``partial_codes`` are exit
        statuses that are a result (not an error); ``cancelled`` replaces the cancel message."""
        try:
            python = engine_python(option_value(args, "--model"), self.COMMAND if self.NEEDS_TORCH else "")
        except EngineSetupError as exc:
            raise QgsProcessingException(str(exc)) from exc
        reporter = FeedbackReporter(feedback, self.COMMAND)
        if feedback is not None:
            feedback.pushCommandInfo(f"{python} -m engine {self.COMMAND} " + " ".join(quoted(a) for a in args))

        def both(event: dict) -> None:
            if on_event is not None:
                on_event(event)
            reporter(event)

        try:
            return run_engine(
                self.COMMAND,
                args,
                python=python,
                on_event=both,
                on_stderr=reporter.stderr,
                is_cancelled=(feedback.isCanceled if feedback is not None else None),
                cleanup=cleanup,
                stop_grace_s=stop_grace_s,
                partial_codes=partial_codes,
            )
        except EngineCancelled as exc:
            raise QgsProcessingException(cancelled or self.tr("Cancelled: no output was written.")) from exc
        except EngineError as exc:
            raise self.engine_error(exc) from exc

    def load_outputs(self, context: QgsProcessingContext, layers: Sequence[OutputLayer]) -> None:
        """Queue the written ``layers`` that the user asked to load, styled, named and stacked.

        Called from processAlgorithm, i.e. with the context QGIS keeps the list of layers to load
        from (the task's thread context in the dialog, the one context in batch and scripts).
        Optional outputs left blank and outputs the engine did not write are not queued, so
        QGIS does not report them as "not correctly generated".
        """
        asked = getattr(self, "_to_load", None)
        if asked is None:  # prepareAlgorithm did not run: the parameters were read in this context
            asked = queued_layers(context)
        ours = {absolute(layer.path) for layer in layers}
        keep = {path: d for path, d in queued_layers(context).items() if path not in ours}
        stack: dict = {}
        for layer in layers:
            path = absolute(layer.path)
            details = asked.get(path)
            if details is None or not Path(path).exists():
                continue
            definition = self.parameterDefinition(layer.key)
            description = definition.description() if definition is not None else ""
            name, numbered, forced = details.name, False, details.forceName
            if not name or name == description:  # not named by the user or a model
                name, numbered, forced = output_layer_name(path, layer.label, description or name)
            queued = QgsProcessingContext.LayerDetails(name, details.project, details.outputName, details.layerTypeHint)
            queued.forceName = forced
            loader = StyleLoader(layer.qml, layer.rank, stack, numbered)
            KEEP_ALIVE.append(loader)
            queued.setPostProcessor(loader)
            keep[path] = queued
        context.setLayersToLoadOnCompletion(keep)


def option_value(args: Sequence[str], name: str) -> str:
    """The value after ``name`` in ``args`` ('' when absent)."""
    args = [str(a) for a in args]
    return args[args.index(name) + 1] if name in args[:-1] else ""


def quoted(arg: str) -> str:
    """``arg`` as shown in the log's command line: in double quotes when it has a space or is empty."""
    text = str(arg)
    return f'"{text}"' if (" " in text or not text) else text
