"""The model catalogue (`models list | get | info | path`, `--model NAME`) against a catalogue and
model files served from 127.0.0.1: listing, download with progress, resume, a tampered file,
offline, and a catalogue name as --model in detect and sheets."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

from tests.cli_errors import one_line_error
from tests.http_server import Server

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "engine" / "demo"
INT8 = DEMO / "hrmnet_demo_int8.onnx"


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    model = INT8.read_bytes()
    catalogue = {"models": [
        {"name": "served-int8", "url": "models/demo_int8.onnx",
         "sha256": "sha256:" + hashlib.sha256(model).hexdigest(),  # pip's digest form (a bare hex digest below)
         "size": len(model), "gsd": 0.5, "bands": ["red", "green", "blue"], "purpose": "a test model",
         "license": "GPL-2.0-or-later", "metrics": {"f1": 0.876, "measured_on": "the demo scene"}},
        {"name": "tampered", "url": "models/tampered.onnx", "sha256": hashlib.sha256(model).hexdigest()},
    ]}
    return {"/catalogue.json": json.dumps(catalogue).encode(), "/models/demo_int8.onnx": model,
            "/models/tampered.onnx": model[:-10] + b"0123456789"}


@pytest.fixture
def server(files):
    s = Server(files)
    yield s
    s.close()


def _env(tmp_path: Path, catalogue: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HRMNET_CACHE", "HRMNET_MODELS_URL")}
    return {**env, "HRMNET_CACHE": str(tmp_path / "cache"), "HRMNET_MODELS_URL": catalogue}


def _cli(env: dict, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _events(res: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def test_list_shows_the_shipped_and_the_served_catalogue(server, tmp_path):
    res = _cli(_env(tmp_path, server.url("/catalogue.json")), "models", "list", "--json")
    assert res.returncode == 0, res.stderr
    rows = {(r["name"], r["format"]): r for r in json.loads(res.stdout)["models"]}
    assert rows[("hrmnet-demo", "onnx")]["available"] and rows[("hrmnet-demo", "onnx")]["path"] == str(INT8)
    served = rows[("served-int8", "onnx")]
    assert not served["available"] and served["url"] == server.url("/models/demo_int8.onnx")
    assert served["gsd"] == 0.5 and served["metrics"]["measured_on"] == "the demo scene"
    assert server.requests == [("/catalogue.json", None)]  # listing downloads no model


def test_get_downloads_with_progress_verifies_and_caches(server, files, tmp_path):
    env = _env(tmp_path, server.url("/catalogue.json"))
    res = _cli(env, "models", "get", "served-int8", "--progress", "jsonl")
    assert res.returncode == 0, res.stderr
    events = _events(res)
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == len(files["/models/demo_int8.onnx"])
    assert all(e["unit"] == "B" for e in progress)
    path = Path(events[-1]["outputs"]["model"])
    assert path == tmp_path / "cache" / "models" / "served-int8.onnx"
    assert path.read_bytes() == files["/models/demo_int8.onnx"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["served-int8.onnx"]  # no .part left
    assert _cli(env, "models", "path", "served-int8").stdout.strip() == str(path)
    info = json.loads(_cli(env, "models", "info", "served-int8").stdout)
    assert info["available"] and info["purpose"] == "a test model" and info["license"] == "GPL-2.0-or-later"
    requests = len(server.requests)
    assert _cli(env, "models", "get", "served-int8").stdout.strip() == str(path)
    assert [r for r in server.requests[requests:] if r[0] != "/catalogue.json"] == []  # cached: no download


def test_an_interrupted_download_resumes_on_the_next_get(server, files, tmp_path):
    env = _env(tmp_path, server.url("/catalogue.json"))
    server.mode, server.only = "drop", {"/models/demo_int8.onnx"}
    res = _cli(env, "models", "get", "served-int8", "--progress", "none")
    one_line_error(res, "run again to resume", skip_warnings=True)
    part = tmp_path / "cache" / "models" / "served-int8.onnx.part"
    assert 0 < part.stat().st_size < len(files["/models/demo_int8.onnx"])
    kept = part.stat().st_size
    server.mode = "ok"
    res = _cli(env, "models", "get", "served-int8", "--progress", "none")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "cache" / "models" / "served-int8.onnx").read_bytes() == files["/models/demo_int8.onnx"]
    assert ("/models/demo_int8.onnx", f"bytes={kept}-") in server.requests


def test_a_tampered_file_is_refused_and_nothing_is_kept(server, tmp_path):
    env = _env(tmp_path, server.url("/catalogue.json"))
    res = _cli(env, "models", "get", "tampered", "--progress", "none")
    one_line_error(res, "/models/tampered.onnx: downloaded file refused: sha256", "differs from the catalogue's",
                   "removed it")
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_says_where_to_put_the_file_and_uses_the_cached_catalogue(server, tmp_path):
    env = _env(tmp_path, server.url("/catalogue.json"))
    assert _cli(env, "models", "list").returncode == 0  # the catalogue is now in the cache
    server.close()
    res = _cli(env, "models", "get", "served-int8", "--progress", "none")
    line = one_line_error(res, "cannot connect", "download it elsewhere and put it at",
                          str(tmp_path / "cache" / "models" / "served-int8.onnx"), skip_warnings=True)
    assert "using the copy" in res.stderr and line
    # a catalogue file whose model address cannot be reached; no copy of a remote catalogue needed
    local = tmp_path / "catalogue.json"
    local.write_text(json.dumps({"models": [{"name": "far", "url": f"http://127.0.0.1:{_closed_port()}/far.onnx",
                                             "sha256": "0" * 64}]}))
    one_line_error(_cli(_env(tmp_path, str(local)), "models", "get", "far", "--progress", "none"), "far.onnx: cannot connect")


@pytest.mark.parametrize("entry, message", [
    ({"name": "x", "url": "x.onnx"}, "missing sha256 (name, url and sha256 are required)"),
    ({"name": "x", "url": "x.onnx", "sha256": "abc"}, "sha256 must be 64 hexadecimal digits"),
    ({"name": "x y", "url": "x.onnx", "sha256": "0" * 64}, "letters, digits"),
    ({"name": "x", "url": "x.bin", "sha256": "0" * 64}, "format 'bin'"),
])
def test_a_bad_catalogue_entry_is_one_line(tmp_path, entry, message):
    local = tmp_path / "catalogue.json"
    local.write_text(json.dumps({"models": [entry]}))
    one_line_error(_cli(_env(tmp_path, str(local)), "models", "list"), str(local), message)


def test_a_local_file_that_differs_from_its_sha256_is_refused(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"not the model")
    local = tmp_path / "catalogue.json"
    local.write_text(json.dumps({"models": [{"name": "mine", "url": "m.onnx", "sha256": "0" * 64}]}))
    env = _env(tmp_path, str(local))
    one_line_error(_cli(env, "models", "get", "mine", "--progress", "none"), "mine:", "refused: sha256")
    assert (tmp_path / "m.onnx").read_bytes() == b"not the model"  # the user's own file is never removed
    one_line_error(_cli(env, "info", "nosuchmodel"), "nosuchmodel: not a model file nor a catalogue model")


def test_the_shipped_catalogue_matches_the_shipped_files():
    from engine.catalogue import SHIPPED, parse_catalogue

    for entry in parse_catalogue(SHIPPED.read_text(), str(SHIPPED)):
        path = Path(entry.url)
        assert path.is_file(), path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256, path
        assert path.stat().st_size == entry.size


def _crop(src_path: Path, out: Path, col: int, size: int = 256) -> Path:
    from affine import Affine
    from rasterio.windows import Window

    with rasterio.open(src_path) as src:
        profile = {**src.profile, "width": size, "height": size, "transform": src.transform @ Affine.translation(col, 0)}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=Window(col, 0, size, size)))
    return out


def test_detect_and_sheets_take_a_catalogue_name(server, files, tmp_path):
    env = _env(tmp_path, server.url("/catalogue.json"))
    rows = ["id,before,after"]
    for name, col in (("west", 0), ("east", 256)):
        for date in ("before", "after"):
            _crop(DEMO / "data" / f"{date}.tif", tmp_path / f"{name}_{date}.tif", col)
        rows.append(f"{name},{name}_before.tif,{name}_after.tif")
    (tmp_path / "sheets.csv").write_text("\n".join(rows) + "\n")
    res = _cli(env, "detect", "--before", tmp_path / "west_before.tif", "--after", tmp_path / "west_after.tif",
               "--model", "served-int8", "--out-mask", tmp_path / "mask.tif", "--progress", "jsonl")
    assert res.returncode == 0, res.stderr
    events = _events(res)
    assert any(e["event"] == "progress" and e.get("unit") == "B" for e in events)  # downloaded first
    start = next(e for e in events if e["event"] == "start")
    assert start["precision"] == "int8" and "onnxruntime" in start["device"]
    assert (tmp_path / "cache" / "models" / "served-int8.onnx").is_file()
    res = _cli(env, "sheets", "--sheets", tmp_path / "sheets.csv", "--run", tmp_path / "run", "--model", "served-int8",
               "--out-mask", tmp_path / "sheets_mask.vrt", "--out-vector", tmp_path / "changes.gpkg", "--workers", "1",
               "--progress", "none")
    assert res.returncode == 0, res.stderr
    with rasterio.open(tmp_path / "sheets_mask.vrt") as mask:
        assert (mask.width, mask.height) == (512, 256)
    assert sum(1 for path, _ in server.requests if path == "/models/demo_int8.onnx") == 1  # sheets used the cache
