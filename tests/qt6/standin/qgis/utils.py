"""``qgis.utils``: ``iface`` is None outside the QGIS desktop (as under the real QGIS offscreen)."""
iface = None
