"""Shared fixtures: paths to ../shared and small generated rasters."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HRMNET_SHARED", ROOT.parent / "shared"))
PARITY = SHARED / "parity"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _load_weights_module():
    spec = importlib.util.spec_from_file_location("parity_weights", PARITY / "weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    return SHARED


@pytest.fixture(scope="session")
def parity_weights(shared_dir):
    """The authors' deterministic test-weight generator (shared/parity/weights.py)."""
    return _load_weights_module()


@pytest.fixture(scope="session")
def expected_keys(shared_dir) -> list[tuple[str, tuple, str]]:
    """(key, shape, dtype) of every state_dict entry of the authors' model."""
    rows = []
    for line in (PARITY / "state_dict_keys.tsv").read_text().splitlines():
        if not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        shape = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
        rows.append((key, shape, dtype))
    return rows
