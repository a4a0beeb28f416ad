"""A GeoPackage's layer is named after its file (issue 10, item 3)."""
from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import changed_pair, run_cli


@pytest.mark.parametrize("ext", [".gpkg", ".fgb", ".geojson"])
def test_the_vector_layer_is_named_after_the_file(tmp_path, checkpoints, ext):
    """QGIS names a loaded GeoPackage layer after its layer name: every result was "changes"."""
    import pyogrio

    before, after = changed_pair(tmp_path, size=(96, 96), square=(30, 30, 20, 20))
    out = tmp_path / f"sheet 12 changes{ext}"
    run = run_cli("--before", before, "--after", after, "--model", checkpoints["random"], "--out-vector", out,
                  "--device", "cpu", "--progress", "none")
    assert run.returncode == 0, run.stderr
    assert [name for name, _ in pyogrio.list_layers(out)] == ["sheet 12 changes"]


def test_a_model_trained_at_the_rasters_resolution_gets_no_fit_warning(tmp_path, checkpoints):
    before, after = changed_pair(tmp_path, size=(96, 96), square=(30, 30, 20, 20))
    run = run_cli("--before", before, "--after", after, "--model", checkpoints["random"], "--out-mask",
                  tmp_path / "m.tif", "--device", "cpu", "--progress", "jsonl")
    assert run.returncode == 0, run.stderr
    events = jsonl(run.stdout)
    warnings = [e["message"] for e in events if e.get("event") == "log" and e.get("level") == "warning"]
    assert not [w for w in warnings if "m/pixel" in w or "demonstration" in w]
    infos = [e["message"] for e in events if e.get("event") == "log"]
    assert any(m.startswith(f"{checkpoints['random']}: HRMNet, bands red,green,blue") and
               "ground sampling distance it was trained at: unknown" in m for m in infos)
    assert Path(tmp_path / "m.tif").is_file()
