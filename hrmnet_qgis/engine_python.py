"""Which Python runs the engine.

Order: the plugin setting ``hrmnet/engine_python`` (written by "Set up engine"), else
the ``HRMNET_PYTHON`` environment variable, else the interpreter QGIS itself runs when
that one can import torch (or, for an ``.onnx`` model, onnxruntime); otherwise
:class:`EngineSetupError` says how to set one up. The checks run the candidate interpreter
in a subprocess: torch is never imported into QGIS.

A light engine (onnxruntime, no torch: "Set up engine › Detection only") runs ``.onnx``
models only; given a ``.safetensors``/``.pth`` model, :func:`engine_python` says in one line
to export it or to set up the full engine (:func:`check_model`).
"""
from __future__ import annotations

import os
# bandit B404: probes an interpreter with a fixed list argv
import subprocess  # nosec B404
import sys
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence

__all__ = ["EngineSetupError", "HOW_TO", "HOW_TO_ONNX",
           "LIGHT_ENGINE", "LIGHT_ENGINE_COMMAND", "resolve_python", "qgis_python_candidates", "can_import_torch",
           "can_import_onnxruntime", "is_onnx", "usable_for", "check_model", "engine_python"]

HOW_TO = (
    "No Python with the engine's requirements (torch) was found. Use Plugins > HRMNet change "
    "detection > Set up engine… to create one (a separate virtual environment; QGIS's own "
    "Python is not touched), or set the HRMNET_PYTHON environment variable to a Python "
    "that has the engine's requirements (see the README)."
)

#: No interpreter found for an ``.onnx`` model (one line; ``{model}``): either engine would do.
HOW_TO_ONNX = (
    "{model}: no Python that runs the engine was found; an .onnx model needs only the light engine "
    "(onnxruntime, no torch). Use Plugins > HRMNet change detection > Set up engine… > Detection only to "
    "create one (a separate virtual environment; QGIS's own Python is not touched), or set the "
    "HRMNET_PYTHON environment variable to a Python that has it (see the README)."
)

#: A torch model given to the light engine (one line; ``{model}``, ``{onnx}``: paths).
LIGHT_ENGINE = (
    "{model}: the engine is the light one (onnxruntime, no torch), which runs .onnx models only: export this "
    "model with python -m engine export {model} {onnx} where torch is installed, or set up the full engine "
    "(Plugins > HRMNet change detection > Set up engine… > Detection and training)"
)

#: A command that always needs torch (training) given the light engine (one line; ``{command}``).
LIGHT_ENGINE_COMMAND = (
    "{command}: needs torch, and the engine is the light one (onnxruntime, no torch), which runs detection "
    "with .onnx models only: set up the full engine (Plugins > HRMNet change detection > Set up engine… > "
    "Detection and training)"
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


def _can_import(python: str, modules: str) -> bool:
    try:
        # bandit B603: fixed list argv, no shell
        result = subprocess.run(  # nosec B603
            [python, "-c", "import " + modules],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


@lru_cache(maxsize=16)
def can_import_torch(python: str) -> bool:
    """True when ``python`` can import torch (checked once per interpreter, in a subprocess)."""
    return _can_import(python, "torch")


@lru_cache(maxsize=16)
def can_import_onnxruntime(python: str) -> bool:
    """True when ``python`` can import onnxruntime and rasterio (the light engine; once per interpreter)."""
    return _can_import(python, "onnxruntime, rasterio")


def is_onnx(model: str) -> bool:
    """Whether ``model`` names an exported ONNX model (by its extension, as the engine decides)."""
    return str(model).lower().endswith(".onnx")


def usable_for(model: str = "") -> Callable[[str], bool]:
    """The check a candidate interpreter must pass for ``model``: torch, or for ``.onnx`` torch or onnxruntime."""
    if model and is_onnx(model):
        return lambda python: can_import_torch(python) or can_import_onnxruntime(python)
    return can_import_torch


def check_model(python: str, model: str, has_torch: Callable[[str], bool] = can_import_torch,
                needs_torch: str = "") -> None:
    """Raise :class:`EngineSetupError` when ``python`` has no torch and ``model`` is a torch checkpoint
    (``.safetensors``/``.pth``: :data:`LIGHT_ENGINE`) or the command ``needs_torch`` names always
    needs it (training: :data:`LIGHT_ENGINE_COMMAND`); nothing for ``.onnx`` or no model."""
    if needs_torch:
        if not has_torch(python):
            raise EngineSetupError(LIGHT_ENGINE_COMMAND.format(command=needs_torch))
        return
    if not model or is_onnx(model) or has_torch(python):
        return
    onnx = str(Path(model).with_suffix(".onnx"))
    raise EngineSetupError(LIGHT_ENGINE.format(model=model, onnx=onnx))


def resolve_python(
    setting: str,
    environ: Mapping[str, str],
    candidates: Sequence[str],
    usable: Callable[[str], bool] = can_import_torch,
    missing: str = HOW_TO,
) -> str:
    """The engine interpreter from explicit inputs (pure; see :func:`engine_python`).

    Args:
        setting: value of the plugin setting (empty when unset).
        environ: environment (``HRMNET_PYTHON`` is read from it).
        candidates: QGIS's own interpreters, tried only when they pass ``usable``.
        usable: check for a candidate (default: can it import torch).
        missing: the message when nothing usable was found (what to set up).

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
    raise EngineSetupError(missing)


def engine_python(model: str = "", needs_torch: str = "") -> str:
    """The engine interpreter for this QGIS session (setting, HRMNET_PYTHON, QGIS's Python) that can
    run ``model``, or the command ``needs_torch`` names (a light engine runs ``.onnx`` only: see
    :func:`check_model`)."""
    from . import settings

    onnx = bool(model) and is_onnx(model) and not needs_torch
    python = resolve_python(settings.get(settings.ENGINE_PYTHON), os.environ, qgis_python_candidates(),
                            usable_for("" if needs_torch else model),
                            HOW_TO_ONNX.format(model=model) if onnx else HOW_TO)
    check_model(python, model, needs_torch=needs_torch)
    return python
