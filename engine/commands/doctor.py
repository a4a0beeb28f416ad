"""``python -m engine doctor [--json]``: what this engine installation will use, and what is broken.

Checks, each on its own (one failing check does not hide the others): Python, the
engine, torch and its CUDA build, the device and precision ``detect`` will use (with
one small forward pass there), GDAL/PROJ (through rasterio and pyproj), write access to
the download cache, the demo model and the models available (none is a failure). Exit 0 when every required check passes, else 1.
In the light engine (onnxruntime, no torch) torch is reported as not installed (not a
failure), the device is onnxruntime's execution provider and the ONNX demo model is run.
The plugin's "Test engine" button and "Set up engine" run ``doctor --json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Callable

__all__ = ["add_parser", "run", "diagnose"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check this installation: Python, torch/CUDA, GPU, GDAL/PROJ, cache, demo model",
                       description="Check this installation: Python, torch and CUDA versions, the device and "
                       "precision detection will use, GDAL/PROJ versions, write access to the download cache, "
                       "the demo model. Exit status 1 when a required check fails.")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the report")
    p.add_argument("--device", default="auto", help="device to check: auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--progress", choices=("bar", "jsonl", "none"), default="bar",
                   help="jsonl: the report as the stats of one JSON 'done' event on stdout (for the plugin)")
    p.set_defaults(func=run)


def _python() -> dict:
    return {"value": f"{platform.python_version()} ({sys.executable})", "python": platform.python_version()}


def _engine() -> dict:
    from .. import __version__

    return {"value": __version__, "engine": __version__}


#: The ONNX demo models, the one the plugin ships first.
ONNX_DEMOS = ("hrmnet_demo_int8.onnx", "hrmnet_demo.onnx")
LIGHT_TORCH = "not installed (light engine: detection with .onnx models only)"


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _torch() -> dict:
    if not _has_torch():
        return {"value": LIGHT_TORCH, "torch": None, "cuda": None, "engine_kind": "light", "skipped": True}
    import torch

    cuda = torch.version.cuda or None
    build = f"CUDA {cuda}" if cuda else ("ROCm " + torch.version.hip if getattr(torch.version, "hip", None) else "CPU")
    return {"value": f"{torch.__version__} ({build} build)", "torch": torch.__version__, "cuda": cuda}


def _onnx_device(device: str) -> dict:
    """The light engine's device: the onnxruntime providers ``--device`` picks (fp32)."""
    from ..onnx_predictor import import_onnxruntime, select_providers

    ort = import_onnxruntime()
    available = ort.get_available_providers()
    chosen = [p[0] if isinstance(p, tuple) else p for p in select_providers(device, available)]
    kind = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda",
            "DmlExecutionProvider": "directml"}.get(chosen[0], "cpu")
    return {"value": f"{kind} fp32 with onnxruntime {ort.__version__} ({', '.join(chosen)})", "device": kind,
            "precision": "fp32", "onnxruntime": ort.__version__, "providers": chosen}


def _device(device: str) -> Callable[[], dict]:
    def check() -> dict:
        if not _has_torch():
            return _onnx_device(device)
        import torch

        from ..model import HRMNet
        from ..runtime import select_runtime

        rt = select_runtime(device, "auto")
        info = rt.describe()
        name = torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else platform.processor() or "CPU"
        model = rt.prepare(HRMNet().eval())
        x = rt.tensor(torch.rand(1, 6, 64, 64))
        for _ in range(2):  # the first pass pays one-time set-up; the second is timed
            start = time.perf_counter()
            with torch.no_grad(), rt.autocast():
                prob, _ = model(x)
            if rt.device.type == "cuda":
                torch.cuda.synchronize(rt.device)
            ms = 1000 * (time.perf_counter() - start)
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        memory = (round(torch.cuda.get_device_properties(rt.device).total_memory / 2**30, 1)
                  if rt.device.type == "cuda" else None)
        value = f"{info['device']} {rt.precision}" + (f", {memory} GiB" if memory else "")
        value += f"; a 64 px forward pass took {ms:.0f} ms"
        if rt.device.type == "cpu" and gpus == 0 and torch.version.cuda:
            value += " (this CUDA build sees no GPU: check the NVIDIA driver)"
        return {"value": value, "device": str(rt.device), "device_name": name, "precision": rt.precision,
                "gpu_count": gpus, "gpu_memory_gib": memory, "forward_ok": bool(torch.isfinite(prob).all())}

    return check


def _gdal_proj() -> dict:
    import pyproj
    import rasterio

    gdal, proj = rasterio.__gdal_version__, pyproj.proj_version_str
    return {"value": f"GDAL {gdal} (rasterio {rasterio.__version__}), PROJ {proj} (pyproj {pyproj.__version__})",
            "gdal": gdal, "proj": proj}


def _cache() -> dict:
    from ..hub import IMAGENET_FILE, cache_dir

    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-", delete=True) as f:
        f.write(b"ok")
        f.flush()
    cached = (folder / IMAGENET_FILE).is_file()
    return {"value": f"{folder} writable; ImageNet backbone {'cached' if cached else 'not downloaded yet'}",
            "cache": str(folder), "imagenet_cached": cached}


def _onnx_demo_model(device: str) -> dict:
    """The light engine's demo check: the ONNX demo model on onnxruntime, one 64 px forward pass."""
    import numpy as np

    from ..demo import DEMO_DIR
    from ..onnx_predictor import load_onnx

    path = next((DEMO_DIR / n for n in ONNX_DEMOS if (DEMO_DIR / n).is_file()), DEMO_DIR / ONNX_DEMOS[0])
    if not path.is_file():
        return {"value": f"{path.name} not shipped with this installation", "demo_model": None, "skipped": True}
    predictor, info = load_onnx(path, device)
    prob = predictor(np.random.default_rng(0).random((1, 6, 64, 64), dtype=np.float32))
    if prob.shape != (1, 64, 64) or not np.isfinite(prob).all():
        raise RuntimeError(f"{path.name}: unexpected output {prob.shape}")
    return {"value": f"{path.name} runs on onnxruntime ({predictor.providers[0]}; bands {', '.join(info.bands)})",
            "demo_model": str(path)}


def _demo_model(device: str = "auto") -> dict:
    from ..demo import DEMO_MODEL

    if not _has_torch() or not DEMO_MODEL.is_file():  # the plugin ZIP ships only the int8 ONNX demo model
        return _onnx_demo_model(device)
    from ..checkpoint import load_model

    _, info = load_model(DEMO_MODEL)
    return {"value": f"{DEMO_MODEL.name} loads ({info.architecture}, bands {', '.join(info.bands)})", "demo_model": str(DEMO_MODEL)}


def _models() -> dict:
    """The catalogue models that are here and that this engine runs (the light engine: .onnx);
    none is a failure whose message says how to get one."""
    from ..catalogue import available_path, default_formats, load_entries

    formats = default_formats()
    here = [f"{e.name} ({e.format})" for e in load_entries(strict=False) if e.format in formats and available_path(e)]
    if not here:
        raise RuntimeError("no model available: download one with python -m engine models get NAME "
                           "(python -m engine models list shows the catalogue; HRMNET_MODELS_URL adds your "
                           "organisation's) or give detect --model FILE")
    return {"value": ", ".join(here), "models": here}


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def diagnose(device: str = "auto") -> dict[str, Any]:
    """Run every check; ``{"ok": bool, "checks": [{"name", "ok", "value", ...}], <summary fields>}``."""
    checks: list[tuple[str, Callable[[], dict], bool]] = [
        ("Python", _python, True), ("engine", _engine, True), ("torch", _torch, True),
        ("device", _device(device), True), ("GDAL/PROJ", _gdal_proj, True), ("cache", _cache, True),
        ("demo model", lambda: _demo_model(device), False), ("models", _models, True),
    ]
    report: dict[str, Any] = {"ok": True, "checks": []}
    for name, check, required in checks:
        try:
            result = check()
            entry = {"name": name, "ok": True, **result}
        except Exception as exc:  # each check reports its own failure; the others still run
            entry = {"name": name, "ok": False, "value": _short(exc)}
            report["ok"] = report["ok"] and not required
        report["checks"].append(entry)
        report.update({k: v for k, v in entry.items() if k not in ("name", "ok", "value", "skipped")})
    return report


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TQDM_DISABLE", "1")
    report = diagnose(args.device)
    if args.progress == "jsonl":
        from ..events import make_events

        events = make_events("jsonl")
        if not report["ok"]:
            failed = [f"{c['name']}: {c['value']}" for c in report["checks"] if not c["ok"]]
            events.warn("doctor: " + "; ".join(failed))
        events.done({}, report)
    elif args.json:
        print(json.dumps(report, default=str))
    else:
        width = max(len(c["name"]) for c in report["checks"])
        for c in report["checks"]:
            mark = "ok  " if c["ok"] else "FAIL"
            if c.get("skipped"):
                mark = "--  "
            print(f"{mark} {c['name']:<{width}}  {c['value']}")
        print("all checks passed" if report["ok"] else "some checks failed (FAIL above)")
    return 0 if report["ok"] else 1
