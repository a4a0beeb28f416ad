"""Every option mistake is refused before the model loads or a pixel is read (issue 9,
item 7): the model and the rasters given here are junk, so a message naming the option
proves nothing else was touched first. Exit 2, one line, nothing written."""
from __future__ import annotations

import pytest

from tests.cli_errors import one_line_error

from .conftest import run_cli

BAD = [
    (["--min-area", "nan"], "--min-area"),
    (["--min-area", "-1"], "--min-area"),
    (["--simplify", "inf"], "--simplify"),
    (["--simplify", "-0.5"], "--simplify"),
    (["--threshold", "nan"], "--threshold"),
    (["--threshold", "1.5"], "--threshold"),
    (["--tile-size", "100"], "--tile-size 100"),
    (["--tile-size", "0"], "--tile-size 0"),
    (["--overlap", "-4"], "--overlap -4"),
    (["--tile-size", "64", "--overlap", "32"], "--overlap 32"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--read-threads", "0"], "--read-threads 0"),
    (["--extent", "1,2,3"], "--extent"),
    (["--extent", "5,0,1,9"], "--extent"),
    (["--extent", "0,0,nan,1"], "--extent"),
    (["--precision", "fp8"], "--precision fp8"),
    (["--device", "gpu"], "--device gpu"),
]


@pytest.mark.parametrize("extra,fragment", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_option_mistake_refused_before_model_and_pixels(tmp_path, extra, fragment):
    junk_model = tmp_path / "model.safetensors"
    junk_model.write_bytes(b"not a model")
    junk = tmp_path / "junk.tif"
    junk.write_text("not pixels\n")
    out = tmp_path / "out"
    out.mkdir()
    res = run_cli("--before", junk, "--after", junk, "--model", junk_model, "--out-vector", out / "v.gpkg", *extra)
    one_line_error(res, fragment)
    assert not list(out.iterdir())
