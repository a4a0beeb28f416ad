"""The CLI says what the model is and warns when it does not fit the imagery (issue 10, item 2);
a GeoPackage's layer is named after its file (item 3)."""
from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import ROOT, changed_pair, jsonl, run_cli

DEMO = ROOT / "engine" / "demo" / "hrmnet_demo.safetensors"


@pytest.mark.skipif(not DEMO.is_file(), reason="no demo model in this checkout")
def test_landsat_like_pair_with_the_demo_model_is_warned_about(tmp_path):
    before, after = changed_pair(tmp_path, size=(96, 96), square=(30, 30, 20, 20), pixel_size=30.0)
    run = run_cli("--before", before, "--after", after, "--model", DEMO, "--out-mask", tmp_path / "m.tif", "--device", "cpu",
                  "--tile-size", "96", "--overlap", "16", "--progress", "jsonl")
    assert run.returncode == 0, run.stderr
    events = jsonl(run.stdout)
    infos = [e["message"] for e in events if e.get("event") == "log" and e.get("level") == "info"]
    warnings = [e["message"] for e in events if e.get("event") == "log" and e.get("level") == "warning"]
    assert any(m.startswith(f"{DEMO}: HRMNet, bands red,green,blue (uint8), trained at 0.5 m/pixel") for m in infos)
    assert any(m.startswith("purpose: DEMONSTRATION model") for m in infos)
    assert any(m.startswith("training: ") and "best validation F1" in m for m in infos)
    assert any(m.startswith(f"{DEMO}: this is a demonstration model") for m in warnings)
    assert any(m.startswith(f"{before}: 30 m/pixel is 60x coarser than the 0.5 m/pixel") for m in warnings)


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
