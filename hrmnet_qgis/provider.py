"""The Processing provider ``hrmnet`` ("HRMNet change detection")."""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import all_algorithms
from .algorithms.detect import VECTOR_EXTENSIONS

__all__ = ["HrmnetProvider", "PROVIDER_ID"]

PROVIDER_ID = "hrmnet"


class HrmnetProvider(QgsProcessingProvider):
    """Detect changes, train, evaluate and prepare datasets with the HRMNet engine."""

    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return "HRMNet change detection"

    def longName(self) -> str:  # noqa: N802
        return "HRMNet change detection (deep-learning change detection on two-date imagery)"

    def icon(self) -> QIcon:
        return QIcon(str(Path(__file__).resolve().parent / "icon.png"))

    def loadAlgorithms(self) -> None:  # noqa: N802
        for alg in all_algorithms():
            self.addAlgorithm(alg)

    # The engine writes files itself: only the formats it can write are offered.
    def supportsNonFileBasedOutput(self) -> bool:  # noqa: N802
        return False

    def supportedOutputVectorLayerExtensions(self) -> list[str]:  # noqa: N802
        return list(VECTOR_EXTENSIONS)

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["tif"]

    def defaultVectorFileExtension(self, hasGeometry: bool = True) -> str:  # noqa: N802, N803
        return "gpkg"

    def defaultRasterFileExtension(self) -> str:  # noqa: N802
        return "tif"
