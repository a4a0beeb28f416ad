"""Fixtures shared by the sheets tests: the default scene is 2 x 2 sheets of a blob scene
(a test module that needs another layout defines its own ``scene``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from .standins import blob_scene, cut


@pytest.fixture()
def scene(tmp_path) -> Path:
    """A 100 x 110 px blob scene cut into 2 x 2 sheets (tile index in ``tmp_path/in``)."""
    before, after = blob_scene(100, 110)
    return cut(before, after, tmp_path / "in", [50], [60])
