"""The plugin object in QGIS: classFactory, initGui/unload with an interface, dialogs offscreen."""
from __future__ import annotations

import sys

import pytest

pytestmark = pytest.mark.qgis


_KEEP: list = []  # providers must outlive their registration


class FakeIface:
    """The part of QgisInterface the plugin uses, backed by a real main window."""

    def __init__(self) -> None:
        from qgis.PyQt.QtWidgets import QMainWindow

        self.window = QMainWindow()
        self.menus: dict[str, list] = {}

    def mainWindow(self):  # noqa: N802
        return self.window

    def addToolBar(self, name):  # noqa: N802
        return self.window.addToolBar(name)

    def addPluginToMenu(self, menu, action):  # noqa: N802
        self.menus.setdefault(menu, []).append(action)

    def removePluginMenu(self, menu, action):  # noqa: N802
        self.menus[menu].remove(action)


def test_plugin_lifecycle_registers_provider_menu_and_toolbar(qgis_app):
    from qgis.core import QgsApplication

    import hrmnet_qgis

    registry = QgsApplication.processingRegistry()
    session_provider = registry.providerById("hrmnet")
    assert registry.removeProvider(session_provider)  # the plugin registers its own
    try:
        iface = FakeIface()
        plugin = hrmnet_qgis.classFactory(iface)
        plugin.initProcessing()  # what qgis_process calls, without touching iface
        assert plugin.provider is not None and len(registry.providerById("hrmnet").algorithms()) == 5
        provider = plugin.provider
        plugin.initGui()
        assert plugin.provider is provider, "initGui does not register a second provider"
        texts = [a.text() for a in iface.menus["&HRMNet change detection"]]
        assert texts == ["Detect changes…", "Train a model…", "Models…", "Set up engine…"]
        assert [a.text() for a in plugin.toolbar.actions()] == ["Detect changes…", "Train a model…", "Models…"]
        plugin.open_training()
        plugin.open_setup()
        assert plugin._dialogs["training"].isVisible() and plugin._dialogs["setup"].isVisible()
        plugin.unload()
        assert registry.providerById("hrmnet") is None
        assert iface.menus["&HRMNet change detection"] == []
    finally:
        from hrmnet_qgis.provider import HrmnetProvider

        if registry.providerById("hrmnet") is None:
            _KEEP.append(HrmnetProvider())
            registry.addProvider(_KEEP[-1])


def test_setup_dialog_builds_with_the_profile_folder_as_default(qgis_app):
    from qgis.core import QgsApplication

    from hrmnet_qgis.dialogs import SetupEngineDialog

    dialog = SetupEngineDialog()
    assert dialog.folder.filePath().startswith(QgsApplication.qgisSettingsDirPath().rstrip("/"))
    assert dialog.folder.filePath().endswith("hrmnet/engine-venv")
    assert not dialog.grab().isNull()


def test_the_plugin_never_imports_the_engine_or_torch_into_qgis(qgis_app):
    import hrmnet_qgis.algorithms.detect  # noqa: F401
    import hrmnet_qgis.dialogs.training_dialog  # noqa: F401
    import hrmnet_qgis.setup_engine  # noqa: F401

    loaded = [m for m in ("torch", "engine", "rasterio", "pyproj", "geopandas", "pyogrio") if m in sys.modules]
    assert loaded == []
