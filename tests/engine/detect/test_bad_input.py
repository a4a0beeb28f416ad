"""Every user mistake: exit 2, exactly one line on stderr naming the file and the problem,
no traceback, nothing left in the output folder."""
from __future__ import annotations

import torch

from tests.rasters import textured, write_geotiff
from tests.cli_errors import one_line_error

from .conftest import ORIGIN, jsonl, run_cli


def _detect(before, after, model, out, *extra):
    return run_cli("--before", before, "--after", after, "--model", model, "--out-vector", out / "v.gpkg",
                   "--out-probability", out / "p.tif", *extra)


def test_missing_file(setup, checkpoints):
    before, after, out = setup
    missing = before.parent / "missing.tif"
    one_line_error(_detect(missing, after, checkpoints["none"], out), str(missing), "not found")
    assert not list(out.iterdir())


def test_not_a_raster(setup, checkpoints):
    before, after, out = setup
    junk = before.parent / "notes.tif"
    junk.write_text("these are not pixels\n")
    one_line_error(_detect(before, junk, checkpoints["none"], out), str(junk), "not a raster")
    assert not list(out.iterdir())


def test_rasters_that_do_not_overlap(setup, checkpoints):
    before, _, out = setup
    far = write_geotiff(before.parent / "far.tif", textured(40, 50), origin=(ORIGIN[0] + 5000, ORIGIN[1]))
    res = _detect(before, far, checkpoints["none"], out, "--progress", "jsonl")
    one_line_error(res, str(far), "does not overlap")
    assert jsonl(res.stdout)[-1]["event"] == "error"  # the plugin reads the error from the protocol
    assert not list(out.iterdir())


def test_the_error_event_names_the_options_of_its_message(setup, checkpoints):
    """For front ends that show their own labels (the QGIS plugin); stderr keeps the CLI's words."""
    before, after, out = setup
    res = _detect(before, after, checkpoints["none"], out, "--tile-size", "33", "--progress", "jsonl")
    one_line_error(res, "--tile-size 33", "multiple of 32")
    event = jsonl(res.stdout)[-1]
    assert event["event"] == "error" and event["options"] == {"--tile-size": "tile_size"}
    res = _detect(before, far := write_geotiff(before.parent / "far2.tif", textured(40, 50),
                                               origin=(ORIGIN[0] + 5000, ORIGIN[1])),
                  checkpoints["none"], out, "--progress", "jsonl")
    assert "options" not in jsonl(res.stdout)[-1] and str(far) in jsonl(res.stdout)[-1]["message"]


def test_band_index_out_of_range(setup, checkpoints):
    before, after, out = setup
    one_line_error(_detect(before, after, checkpoints["none"], out, "--bands-after", "1,2,4"), str(after), "band 4 out of range")
    assert not list(out.iterdir())


def test_model_missing(setup):
    before, after, out = setup
    model = before.parent / "nomodel.safetensors"
    one_line_error(_detect(before, after, model, out), str(model), "not found")
    assert not list(out.iterdir())


def test_model_corrupt(setup, checkpoints):
    before, after, out = setup
    data = checkpoints["none"].read_bytes()
    bad = before.parent / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    one_line_error(_detect(before, after, bad, out), str(bad), "corrupt")
    assert not list(out.iterdir())


def test_model_of_another_architecture(setup):
    from safetensors.torch import save_file

    before, after, out = setup
    other = before.parent / "unet.safetensors"
    save_file({"conv.weight": torch.zeros(8, 3, 3, 3), "conv.bias": torch.zeros(8)}, str(other))
    one_line_error(_detect(before, after, other, out), str(other), "not an HRMNet checkpoint")
    assert not list(out.iterdir())
