"""engine.model_fit: the model's description and the warnings when it does not fit the imagery."""
from __future__ import annotations

import pytest
from affine import Affine
from rasterio.crs import CRS

from engine.checkpoint import ModelInfo
from engine.events import Events
from engine.model_fit import describe_model, fit_warnings, is_demonstration, raster_gsd_m, report

DEMO_PURPOSE = "DEMONSTRATION model for synthetic scenes (python -m engine synth); not for real imagery"


def trained(gsd=0.5, **training) -> ModelInfo:
    base = {"data": "/data/levir", "step": 4000, "best_step": 3600, "best_val": {"f1": 0.9123}}
    base.update(training)
    return ModelInfo(gsd=gsd, tile_size=256, overlap=64, threshold=0.4, training=base)


def test_description_has_architecture_bands_gsd_purpose_and_training():
    lines = describe_model(trained(purpose="buildings in 0.5 m aerial imagery"), "m.safetensors")
    assert lines[0] == ("m.safetensors: HRMNet, bands red,green,blue (uint8), trained at 0.5 m/pixel, "
                        "tiles 256 px (overlap 64), threshold 0.4")
    assert lines[1] == "purpose: buildings in 0.5 m aerial imagery"
    assert lines[2] == "training: 4000 steps on /data/levir, best validation F1 0.912 (step 3600)"


def test_unknown_gsd_and_no_training_record_are_said_plainly():
    lines = describe_model(ModelInfo(), "m")
    assert lines == ["m: HRMNet, bands red,green,blue (uint8), ground sampling distance it was trained at: "
                     "unknown, tiles 512 px (overlap 128), threshold 0.5"]


@pytest.mark.parametrize("raster_gsd, warned", [(0.5, False), (1.0, False), (0.25, False), (1.01, True),
                                                (30.0, True), (0.2, True), (None, False)])
def test_gsd_more_than_twice_off_either_way_is_warned(raster_gsd, warned):
    found = fit_warnings(trained(gsd=0.5), raster_gsd, "m.safetensors", "a.tif")
    assert bool(found) == warned
    if warned:
        assert found[0].startswith("a.tif: ") and "0.5 m/pixel m.safetensors was trained at" in found[0]
        assert ("coarser" if raster_gsd > 0.5 else "finer") in found[0]


def test_landsat_pair_with_the_demo_model_gets_both_warnings():
    demo = trained(gsd=0.5, purpose=DEMO_PURPOSE)
    assert is_demonstration(demo)
    found = fit_warnings(demo, 30.0, "demo.safetensors", "landsat.tif")
    assert len(found) == 2
    assert found[0].startswith("demo.safetensors: this is a demonstration model (DEMONSTRATION model")
    assert found[1].startswith("landsat.tif: 30 m/pixel is 60x coarser than the 0.5 m/pixel")


def test_model_without_gsd_only_warns_when_it_is_a_demonstration():
    assert fit_warnings(trained(gsd=None), 30.0) == []
    assert len(fit_warnings(trained(gsd=None, demo=True), 30.0)) == 1


def test_raster_gsd_in_metres_for_projected_feet_and_geographic_grids():
    assert raster_gsd_m(Affine(0.5, 0, 300000, 0, -0.5, 5500000), CRS.from_epsg(32633), 100) == pytest.approx(0.5)
    # US survey feet: 10 ft pixels are about 3.048 m.
    assert raster_gsd_m(Affine(10, 0, 0, 0, -10, 0), CRS.from_epsg(2227), 100) == pytest.approx(3.048, rel=1e-3)
    # 1 arc-second at the equator is about 30.9 m.
    sec = 1 / 3600
    assert raster_gsd_m(Affine(sec, 0, 10, 0, -sec, 0.05), CRS.from_epsg(4326), 360) == pytest.approx(30.9, rel=1e-2)
    assert raster_gsd_m(Affine(1, 0, 0, 0, -1, 0), None, 10) is None


def test_report_logs_the_description_then_the_warnings():
    events = []

    class Pair:
        transform = Affine(30, 0, 300000, 0, -30, 5500000)
        crs = CRS.from_epsg(32633)
        height = 100

        class before:  # noqa: N801 - stands for a DateSource
            path = "landsat_2015.tif"

    warnings = report(trained(purpose=DEMO_PURPOSE), Pair(), Events(events.append), "demo.safetensors")
    assert [e["level"] for e in events] == ["info", "info", "info", "warning", "warning"]
    assert events[3]["message"] == warnings[0] and "landsat_2015.tif: 30 m/pixel" in events[4]["message"]
