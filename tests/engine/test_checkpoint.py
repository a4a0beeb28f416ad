"""Checkpoints: our safetensors format round-trips; the authors' .pth loads; bad files are refused."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.checkpoint import ModelInfo, load_checkpoint, load_model, read_info, save_checkpoint
from engine.errors import UserError
from engine.model import HRMNet

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model() -> HRMNet:
    torch.manual_seed(0)
    return HRMNet().eval()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True)


def test_safetensors_roundtrip_with_metadata(tmp_path, model):
    info = ModelInfo(gsd=0.5, threshold=0.4, training={"data": "LEVIR-CD+", "steps": 20000, "metrics": {"f1": 0.9}})
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, info)
    loaded, got = load_model(path)
    assert got == info
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    meta = read_info(path)
    assert meta.format_version == 1 and meta.architecture == "HRMNet"
    assert meta.bands == ["red", "green", "blue"] and meta.tile_size == 512 and meta.overlap == 128
    assert meta.scaling["mean"] == [0.485, 0.456, 0.406] and meta.scaling["std"] == [0.229, 0.224, 0.225]
    assert meta.engine_version


def test_fp16_storage_halves_the_file(tmp_path, model):
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    save_checkpoint(full, model, ModelInfo())
    save_checkpoint(half, model, ModelInfo(), dtype=torch.float16)
    assert os.path.getsize(half) < 0.55 * os.path.getsize(full)
    state, _ = load_checkpoint(half)
    assert state["encoder.context_encoder.conv1.0.weight"].dtype == torch.float32
    assert state["encoder.context_encoder.bn1.num_batches_tracked"].dtype == torch.int64


def test_authors_pth_loads_strict(tmp_path, model):
    path = tmp_path / "best_model.pth"
    torch.save(model.state_dict(), path)
    loaded, info = load_model(path)
    assert info.scaling["dtype"] == "uint8" and info.scaling["scale"] == [1 / 255.0] * 3
    x = torch.randn(1, 6, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])


def test_pth_from_dataparallel_and_wrapped(tmp_path, model):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    load_model(path)


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_pickle_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Evil(str(marker))}, f)
    # Sanity: the file really would run code if unpickled blindly.
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.save({"x": _Evil(str(marker))}, tmp_path / "evil_zip.pth")
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(tmp_path / "evil_zip.pth")
    assert not marker.exists()


def test_wrong_architecture_names_keys(tmp_path, model):
    state = dict(model.state_dict())
    state.pop("kr_decoder.fusion_conv.0.weight")
    state["head.extra.weight"] = torch.zeros(3)
    path = tmp_path / "other.safetensors"
    save_checkpoint(path, state, ModelInfo())
    with pytest.raises(UserError) as exc:
        load_checkpoint(path)
    msg = str(exc.value)
    assert "kr_decoder.fusion_conv.0.weight" in msg and "head.extra.weight" in msg and str(path) in msg
    assert "\n" not in msg


def test_wrong_shape_is_named(tmp_path, model):
    state = dict(model.state_dict())
    state["kr_decoder.fusion_conv.0.weight"] = torch.zeros(64, 321, 1, 1)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match="kr_decoder.fusion_conv.0.weight"):
        load_checkpoint(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_and_corrupt_files(tmp_path, model, suffix):
    good = tmp_path / f"good{suffix}"
    if suffix == ".safetensors":
        save_checkpoint(good, model, ModelInfo())
    else:
        torch.save(model.state_dict(), good)
    data = good.read_bytes()
    bad = tmp_path / f"truncated{suffix}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as exc:
        load_checkpoint(bad)
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)
    junk = tmp_path / f"junk{suffix}"
    junk.write_bytes(b"this is not a model at all" * 10)
    with pytest.raises(UserError):
        load_checkpoint(junk)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / f"missing{suffix}")


def test_cli_info_and_convert(tmp_path, model):
    pth = tmp_path / "best_model.pth"
    torch.save(model.state_dict(), pth)
    out = tmp_path / "converted.safetensors"
    r = cli("convert", str(pth), str(out), "--set", "gsd=0.5", "--set", "training.data=LEVIR-CD+", "--fp16")
    assert r.returncode == 0, r.stderr
    r = cli("info", str(out))
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    assert meta["gsd"] == 0.5 and meta["training"]["data"] == "LEVIR-CD+" and meta["architecture"] == "HRMNet"
    # Existing output refused without --overwrite; one line, no traceback.
    r = cli("convert", str(pth), str(out))
    assert r.returncode == 2 and "exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x04garbage")
    for args in (["info", str(tmp_path / "nope.safetensors")], ["info", str(bad)],
                 ["convert", str(bad), str(tmp_path / "o.safetensors")],
                 ["convert", str(bad), str(tmp_path / "o.bin")]):
        r = cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o.safetensors").exists()


# ----------------------------------------------------------------------------- metadata validation

BAD_SETS = [
    ("threshold=7", "threshold"),
    ("threshold=0", "threshold"),
    ('threshold="0.5"', "threshold"),
    ("scaling=oops", "scaling"),
    ('scaling.mean=[0.5, 0.5]', "scaling.mean"),
    ("scaling.std=[0, 1, 1]", "scaling.std"),
    ('scaling.dtype="uint9"', "scaling.dtype"),
    ("scaling.stdev=[1]", "scaling.stdev"),
    ("tile_size=abc", "tile_size"),
    ("tile_size=0", "tile_size"),
    ("tile_size=100", "tile_size"),
    ("overlap=256", "overlap"),
    ("overlap=-1", "overlap"),
    ("gsd=0", "gsd"),
    ("gsd=-0.5", "gsd"),
    ('bands=["red", "green"]', "bands"),
    ("training=oops", "training"),
    ("format_version=99", "format_version"),
    ("architecture=UNet", "architecture"),
]


@pytest.mark.parametrize("item,field", BAD_SETS)
def test_convert_refuses_bad_metadata_naming_the_set(tmp_path, model, item, field):
    pth = tmp_path / "best_model.pth"
    torch.save(model.state_dict(), pth)
    out = tmp_path / "m.safetensors"
    r = cli("convert", str(pth), str(out), "--set", item)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"--set {item}" in lines[0] and f"metadata {field} =" in lines[0], lines[0]
    assert not out.exists() and not list(tmp_path.glob(".m.safetensors*"))


def test_convert_accepts_consistent_changes(tmp_path, model):
    pth = tmp_path / "best_model.pth"
    torch.save(model.state_dict(), pth)
    out = tmp_path / "pan.safetensors"
    # one band: every scaling list must then hold one value (checked after all --set)
    r = cli("convert", str(pth), str(out), "--set", 'bands=["pan"]', "--set", "scaling.scale=[0.0039]",
            "--set", "scaling.mean=[0.45]", "--set", "scaling.std=[0.23]", "--set", "threshold=0.3",
            "--set", "tile_size=256", "--set", "overlap=64", "--set", "gsd=null")
    assert r.returncode == 0, r.stderr
    info = read_info(out)
    assert info.bands == ["pan"] and info.threshold == 0.3 and info.tile_size == 256 and info.gsd is None
    # but three scale values for one band are refused, blaming the --set that made them disagree
    r = cli("convert", str(pth), str(tmp_path / "bad.safetensors"), "--set", 'bands=["pan"]')
    assert r.returncode == 2 and "--set bands=" in r.stderr and "scaling.scale" in r.stderr, r.stderr


def _tampered(tmp_path: Path, model, **fields) -> Path:
    """A checkpoint whose metadata fields were rewritten behind the engine's back."""
    from safetensors.torch import save_file

    meta = ModelInfo().to_metadata()
    meta.update({k: json.dumps(v) for k, v in fields.items()})
    path = tmp_path / "tampered.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("fields,name", [
    ({"threshold": 7}, "threshold"),
    ({"tile_size": 0}, "tile_size"),
    ({"tile_size": "abc"}, "tile_size"),
    ({"scaling": "oops"}, "scaling"),
    ({"scaling": {"dtype": "uint8", "scale": [1], "mean": [0.4, 0.4, 0.4], "std": [1, 1]}}, "scaling.std"),
    ({"overlap": 300}, "overlap"),
    ({"gsd": -1}, "gsd"),
])
def test_reading_refuses_bad_metadata_naming_file_and_field(tmp_path, model, fields, name):
    path = _tampered(tmp_path, model, **fields)
    for read in (read_info, load_checkpoint):
        with pytest.raises(UserError) as exc:
            read(path)
        msg = str(exc.value)
        assert msg.startswith(f"{path}: metadata {name} =") and "\n" not in msg, msg
    r = cli("info", str(path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and str(path) in r.stderr


def test_save_refuses_bad_metadata_and_writes_nothing(tmp_path, model):
    path = tmp_path / "m.safetensors"
    with pytest.raises(UserError, match=r"m.safetensors: metadata threshold = 1.5"):
        save_checkpoint(path, model, ModelInfo(threshold=1.5))
    assert not list(tmp_path.iterdir())


def test_reading_refuses_metadata_that_is_not_json(tmp_path, model):
    from safetensors.torch import save_file

    meta = {**ModelInfo().to_metadata(), "threshold": "half"}
    path = tmp_path / "raw.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    with pytest.raises(UserError, match=r"raw.safetensors: metadata threshold = 'half': not valid JSON"):
        read_info(path)
