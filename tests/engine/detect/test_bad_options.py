"""User mistakes in outputs and options: exit 2, one stderr line naming the file or
option, no traceback, nothing left behind."""
from __future__ import annotations

import os
import stat

import pytest
import torch

from tests.cli_errors import one_line_error

from .conftest import run_cli


def _args(before, after, model, *extra):
    return ["--before", before, "--after", after, "--model", model, *extra]


def test_output_folder_missing(setup, checkpoints):
    before, after, out = setup
    target = out / "nowhere" / "v.gpkg"
    one_line_error(run_cli(*_args(before, after, checkpoints["none"], "--out-vector", target)), str(target), "does not exist")
    assert not list(out.iterdir())


def test_output_folder_not_writable(setup, checkpoints, tmp_path):
    before, after, out = setup
    if os.geteuid() == 0:  # root writes anywhere a normal folder allows: use a kernel file system
        folder = "/sys"
        try:
            open(os.path.join(folder, ".probe.tif"), "wb").close()
            pytest.skip("no read-only folder available to root here")
        except OSError:
            pass
    else:
        folder = tmp_path / "readonly"
        folder.mkdir()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    target = os.path.join(folder, "p.tif")
    one_line_error(run_cli(*_args(before, after, checkpoints["none"], "--out-probability", target)), target, "not writable")
    assert not os.path.exists(target)


def test_unsupported_vector_extension(setup, checkpoints):
    before, after, out = setup
    target = out / "changes.kml"
    one_line_error(run_cli(*_args(before, after, checkpoints["none"], "--out-vector", target)), str(target), ".kml")
    assert not list(out.iterdir())


@pytest.mark.parametrize("tile,overlap,option", [("100", "16", "--tile-size 100"), ("64", "32", "--overlap 32")])
def test_bad_tiling(setup, checkpoints, tile, overlap, option):
    before, after, out = setup
    res = run_cli(*_args(before, after, checkpoints["none"], "--out-mask", out / "m.tif", "--tile-size", tile,
                         "--overlap", overlap))
    one_line_error(res, option)
    assert not list(out.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_asked_for_but_absent(setup, checkpoints):
    before, after, out = setup
    res = run_cli(*_args(before, after, checkpoints["none"], "--out-mask", out / "m.tif", "--device", "cuda"))
    one_line_error(res, "--device cuda", "CUDA is not available")
    assert not list(out.iterdir())
