"""HRMNet on onnxruntime: a :class:`~engine.core.predictors.Predictor` for ``--model MODEL.onnx``.

Needs only onnxruntime and numpy (no torch): the light engine. The model is a graph
written by ``python -m engine export`` (see :mod:`engine.export`); its metadata gives
the :class:`~engine.checkpoint.ModelInfo` (tile size, overlap, threshold, scaling).

``--device`` picks the execution providers: ``auto`` (CUDA, else DirectML, else CPU, as
this onnxruntime build offers), ``cpu``, ``cuda[:N]``, ``tensorrt[:N]``, ``directml[:N]``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

__all__ = ["OnnxPredictor", "load_onnx", "graph_precision", "read_onnx_info", "read_onnx_metadata", "select_providers", "is_onnx",
           "import_onnxruntime", "check_contract"]

DEVICES = "auto|cpu|cuda[:N]|tensorrt[:N]|directml[:N]"
CPU, CUDA, TRT, DML = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider",
                       "DmlExecutionProvider")
_KIND = {"cpu": CPU, "cuda": CUDA, "tensorrt": TRT, "trt": TRT, "directml": DML, "dml": DML}


def is_onnx(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an ONNX model (by its .onnx extension)."""
    return str(path).lower().endswith(".onnx")


def import_onnxruntime():
    """The onnxruntime module (its CUDA libraries preloaded); UserError saying how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise UserError("ONNX models need onnxruntime, which is not installed here "
                        "(pip install onnxruntime, or onnxruntime-gpu / onnxruntime-directml)") from exc
    _preload_cuda(onnxruntime)
    return onnxruntime


_PRELOADED: list[bool] = []


def _preload_cuda(ort) -> None:
    """Load the CUDA/cuDNN libraries of NVIDIA's pip wheels (``onnxruntime-gpu[cuda,cudnn]``, what the
    plugin's light "Set up engine" installs for an NVIDIA GPU): onnxruntime's CUDA provider finds
    them only when preloaded. Once per process, only with a CUDA build; its messages (printed on
    stdout, which carries the JSONL events) are dropped: without the libraries the CUDA provider
    falls back to the CPU as before, and the providers in use are logged."""
    import contextlib
    import io

    if _PRELOADED or not hasattr(ort, "preload_dlls") or CUDA not in ort.get_available_providers():
        return
    _PRELOADED.append(True)
    # a missing/odd library folder raises: the CUDA provider then decides (and falls back) as before
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
        ort.preload_dlls()


def select_providers(device: str, available: list[str]) -> list[Any]:
    """onnxruntime providers (name or (name, options)) for ``--device``, best first.

    Raises :class:`UserError` when the device asked for is not in ``available``.
    """
    device = (device or "auto").strip().lower()
    if device == "auto":
        first = next((p for p in (CUDA, DML) if p in available), None)
        return ([first] if first else []) + [CPU]
    kind, _, index = device.partition(":")
    if kind not in _KIND or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise UserError(f"--device {device}: expected {DEVICES} with an ONNX model")
    name = _KIND[kind]
    if name not in available:
        raise UserError(f"--device {device}: this onnxruntime has no {name} "
                        f"(it offers {', '.join(available)}; use --device cpu or auto)")
    if name == CPU:
        return [CPU]
    options = {"device_id": int(index or 0)}
    chain: list[Any] = [(name, options)]
    if name == TRT and CUDA in available:
        chain.append((CUDA, dict(options)))
    return chain + [CPU]


def _session(path: Path, providers: list[Any], optimize: bool = True):
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if any((p[0] if isinstance(p, tuple) else p) == DML for p in providers):
        options.enable_mem_pattern = False  # DirectML's requirement
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime's own errors: a corrupt file or an unusable provider
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: onnxruntime cannot load this model ({text})") from exc


def _check_file(path: str | os.PathLike) -> Path:
    from .model_info import check_model_file

    return check_model_file(path, "an ONNX model")


def _info_from_session(session, path: Path):
    from .model_info import ModelInfo

    meta = dict(session.get_modelmeta().custom_metadata_map)
    if "architecture" not in meta or "onnx_export" not in meta:
        raise UserError(f"{path}: not an HRMNet ONNX export (no hrmnet-engine metadata; "
                        "make one with python -m engine export)")
    return ModelInfo.from_metadata(meta, str(path)), meta


def check_contract(session, path: Path) -> None:
    """Refuse a graph that does not take and give what HRMNet's export does (checked at load,
    before any pixel is read): one float input (N, 6, H, W) and a float ``change`` output
    (N, 1, H, W) (the first output when none is named so), ``hard`` likewise when present.
    A foreign graph carrying HRMNet's metadata would otherwise fail mid-run with onnxruntime's
    own words."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    problem = None
    if len(inputs) != 1:
        problem = f"it takes {len(inputs)} inputs"
    elif not _fits(inputs[0], 6):
        problem = f"its input {inputs[0].name} is {inputs[0].type} of shape {_shape(inputs[0])}"
    else:
        names = [o.name for o in outputs]
        main = next((o for o in outputs if o.name == "change"), outputs[0] if outputs else None)
        bad = next((o for o in outputs if (o is main or o.name == "hard") and not _fits(o, 1)), None)
        if main is None:
            problem = "it gives no output"
        elif bad is not None:
            problem = f"its output {bad.name} is {bad.type} of shape {_shape(bad)}"
        elif len(names) != len(set(names)):
            problem = "its outputs share a name"
    if problem is not None:
        raise UserError(f"{path}: not an HRMNet graph ({problem}; HRMNet takes one float tensor (N, 6, H, W) "
                        "and gives change (N, 1, H, W))")


def _fits(arg, channels: int) -> bool:
    """A float tensor of rank 4 with ``channels`` in dimension 1 (or a symbolic one there)."""
    shape = arg.shape or []
    return (arg.type == "tensor(float)" and len(shape) == 4
            and (not isinstance(shape[1], int) or shape[1] == channels))


def _shape(arg) -> str:
    return "(" + ", ".join(str(d) for d in (arg.shape or [])) + ")"


def read_onnx_metadata(path: str | os.PathLike) -> dict:
    """Everything ``info`` shows of an exported model: the ModelInfo fields, then ``onnx``
    (inputs and outputs with their shapes, the export record, Deepness's keys)."""
    import dataclasses

    p = _check_file(path)
    session = _session(p, [CPU], optimize=False)
    info, meta = _info_from_session(session, p)
    known = {f.name for f in dataclasses.fields(info)} | {"onnx_export"}
    extra = {k: json.loads(v) for k, v in meta.items() if k not in known}
    return {**dataclasses.asdict(info), "onnx": {
        "inputs": {i.name: i.shape for i in session.get_inputs()},
        "outputs": {o.name: o.shape for o in session.get_outputs()},
        "export": json.loads(meta["onnx_export"]),
        "other_metadata": extra,
        "providers_available": import_onnxruntime().get_available_providers(),
    }}


def read_onnx_info(path: str | os.PathLike):
    """The :class:`~engine.checkpoint.ModelInfo` stored in an exported model."""
    p = _check_file(path)
    session = _session(p, [CPU], optimize=False)
    info = _info_from_session(session, p)[0]
    check_contract(session, p)
    return info


class OnnxPredictor:
    """Change probabilities of a batch (N, 6, H, W) float32 -> (N, H, W) float32 with an
    onnxruntime session of an exported HRMNet.

    A graph exported with a fixed size S takes tiles of at most S x S: smaller ones are
    padded by mirroring and the result cropped. With ``review=True`` (and a graph with
    the ``hard`` output) it returns ``(prob, review)``, review = the hard-region score.
    """

    def __init__(self, session, path: Path, review: bool = False, precision: str = "fp32") -> None:
        self.session = session
        self.path = path
        self.precision = precision
        self.input = session.get_inputs()[0].name
        names = [o.name for o in session.get_outputs()]
        self.outputs = ["change" if "change" in names else names[0]]
        self.gives_review = bool(review) and "hard" in names
        if self.gives_review:
            self.outputs.append("hard")
        h, w = session.get_inputs()[0].shape[-2:]
        self.fixed = (h, w) if isinstance(h, int) and isinstance(w, int) else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        h, w = batch.shape[-2:]
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.fixed is not None and (h, w) != self.fixed:
            from .raster.tiles import pad_tile

            if h > self.fixed[0] or w > self.fixed[1]:
                raise UserError(f"{self.path}: the graph takes tiles of at most {self.fixed[0]}x{self.fixed[1]} "
                                f"pixels (exported with --fixed-size); use --tile-size {self.fixed[0]}")
            x = np.ascontiguousarray(pad_tile(x, self.fixed))
        got = [np.ascontiguousarray(o[:, 0, :h, :w], dtype=np.float32)
               for o in self.session.run(self.outputs, {self.input: x})]
        return (got[0], got[1]) if self.gives_review else got[0]

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def describe(self) -> dict:
        """Device (with the provider in use), precision, runtime and providers."""
        first = self.providers[0]
        options = self.session.get_provider_options().get(first, {})
        if first == CPU:
            device = "cpu"
        else:
            kind = {CUDA: "cuda", TRT: "cuda", DML: "directml"}.get(first, first)
            device = f"{kind}:{options.get('device_id', 0)}"
        return {"device": f"{device} (onnxruntime {first})", "precision": self.precision,
                "runtime": f"onnxruntime {import_onnxruntime().__version__}", "providers": self.providers}


def load_onnx(path: str | os.PathLike, device: str = "auto", precision: str = "auto", review: bool = False):
    """(:class:`OnnxPredictor`, :class:`~engine.checkpoint.ModelInfo`) of an exported model
    (``review``: see :class:`OnnxPredictor`).

    Raises :class:`UserError` for a missing/corrupt/foreign file, a device this
    onnxruntime lacks, or a precision other than fp32 (the graph computes in fp32).
    """
    precision = (precision or "auto").strip().lower()
    if precision not in ("auto", "fp32"):
        raise UserError(f"--precision {precision}: an ONNX model runs in fp32 (use auto or fp32)")
    p = _check_file(path)
    providers = select_providers(device, import_onnxruntime().get_available_providers())
    session = _session(p, providers)
    info, meta = _info_from_session(session, p)
    check_contract(session, p)
    wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    if (device or "auto").strip().lower() != "auto" and session.get_providers()[0] != wanted:
        raise UserError(f"--device {device}: onnxruntime could not start {wanted} "
                        f"(running on {session.get_providers()[0]}); use --device cpu or auto")
    return OnnxPredictor(session, p, review, graph_precision(meta)), info


def graph_precision(meta: dict) -> str:
    """``int8`` for a graph exported with ``--int8`` (int8 weights, uint8 activations), else ``fp32``."""
    try:
        return "int8" if json.loads(meta.get("onnx_export") or "{}").get("int8") else "fp32"
    except (ValueError, AttributeError):
        return "fp32"

