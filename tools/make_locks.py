"""``make locks``: write the engine's full locks, engine/locks/light.txt and engine/locks/full.txt.

Each lock pins every package the set needs, transitive ones included, ``==`` with the sha256
of every file (``--hash``), for Linux, Windows and macOS and Python 3.9 onwards (one
"universal" resolution with environment markers: where Python 3.9 cannot run a package's
newest release, the lock says which release it gets). Made with ``uv pip compile``:

- light.txt: engine/light-requirements.txt (onnxruntime, no torch) with constraints.txt's pins;
- full.txt: pyproject.toml's dependencies (PyTorch) with constraints.txt's pins. Its torch
  lines and what only PyPI's torch build brings (``triton``, ``nvidia-*``, ``cuda-*``) are
  installed by "Set up engine" from the PyTorch build chosen for the computer (CPU or a CUDA
  build, from PyTorch's own index): torch at the lock's version, its GPU libraries as that
  build pins them; everything else comes from the lock with its hashes.

Then it checks that every lock installs from wheels alone on each target QGIS users have:
Linux x86_64 (manylinux_2_28), Windows x86_64 and macOS on Apple silicon (14 or newer: the
oldest macOS that rasterio's, torch's and onnxruntime's current wheels support; Intel Macs get
no torch or onnxruntime wheels), Python 3.9 to 3.12 (``uv pip compile --only-binary :all:``
under the lock's pins); a target without wheels fails ``make locks``.

Run it after changing pyproject.toml's dependencies, engine/light-requirements.txt or
constraints.txt (tests/test_locks.py fails while a lock no longer satisfies them), and commit
the two files; it resolves against PyPI as it is that day. Needs uv (in the ``[test]``
extra) and access to PyPI.

Usage: ``python tools/make_locks.py`` (``make locks``).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "engine" / "locks"
#: lock file -> the requirement source it is compiled from (constraints.txt always applies).
SETS = {"light.txt": "engine/light-requirements.txt", "full.txt": "pyproject.toml"}
LOWEST_PYTHON = "3.9"
PYTHONS = ("3.9", "3.10", "3.11", "3.12")
#: uv's target triple, and the macOS version wheels are checked for.
TARGETS = {"linux": ("x86_64-manylinux_2_28", None), "windows": ("x86_64-pc-windows-msvc", None),
           "macos": ("aarch64-apple-darwin", "14.0")}


def _uv() -> str:
    for candidate in (Path(sys.executable).with_name("uv"), shutil.which("uv")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise SystemExit("uv not found: pip install -c constraints.txt uv (it is in the [test] extra)")


def compile_lock(source: str, out: Path) -> None:
    """``uv pip compile`` of ``source`` with constraints.txt into ``out`` (universal, hashed)."""
    run = subprocess.run([_uv(), "pip", "compile", source, "-c", "constraints.txt", "--universal",
                          "--python-version", LOWEST_PYTHON, "--generate-hashes", "--no-strip-markers",
                          "--custom-compile-command", "make locks", "--quiet", "-o", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        raise SystemExit(f"uv pip compile {source} failed:\n{run.stderr.strip()}")


def _pins(lock: Path) -> str:
    """The lock's ``name==version ; marker`` lines (hrmnet_qgis/engine_requirements.py, loaded on its own)."""
    spec = importlib.util.spec_from_file_location("_engine_requirements", ROOT / "hrmnet_qgis" / "engine_requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pins(module.parse_lock(lock.read_text(encoding="utf-8")))


def check_wheels(source: str, lock: Path, tmp: Path) -> list[str]:
    """Targets (platform, Python) where ``source`` under ``lock``'s pins cannot install from wheels alone."""
    pins = tmp / f"{lock.stem}-pins.txt"
    pins.write_text(_pins(lock), encoding="utf-8")
    failed = []
    for name, (triple, macos) in TARGETS.items():
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
        if macos:
            env["MACOSX_DEPLOYMENT_TARGET"] = macos
        for python in PYTHONS:
            run = subprocess.run([_uv(), "pip", "compile", source, "-c", str(pins), "--python-platform", triple,
                                  "--python-version", python, "--only-binary", ":all:", "--quiet", "-o", os.devnull],
                                 cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
            if run.returncode != 0:
                why = [line.strip() for line in run.stderr.splitlines() if "Because" in line][:1] or ["?"]
                failed.append(f"{lock.name}: {name} Python {python}: {why[0]}")
    return failed


def main(argv: Optional[Sequence[str]] = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    LOCKS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in SETS.items():  # both compiled and checked before either is replaced
            compile_lock(source, Path(tmp) / name)
        failed = [f for name, source in SETS.items() for f in check_wheels(source, Path(tmp) / name, Path(tmp))]
        if failed:
            print("no wheels:\n" + "\n".join(failed), file=sys.stderr)
            return 1
        for name in SETS:
            shutil.copyfile(Path(tmp) / name, LOCKS / name)
            print(f"wrote {LOCKS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
