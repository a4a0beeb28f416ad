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

Run it after changing pyproject.toml's dependencies, engine/light-requirements.txt or
constraints.txt (tests/test_locks.py fails while a lock no longer satisfies them), and commit
the two files; it resolves against PyPI as it is that day. Needs uv (in the ``[test]``
extra) and access to PyPI.

Usage: ``python tools/make_locks.py`` (``make locks``).
"""
from __future__ import annotations

import argparse
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    LOCKS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in SETS.items():  # both compiled before either is replaced
            compile_lock(source, Path(tmp) / name)
        for name in SETS:
            shutil.copyfile(Path(tmp) / name, LOCKS / name)
            print(f"wrote {LOCKS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
