"""The engine's full locks (engine/locks/light.txt and full.txt, made by ``make locks``): every
package pinned ``==`` with hashes, for Linux, Windows and macOS and Python 3.9 to 3.12, in
agreement with pyproject.toml, engine/light-requirements.txt and constraints.txt; the light set
resolves within its lock for real (pip --dry-run --report); "Set up engine" installs from them."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from hrmnet_qgis import engine_requirements

ROOT = Path(__file__).resolve().parents[1]

SOURCES = {"light": ROOT / "engine" / "light-requirements.txt", "full": ROOT / "pyproject.toml"}
PLATFORMS = {  # the platforms QGIS users have
    "linux": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"},
    "windows": {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64", "os_name": "nt"},
    "macos": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64", "os_name": "posix"},
}
PYTHONS = ["3.9", "3.10", "3.11", "3.12"]


def _environment(platform: str, python: str) -> dict:
    env = {"python_version": python, "python_full_version": python + ".0", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "platform_release": "", "platform_version": "",
           "implementation_version": python + ".0", "extra": ""}
    return {**env, **PLATFORMS[platform]}


def _source_requirements(kind: str) -> list[Requirement]:
    text = SOURCES[kind].read_text(encoding="utf-8")
    lines = (engine_requirements.dependencies(text) if kind == "full" else engine_requirements.constraints(text))
    return [Requirement(line) for line in lines]


def _constraints() -> list[Requirement]:
    return [Requirement(line) for line in engine_requirements.constraints((ROOT / "constraints.txt").read_text())]


def _resolved(kind: str, env: dict) -> dict[str, str]:
    """name -> version the lock gives in ``env`` (fails on two versions of one package)."""
    out: dict[str, str] = {}
    for entry in engine_requirements.load_lock(ROOT, kind):
        if entry.marker and not Marker(entry.marker).evaluate(env):
            continue
        assert out.setdefault(entry.name, entry.version) == entry.version, f"{kind}: two versions of {entry.name}"
    return out


@pytest.mark.parametrize("kind", ["light", "full"])
def test_every_entry_is_pinned_with_hashes(kind):
    text = (ROOT / engine_requirements.LOCKS[kind]).read_text(encoding="utf-8")
    entries = engine_requirements.parse_lock(text)
    assert len(entries) > 30
    for entry in entries:
        hashes = [line for line in entry.block.splitlines() if "--hash=sha256:" in line]
        assert hashes, f"{entry.name}: no hash"
    assert "make locks" in text.splitlines()[1]  # how to regenerate it


@pytest.mark.parametrize("kind", ["light", "full"])
@pytest.mark.parametrize("platform", sorted(PLATFORMS))
@pytest.mark.parametrize("python", PYTHONS)
def test_the_lock_satisfies_its_requirements_and_pins(kind, platform, python):
    """Each Python and platform gets one version of every package the set asks for, within its range and
    within constraints.txt's pins (a stale lock fails here: run ``make locks``)."""
    env = _environment(platform, python)
    got = _resolved(kind, env)
    for req in _source_requirements(kind) + _constraints():
        name = canonicalize_name(req.name)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        if name not in got:
            assert req in _constraints(), f"{kind} lock, {platform} {python}: {req.name} missing (make locks)"
            continue  # a pin of a package the set does not use (PyQt6, bandit ...)
        assert req.specifier.contains(got[name], prereleases=True), (
            f"{kind} lock, {platform} {python}: {name}=={got[name]} does not satisfy {req} (make locks)")


def test_the_light_lock_has_no_torch_and_the_full_lock_has_it():
    light = _resolved("light", _environment("linux", "3.11"))
    full = _resolved("full", _environment("linux", "3.11"))
    assert "torch" not in light and "onnxruntime" in light and "distributed" in light  # dask[distributed]
    assert full["torch"] == "2.13.0" and full["numpy"].startswith("1.")
    assert _resolved("full", _environment("windows", "3.9"))["torch"].startswith("2.")  # 3.9 gets an older torch


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_the_light_set_resolves_entirely_within_its_lock(tmp_path):
    """pip resolves engine/light-requirements.txt under the lock's pins for this Python and platform:
    every package it would install is in the lock at the lock's version (nothing unpinned)."""
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable: the dry run needs the package index")
    pins = tmp_path / "pins.txt"
    pins.write_text(engine_requirements.pins(engine_requirements.load_lock(ROOT, "light")), encoding="utf-8")
    report = tmp_path / "report.json"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                          "--report", str(report), "-r", str(SOURCES["light"]), "-c", str(pins)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    installs = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
                for i in json.loads(report.read_text())["install"]}
    here = _resolved("light", _marker_environment())
    unpinned = {n: v for n, v in installs.items() if here.get(n) != v}
    assert installs and not unpinned, f"not in the light lock: {unpinned}"


def _marker_environment() -> dict:
    from packaging.markers import default_environment

    return {**default_environment(), "extra": ""}


def test_set_up_engine_installs_the_locks():
    from hrmnet_qgis import setup_engine

    no_gpu = lambda: (None, "no NVIDIA GPU")  # noqa: E731
    light = setup_engine.install_plan(setup_engine.LIGHT, (3, 11), [], gpu=no_gpu)
    lock = engine_requirements.load_lock(ROOT, "light")
    assert light.locked == engine_requirements.hashed(lock) and light.build == []
    gpu_light = setup_engine.install_plan(setup_engine.LIGHT, (3, 11), [],
                                          onnx_build=setup_engine.onnxruntime_options("linux")[1])
    assert "onnxruntime==" not in gpu_light.locked and gpu_light.build == ["onnxruntime-gpu[cuda,cudnn]"]
    assert "onnxruntime-gpu==" in gpu_light.build_pins
    cpu = setup_engine.TorchBuild("cpu", setup_engine.PYTORCH_INDEX.format(build="cpu"), "CPU build", "", "")
    full = setup_engine.install_plan(setup_engine.FULL, (3, 11), [], torch_build=cpu)
    locked = {e.name for e in engine_requirements.parse_lock(full.locked)}
    assert "torch" not in locked and not any(n.startswith("nvidia-") for n in locked)
    assert {"numpy", "rasterio", "sympy", "jinja2"} <= locked  # torch's own pure dependencies stay locked
    assert full.build == ["torch>=2.1"] and "torch==2.13.0 ; python_full_version >= '3.10'" in full.build_pins
    assert full.pip_args == ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
