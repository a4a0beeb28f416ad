"""A checkpoint whose metadata is out of range is refused by detect in one line naming
the file and the field, before anything is written (it used to run: threshold 7 gave an
all-zero mask, tile_size 0 blamed a --tile-size nobody typed)."""
from __future__ import annotations

import json

import pytest

from .conftest import run_cli


def _rewrite_metadata(src, dst, **fields):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update({k: json.dumps(v) for k, v in fields.items()})
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.mark.parametrize("fields,name", [({"threshold": 7}, "threshold"), ({"tile_size": 0}, "tile_size"),
                                         ({"scaling": "oops"}, "scaling"), ({"tile_size": "abc"}, "tile_size")])
def test_detect_refuses_a_checkpoint_with_bad_metadata(setup, checkpoints, fields, name):
    before, after, out = setup
    model = _rewrite_metadata(checkpoints["none"], before.parent / "tampered.safetensors", **fields)
    res = run_cli("--before", before, "--after", after, "--model", model, "--out-mask", out / "m.tif")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert str(model) in lines[0] and f"metadata {name} =" in lines[0] and "--tile-size" not in lines[0]
    assert not list(out.iterdir())
