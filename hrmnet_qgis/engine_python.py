"""Which Python runs the engine.

Order: the plugin setting ``hrmnet/engine_python`` (written by "Set up engine"), else
the ``HRMNET_PYTHON`` environment variable, else the interpreter QGIS itself runs when
that one can import torch; otherwise :class:`EngineSetupError` says how to set one up.
The checks run the candidate interpreter in a subprocess: torch is never imported
into QGIS.
"""
from __future__ import annotations

import os
# bandit B404: probes an interpreter with a fixed list argv
import subprocess  # nosec B404
import sys
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence

__all__ = ["EngineSetupError", "HOW_TO", "resolve_python", "qgis_python_candidates", "can_import_torch", "engine_python"]

HOW_TO = (
    "No Python with the engine's requirements (torch) was found. Use Plugins > HRMNet change "
    "detection > Set up engine… to create one (a separate virtual environment; QGIS's own "
    "Python is not touched), or set the HRMNET_PYTHON environment variable to a Python "
    "that has the engine's requirements (see the README)."
)


class EngineSetupError(Exception):
    """No usable engine interpreter; ``str(exc)`` tells the user what to do."""


def qgis_python_candidates() -> list[str]:
    """Interpreters that belong to the Python QGIS runs (existing files only).

    ``sys.executable`` inside QGIS is often the QGIS binary itself, so the python
    executable is looked up beside the running Python's prefix as well.
    """
    names: list[Path] = []
    exe = Path(sys.executable) if sys.executable else None
    if exe is not None and exe.name.lower().startswith("python"):
        names.append(exe)
    v = sys.version_info
    for prefix in dict.fromkeys([sys.exec_prefix, sys.base_exec_prefix]):
        base = Path(prefix)
        if os.name == "nt":
            names += [base / "python.exe", base / "python3.exe"]
        else:
            names += [base / "bin" / f"python{v.major}.{v.minor}", base / "bin" / "python3"]
    seen: list[str] = []
    for n in names:
        if n.is_file() and str(n) not in seen:
            seen.append(str(n))
    return seen


@lru_cache(maxsize=16)
def can_import_torch(python: str) -> bool:
    """True when ``python`` can import torch (checked once per interpreter, in a subprocess)."""
    try:
        # bandit B603: fixed list argv, no shell
        result = subprocess.run(  # nosec B603
            [python, "-c", "import torch"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def resolve_python(
    setting: str,
    environ: Mapping[str, str],
    candidates: Sequence[str],
    usable: Callable[[str], bool] = can_import_torch,
) -> str:
    """The engine interpreter from explicit inputs (pure; see :func:`engine_python`).

    Args:
        setting: value of the plugin setting (empty when unset).
        environ: environment (``HRMNET_PYTHON`` is read from it).
        candidates: QGIS's own interpreters, tried only when they pass ``usable``.
        usable: check for a candidate (default: can it import torch).

    Raises:
        EngineSetupError: a configured path does not exist, or nothing usable was found.
    """
    if setting:
        if not Path(setting).is_file():
            raise EngineSetupError(
                f"{setting}: the engine Python set in the plugin settings does not exist; "
                "run Plugins > HRMNet change detection > Set up engine… again"
            )
        return setting
    env_python = environ.get("HRMNET_PYTHON", "")
    if env_python:
        if not Path(env_python).is_file():
            raise EngineSetupError(f"{env_python}: HRMNET_PYTHON points to no file")
        return env_python
    for python in candidates:
        if usable(python):
            return python
    raise EngineSetupError(HOW_TO)


def engine_python() -> str:
    """The engine interpreter for this QGIS session (setting, HRMNET_PYTHON, QGIS's Python)."""
    from . import settings

    return resolve_python(settings.get(settings.ENGINE_PYTHON), os.environ, qgis_python_candidates())
