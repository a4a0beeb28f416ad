"""Stand-ins for the ``qgis.core`` names the plugin's dialogs (and ``hrmnet_qgis.compat``) import.

Not QGIS. The enums are Python enums with the base types QGIS 4 gives them under PyQt6
(``/BaseType=IntFlag/`` or ``IntEnum`` in python/PyQt6/core/auto_generated/qgis.sip.in) and
the values QGIS 3.22 has, only with the members the plugin uses. ``QgsSettings`` is a
QSettings over an ini file, as QgsSettings is a QSettings. ``QgsApplication.taskManager()``
only records the tasks added to it: running them is QGIS's job, so the checks emit a task's
signals themselves. Classes that need a QGIS project or Processing raise NotImplementedError.
"""
from __future__ import annotations

import enum
import os
import tempfile
from pathlib import Path
from typing import Optional

from PyQt6.QtCore import QObject, QSettings
from PyQt6.QtWidgets import QApplication

__all__ = ["Qgis", "QgsApplication", "QgsCoordinateReferenceSystem", "QgsMapLayer", "QgsProcessingContext",
           "QgsProcessingException", "QgsProcessingFeatureSourceDefinition", "QgsProject", "QgsRectangle",
           "QgsReferencedRectangle", "QgsSettings", "QgsTask", "QgsTaskManager"]

#: The QGIS profile folder of this process (settings file, default engine folders).
PROFILE = Path(os.environ.get("QGIS_STANDIN_PROFILE") or tempfile.mkdtemp(prefix="qgis-standin-profile-"))
PROFILE.mkdir(parents=True, exist_ok=True)


class Qgis:
    """The ``Qgis`` enums the plugin reads (through hrmnet_qgis/compat.py)."""

    class LayerType(enum.IntEnum):
        Vector = 0
        Raster = 1

    class LayerFilter(enum.IntFlag):
        RasterLayer = 1
        PolygonLayer = 16

    class ProcessingSourceType(enum.IntEnum):
        VectorPolygon = 2
        Vector = 5

    class ProcessingNumberParameterType(enum.IntEnum):
        Integer = 0
        Double = 1

    class ProcessingFileParameterBehavior(enum.IntEnum):
        File = 0
        Folder = 1

    class ProcessingParameterFlag(enum.IntFlag):
        Advanced = 2


class QgsSettings(QSettings):
    """QSettings in the profile's ini file (QgsSettings is a QSettings with QGIS's own file)."""

    def __init__(self) -> None:
        super().__init__(str(PROFILE / "QGIS" / "QGIS3.ini"), QSettings.Format.IniFormat)


class QgsTask(QObject):
    """The parts of QgsTask that the plugin's BackgroundTask calls (no thread: nothing runs it here)."""

    class Flag(enum.IntFlag):
        CanCancel = 2

    def __init__(self, description: str = "", flags: "QgsTask.Flag" = Flag.CanCancel) -> None:
        if not isinstance(flags, QgsTask.Flag):
            raise TypeError(f"QgsTask flags must be QgsTask.Flag, not {type(flags).__name__}")
        super().__init__()
        self._description, self._flags = description, flags
        self._cancelled, self._progress = False, 0.0

    def description(self) -> str:
        return self._description

    def flags(self) -> "QgsTask.Flag":
        return self._flags

    def cancel(self) -> None:
        self._cancelled = True

    def isCanceled(self) -> bool:  # noqa: N802 - QGIS's name
        return self._cancelled

    def setProgress(self, progress: float) -> None:  # noqa: N802 - QGIS's name
        self._progress = float(progress)

    def progress(self) -> float:
        return self._progress


class QgsTaskManager:
    """Records added tasks in ``tasks``; does not run them (that needs QGIS)."""

    def __init__(self) -> None:
        self.tasks: list[QgsTask] = []

    def addTask(self, task: QgsTask) -> int:  # noqa: N802 - QGIS's name
        if not isinstance(task, QgsTask):
            raise TypeError("addTask takes a QgsTask")
        self.tasks.append(task)
        return len(self.tasks)


_TASKS = QgsTaskManager()


class QgsApplication(QApplication):
    """A QApplication with the two static methods the dialogs call."""

    @staticmethod
    def qgisSettingsDirPath() -> str:  # noqa: N802 - QGIS's name
        return str(PROFILE) + "/"

    @staticmethod
    def taskManager() -> QgsTaskManager:  # noqa: N802 - QGIS's name
        return _TASKS


class QgsCoordinateReferenceSystem:
    """A CRS by its authority id (no transformations)."""

    def __init__(self, authid: str = "") -> None:
        self._authid = authid

    def authid(self) -> str:
        return self._authid

    def isValid(self) -> bool:  # noqa: N802 - QGIS's name
        return bool(self._authid)


class QgsRectangle:
    """xmin, ymin, xmax, ymax."""

    def __init__(self, xmin: float = 0.0, ymin: float = 0.0, xmax: float = 0.0, ymax: float = 0.0) -> None:
        self.bounds = (float(xmin), float(ymin), float(xmax), float(ymax))


class QgsReferencedRectangle(QgsRectangle):
    """A rectangle and its CRS."""

    def __init__(self, rect: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> None:
        super().__init__(*rect.bounds)
        self._crs = crs

    def crs(self) -> QgsCoordinateReferenceSystem:
        return self._crs


class QgsMapLayer:
    """A layer as the dialogs see it: an id, a name, an extent and a CRS (no data, no project)."""

    def __init__(self, layer_id: str, name: str, extent: Optional[QgsRectangle] = None,
                 crs: str = "EPSG:32633") -> None:
        self._id, self._name = layer_id, name
        self._extent, self._crs = extent or QgsRectangle(0, 0, 100, 100), QgsCoordinateReferenceSystem(crs)

    def extent(self) -> QgsRectangle:
        return self._extent

    def crs(self) -> QgsCoordinateReferenceSystem:
        return self._crs

    def id(self) -> str:
        return self._id

    def name(self) -> str:
        return self._name


class QgsProcessingFeatureSourceDefinition:
    """A layer id and whether only its selected features count."""

    def __init__(self, source: str, selectedFeaturesOnly: bool = False) -> None:  # noqa: N803 - QGIS's name
        self.source, self.selectedFeaturesOnly = source, bool(selectedFeaturesOnly)


class QgsProcessingException(Exception):
    """Raised by Processing; here only caught."""


class QgsProcessingContext:
    """Needs QGIS (a project, Processing): not available here."""

    def __init__(self) -> None:
        raise NotImplementedError("QgsProcessingContext needs QGIS")


class QgsProject:
    """Needs QGIS: not available here."""

    @staticmethod
    def instance() -> Optional["QgsProject"]:
        raise NotImplementedError("QgsProject needs QGIS")
