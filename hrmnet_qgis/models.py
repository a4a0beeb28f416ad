"""The model catalogue as the plugin sees it, through the engine (``python -m engine models``).

Plain Python (no Qt widgets): the Models dialog and the tests use it. Listing and downloading
run the engine in a subprocess (:func:`hrmnet_qgis.runner.run_engine`), so the engine's own
catalogue code (sha256 check, resume, cache folder) is the only one; the plugin setting
"catalogue address" reaches it as ``HRMNET_MODELS_URL`` (see :func:`hrmnet_qgis.runner.engine_env`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from .model_info import is_demonstration, read_model_info
from .runner import run_engine

__all__ = ["list_models", "download_model", "onnx_copy", "export_onnx_copy", "local_rows", "model_rows",
           "init_choices", "describe_row", "remember_models", "offered_models", "set_default_model"]

TRAINABLE = ("safetensors", "pth")  # what train --init loads; an .onnx graph cannot be fine-tuned

EventHandler = Callable[[dict], None]


def list_models(python: str, is_cancelled: Optional[Callable[[], bool]] = None) -> list[dict]:
    """Every catalogue entry (``models list``): name, format, url, sha256, size, gsd, bands,
    purpose, license, metrics, ``available`` and ``path`` (when it is here)."""
    run = run_engine("models", ["list"], python=python, is_cancelled=is_cancelled)
    return list((run.done.get("stats") or {}).get("models") or [])


def download_model(python: str, name: str, fmt: str, on_event: Optional[EventHandler] = None,
                   is_cancelled: Optional[Callable[[], bool]] = None) -> str:
    """Download (when needed) and verify catalogue model ``name`` in format ``fmt``; its path.
    Progress comes as ``progress`` events in bytes."""
    run = run_engine("models", ["get", name, "--format", fmt], python=python, on_event=on_event,
                     is_cancelled=is_cancelled)
    return str((run.done.get("outputs") or {}).get("model") or "")


def onnx_copy(model: str) -> str:
    """Where the ONNX copy of checkpoint ``model`` goes: beside it, same name, ``.onnx``."""
    return str(Path(model).with_suffix(".onnx"))


def export_onnx_copy(python: str, model: str, on_event: Optional[EventHandler] = None,
                     is_cancelled: Optional[Callable[[], bool]] = None) -> str:
    """``python -m engine export MODEL MODEL.onnx`` (needs the full engine): an ONNX copy the
    light engine runs, checked against torch by the engine before it is written."""
    out = onnx_copy(model)
    run_engine("export", [model, out], python=python, on_event=on_event, is_cancelled=is_cancelled, cleanup=[out])
    return out


def set_default_model(path: str) -> str:
    """Make model file ``path`` the one Detect changes and Map sheets propose (the plugin
    setting "default model"); the line that says so."""
    from . import settings

    settings.put(settings.DEFAULT_MODEL, path)
    return f"Default model: {path} (Detect changes and Map sheets propose it)"


def local_rows(paths: list[str], catalogue: list[dict]) -> list[dict]:
    """Rows for model files that are here but not in the catalogue (e.g. the default model, a
    trained one), with what their metadata says (read without the engine)."""
    known = {str(r.get("path")) for r in catalogue if r.get("path")}
    rows = []
    for path in dict.fromkeys(p for p in paths if p):
        if path in known or not Path(path).is_file():
            continue
        info = read_model_info(path) or {}
        training = info.get("training") or {}
        rows.append({"name": Path(path).name, "format": Path(path).suffix.lstrip(".").lower(), "available": True,
                     "path": path, "size": Path(path).stat().st_size, "gsd": info.get("gsd"),
                     "bands": info.get("bands"), "purpose": training.get("purpose") or
                     ("demonstration model" if is_demonstration(info) else "local file"),
                     "license": "", "metrics": training.get("test") or training.get("best_val") or {},
                     "catalogue": "local file"})
    return rows


def model_rows(catalogue: list[dict]) -> list[dict]:
    """What the *Models…* dialog lists: the catalogue's rows, then the model files that are here
    but not in it (the default model, the bundled demo model)."""
    from . import settings
    from .model_info import demo_model

    return catalogue + local_rows([settings.get(settings.DEFAULT_MODEL), demo_model()], catalogue)


def init_choices(rows: list[dict]) -> list[tuple[str, str, dict]]:
    """``(label, --init value, row)`` for the rows of :func:`model_rows` a training can start from:
    ``.safetensors`` and ``.pth`` only. A catalogue model is named (the engine downloads and
    verifies it, and takes its ``.safetensors`` before its ``.pth``), a local file is its path;
    each once, in the rows' order."""
    choices: dict[str, tuple[str, str, dict]] = {}
    for row in rows:
        if row.get("format") not in TRAINABLE:
            continue
        if row.get("catalogue") == "local file":
            value, label = str(row["path"]), f"{row.get('name')} (local file)"
        else:
            size = f", downloads {row['size'] / 1e6:.0f} MB" if row.get("size") and not row.get("available") else ""
            value, label = str(row.get("name")), f"{row.get('name')} (catalogue{size})"
        choices.setdefault(value, (label, value, row))
    return list(choices.values())


def remember_models(rows: list[dict]) -> None:
    """Store the paths of the models that are here (what the Model fields then offer)."""
    import json

    from . import settings

    settings.put(settings.MODELS_HERE, json.dumps([str(r["path"]) for r in rows if r.get("available") and r.get("path")]))


def offered_models() -> list[str]:
    """The model files the Model fields offer: the default model, the demo model and those
    :func:`remember_models` stored, each once, only those that exist."""
    import json

    from . import settings
    from .model_info import demo_model

    try:
        remembered = json.loads(settings.get(settings.MODELS_HERE) or "[]")
    except ValueError:
        remembered = []
    paths = [settings.get(settings.DEFAULT_MODEL), demo_model(), *[str(p) for p in remembered]]
    return [p for p in dict.fromkeys(paths) if p and Path(p).is_file()]


def describe_row(row: dict) -> str:
    """The row's metadata in a few lines of plain text (the dialog's details pane)."""
    metrics = dict(row.get("metrics") or {})
    measured = metrics.pop("measured_on", "")
    numbers = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                        if not isinstance(v, (dict, list)))
    size = f"{row['size'] / 1e6:.1f} MB" if row.get("size") else "size unknown"
    lines = [f"{row.get('name')} ({row.get('format')}, {size})",
             f"Purpose: {row.get('purpose') or '—'}",
             f"Ground resolution (GSD): {row['gsd']:g} m/pixel" if row.get("gsd") else "Ground resolution: unknown",
             f"Bands: {', '.join(map(str, row.get('bands') or [])) or '—'}",
             f"Licence: {row.get('license') or '—'}",
             f"Metrics: {numbers or '—'}" + (f" (measured on {measured})" if measured else ""),
             f"File: {row['path']}" if row.get("available") else f"Address: {row.get('url', '—')}",
             f"Catalogue: {row.get('catalogue') or '—'}"]
    return "\n".join(lines)
