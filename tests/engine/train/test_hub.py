"""``train --backbone imagenet``: the real download code against a small HTTP server on 127.0.0.1.

The server serves generated files in the layout of timm's ``resnet18d`` (random weights):
a good one, a truncated one, one of another layout; it can drop the connection half-way,
or not be there at all. Nothing here reaches the internet.
"""
from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.errors import UserError
from engine.events import Events
from engine.hub import IMAGENET_FILE, IMAGENET_SHA256, IMAGENET_URL, cache_dir, imagenet_backbone
from engine.train.loop import NO_PRETRAINED_WARNING, TrainConfig, train
from tests.engine.model.test_backbone import timm_resnet18d_state
from tests.http_server import Server
from tests.engine.train.conftest import engine
from tests.engine.train.tiny_dataset import make_dataset


def _safetensors(state: dict, path: Path) -> bytes:
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(path))
    return path.read_bytes()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("weights")
    good = _safetensors(timm_resnet18d_state(3), folder / "good.safetensors")
    wrong_state = timm_resnet18d_state(4)
    wrong_state["conv1.0.weight"] = torch.zeros(64, 3, 7, 7)  # a plain resnet18 stem, not resnet18d
    wrong = _safetensors(wrong_state, folder / "wrong.safetensors")
    return {"/good": good, "/truncated": good[: len(good) // 2], "/wrong": wrong}


@pytest.fixture
def server(files):
    s = Server(files)
    yield s
    s.close()


def _env(tmp_path: Path, url: str, sha: str | None) -> dict:
    env = {"HRMNET_CACHE": str(tmp_path / "cache"), "HRMNET_BACKBONE_URL": url}
    if sha is not None:
        env["HRMNET_BACKBONE_SHA256"] = sha
    return env


def _collect() -> tuple[Events, list[dict]]:
    got: list[dict] = []
    return Events(got.append), got


def test_download_is_verified_cached_and_reported_in_bytes(server, files, tmp_path):
    env = _env(tmp_path, server.url("/good"), hashlib.sha256(files["/good"]).hexdigest())
    events, got = _collect()
    path = imagenet_backbone(events, env)
    assert path == tmp_path / "cache" / IMAGENET_FILE and path.read_bytes() == files["/good"]
    assert sorted(p.name for p in path.parent.iterdir()) == [IMAGENET_FILE]  # no .part left
    progress = [e for e in got if e["event"] == "progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == len(files["/good"])
    assert all(e["unit"] == "B" for e in progress)
    assert load_file(str(path))["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)
    # Cached: a second run makes no request.
    assert imagenet_backbone(Events(), env) == path and len(server.requests) == 1


def test_a_dropped_connection_resumes_with_a_range_request(server, files, tmp_path):
    server.mode = "drop_once"
    env = _env(tmp_path, server.url("/good"), hashlib.sha256(files["/good"]).hexdigest())
    events, got = _collect()
    path = imagenet_backbone(events, env)
    assert path.read_bytes() == files["/good"]
    half = len(files["/good"]) // 2
    assert server.requests == [("/good", None), ("/good", f"bytes={half}-")]
    assert any(e["event"] == "log" and e["level"] == "warning" and "resuming" in e["message"] for e in got)


def test_an_interrupted_download_is_kept_and_resumed_by_the_next_run(server, files, tmp_path):
    server.mode = "drop"
    env = _env(tmp_path, server.url("/good"), hashlib.sha256(files["/good"]).hexdigest())
    with pytest.raises(UserError, match="run again to resume") as exc:
        imagenet_backbone(Events(), env)
    assert "\n" not in str(exc.value)
    part = tmp_path / "cache" / (IMAGENET_FILE + ".part")
    kept = part.stat().st_size
    assert 0 < kept < len(files["/good"]) and not (tmp_path / "cache" / IMAGENET_FILE).exists()
    server.mode, server.requests = "ok", []
    path = imagenet_backbone(Events(), env)
    assert server.requests == [("/good", f"bytes={kept}-")]
    assert path.read_bytes() == files["/good"] and not part.exists()


def test_the_pinned_sha256_rejects_any_other_file(server, tmp_path):
    """Without HRMNET_BACKBONE_SHA256 only timm's own file passes (the generated one is not it)."""
    assert IMAGENET_URL == "https://huggingface.co/timm/resnet18d.ra2_in1k/resolve/main/model.safetensors"
    assert len(IMAGENET_SHA256) == 64
    with pytest.raises(UserError, match="rejected: sha256") as exc:
        imagenet_backbone(Events(), _env(tmp_path, server.url("/good"), None))
    assert "\n" not in str(exc.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_truncated_file_is_rejected_and_removed(server, files, tmp_path):
    env = _env(tmp_path, server.url("/truncated"), hashlib.sha256(files["/good"]).hexdigest())
    with pytest.raises(UserError, match="rejected"):
        imagenet_backbone(Events(), env)
    assert list((tmp_path / "cache").iterdir()) == []
    # Even when its checksum is waved through, the layout check refuses a cut safetensors file.
    env["HRMNET_BACKBONE_SHA256"] = ""
    with pytest.raises(UserError, match="not a safetensors file"):
        imagenet_backbone(Events(), env)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_file_of_another_layout_is_rejected_by_keys_and_shapes(server, files, tmp_path):
    env = _env(tmp_path, server.url("/wrong"), hashlib.sha256(files["/wrong"]).hexdigest())
    with pytest.raises(UserError, match="not a resnet18d backbone.*conv1.0.weight"):
        imagenet_backbone(Events(), env)
    assert list((tmp_path / "cache").iterdir()) == []


def test_no_server_says_where_to_put_the_file_by_hand(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(UserError) as exc:
        imagenet_backbone(Events(), _env(tmp_path, f"http://127.0.0.1:{port}/model.safetensors", None))
    message = str(exc.value)
    assert "\n" not in message and "cannot connect" in message
    assert str(tmp_path / "cache" / IMAGENET_FILE) in message and IMAGENET_URL in message and "--backbone" in message


def test_cache_folder_per_platform(tmp_path):
    assert cache_dir({"HRMNET_CACHE": str(tmp_path)}) == tmp_path
    assert cache_dir({"HOME": "/h"}, "linux") == Path("/h/.cache/hrmnet")
    assert cache_dir({"HOME": "/h", "XDG_CACHE_HOME": "/x"}, "linux") == Path("/x/hrmnet")
    assert cache_dir({"HOME": "/h"}, "darwin") == Path("/h/Library/Caches/hrmnet")
    assert cache_dir({"HOME": "/h", "LOCALAPPDATA": "C:/L"}, "win32") == Path("C:/L/hrmnet/cache")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), {"train": 2}, size=64)


def test_train_backbone_imagenet_starts_from_the_downloaded_weights(server, files, data, tmp_path, monkeypatch):
    for k, v in _env(tmp_path, server.url("/good"), hashlib.sha256(files["/good"]).hexdigest()).items():
        monkeypatch.setenv(k, v)
    events, got = _collect()
    train(TrainConfig(data=str(data), out=str(tmp_path / "run"), steps=1, batch_size=2, crop=32, device="cpu",
                      backbone="imagenet"), events)
    trained = load_file(tmp_path / "run" / "last.safetensors")
    source = load_file(tmp_path / "cache" / IMAGENET_FILE)
    k = "layer4.1.conv2.weight"
    # One AdamW step moves each weight by about lr·0.1 = 5e-5; a fresh init would differ by far more.
    assert (trained[f"encoder.context_encoder.{k}"] - source[k].float()).abs().max().item() < 1e-3
    assert not any(e["event"] == "log" and e["message"] == NO_PRETRAINED_WARNING for e in got)


def test_training_from_random_weights_warns_how_to_fix_it(data, tmp_path):
    events, got = _collect()
    train(TrainConfig(data=str(data), out=str(tmp_path / "run"), steps=1, batch_size=2, crop=32, device="cpu"),
          events)
    warnings = [e["message"] for e in got if e["event"] == "log" and e["level"] == "warning"]
    assert NO_PRETRAINED_WARNING in warnings
    assert "well below the paper" in NO_PRETRAINED_WARNING and "--backbone imagenet" in NO_PRETRAINED_WARNING


def test_cli_offline_is_one_line_and_writes_nothing(data, tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HRMNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HRMNET_BACKBONE_URL", f"http://127.0.0.1:{port}/m.safetensors")
    run = tmp_path / "run"
    p = engine("train", "--data", str(data), "--out", str(run), "--steps", "1", "--device", "cpu",
               "--backbone", "imagenet", "--progress", "none")
    assert p.returncode == 2, p.stderr
    errors = [line for line in p.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "Traceback" not in p.stderr, p.stderr
    assert "put it at" in errors[0] and not run.exists()
