"""ONNX export of an HRMNet checkpoint (needs torch, onnx and onnxscript).

The graph: input ``input`` float32 (N, 6, H, W), before RGB then after RGB, normalised
as the checkpoint's ``scaling`` says; outputs ``change`` (N, 1, H, W), the change
probability, and ``hard`` (N, 1, H, W), the hard-region (review) score, both in [0, 1].
N is dynamic; H and W are dynamic multiples of 32, or fixed to one square size with
``fixed_size`` (Deepness needs a fixed input size).

``metadata_props`` hold every :class:`~engine.checkpoint.ModelInfo` field (JSON, the
same keys as our safetensors files), the keys Deepness reads (``model_type``,
``class_names``, ``resolution`` in cm/px, ``tile_size``/``tiles_size``, ``tiles_overlap``
in %, ``seg_thresh``, ``standardization_mean``/``standardization_std`` of the six input
channels after Deepness's division by 255) and an ``onnx_export`` record (opset, fp16
weights, the parity check's result).

Before anything is written the graph is run with onnxruntime on the parity inputs (the
recipe of ``shared/parity/weights.py``: seeds 0 and 1, shapes (1, 6, 128, 128) and
(2, 6, 96, 160)) and compared with torch; more than :data:`TOLERANCE` apart is an error.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from . import __version__
from .errors import UserError

__all__ = ["export_onnx", "parity_inputs", "exportable", "TOLERANCE", "MIN_OPSET", "DEFAULT_OPSET"]

TOLERANCE = 1e-4  # max |onnxruntime - torch| of the probabilities (fp32)
MIN_OPSET = 18  # the dynamo exporter's minimum
DEFAULT_OPSET = 18  # onnxruntime >= 1.14 (Deepness users may have an old one)
PARITY_CASES = ((0, (1, 6, 128, 128)), (1, (2, 6, 96, 160)))
INPUT, OUTPUTS = "input", ("change", "hard")


def parity_inputs(fixed_size: Optional[int] = None) -> list[np.ndarray]:
    """The parity inputs: N(0, 1) float32 from ``default_rng(1_000_003 + seed)`` (the recipe
    of shared/parity/weights.py). With ``fixed_size`` S: one (1, 6, S, S) input of seed 0."""
    cases = PARITY_CASES if fixed_size is None else ((0, (1, 6, fixed_size, fixed_size)),)
    return [np.random.default_rng(1_000_003 + seed).normal(0.0, 1.0, shape).astype(np.float32)
            for seed, shape in cases]


def _pool_matrix(n, size: int, like):
    """(size, n) averaging matrix of adaptive average pooling over ``n`` cells (PyTorch's
    bins: start floor(i*n/size), end ceil((i+1)*n/size)); ``n`` may be symbolic."""
    import torch

    i = torch.arange(size, device=like.device)
    start = torch.div(i * n, size, rounding_mode="floor")
    end = torch.div((i + 1) * n + size - 1, size, rounding_mode="floor")
    cells = torch.arange(n, device=like.device)
    inside = ((cells[None, :] >= start[:, None]) & (cells[None, :] < end[:, None])).to(like.dtype)
    return inside / inside.sum(dim=1, keepdim=True)


def _export_modules():
    import torch
    from torch import nn

    class AdaptiveAvgPool(nn.Module):
        """nn.AdaptiveAvgPool2d as two averaging matrices: exports for any input size (the
        exporter's own decomposition bakes in the traced size)."""

        def __init__(self, size: int) -> None:
            super().__init__()
            self.size = size

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ph = _pool_matrix(x.shape[-2], self.size, x)
            pw = _pool_matrix(x.shape[-1], self.size, x)
            return torch.einsum("ih,nchw,jw->ncij", ph, x, pw)

    class Outputs(nn.Module):
        """HRMNet -> (change probability (N, 1, H, W), hard-region score (N, 1, H, W))."""

        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor):
            change, hard = self.net(x)
            return change[:, :1], hard

    return AdaptiveAvgPool, Outputs


def exportable(net):
    """A copy of ``net`` (eval, fp32) with export-friendly pooling, returning the two
    (N, 1, H, W) outputs of the graph."""
    import copy

    from torch import nn

    AdaptiveAvgPool, Outputs = _export_modules()
    net = copy.deepcopy(net).float().eval()
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                size = child.output_size
                if not isinstance(size, int):
                    if size[0] != size[1]:
                        raise ValueError(f"non-square adaptive pooling {size}")
                    size = size[0]
                setattr(module, name, AdaptiveAvgPool(int(size)))
    return Outputs(net).eval()


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's warnings (missing torchvision ops, deprecations) are not the user's."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")
    levels = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def _to_onnx(module, opset: int, fixed_size: Optional[int], optimize: bool = True):
    """The graph of ``module`` as an onnx.ModelProto (dynamo exporter). ``optimize`` lets
    the exporter fold constants, e.g. BatchNorm into the convolutions' weights (without
    it the initializers are the checkpoint's tensors unchanged; onnxruntime folds at load)."""
    import torch

    size = fixed_size or 128
    example = (torch.zeros(1, 6, size, size),)
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=4096)}
    if fixed_size is None:
        dims[2] = 32 * torch.export.Dim("h32", min=1, max=1024)
        dims[3] = 32 * torch.export.Dim("w32", min=1, max=1024)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(module, example, dynamo=True, opset_version=opset, input_names=[INPUT],
                                    output_names=list(OUTPUTS), dynamic_shapes={"x": dims}, verbose=False,
                                    optimize=optimize)
    return program.model_proto


def _castlike_to_cast(proto) -> int:
    """Replace CastLike nodes whose target type shape inference knows by plain Casts (the
    unoptimised graph has them; onnxruntime warns that it cannot fold CastLike, in hosts
    that do not silence it, e.g. Deepness). Returns how many."""
    from onnx import helper, shape_inference

    graph = shape_inference.infer_shapes(proto).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({i.name: i.data_type for i in proto.graph.initializer})
    for node in proto.graph.node:
        if node.op_type == "Constant":
            types.update({node.output[0]: a.t.data_type for a in node.attribute if a.name == "value"})
    count = 0
    for node in proto.graph.node:
        if node.op_type == "CastLike" and types.get(node.input[1]):
            to = types[node.input[1]]
            del node.input[1]
            node.op_type = "Cast"
            node.attribute.append(helper.make_attribute("to", to))
            count += 1
    return count


def _fp16_weights(proto) -> int:
    """Store float32 initializers as float16, each behind a Cast to float32 (onnxruntime
    folds the casts at load: fp32 arithmetic, half the file). Returns how many."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    casts, count = [], 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        name = init.name
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{name}__fp16")
        init.CopyFrom(half)
        casts.append(helper.make_node("Cast", [half.name], [name], to=TensorProto.FLOAT, name=f"{name}__cast"))
        count += 1
    for node in reversed(casts):
        graph.node.insert(0, node)
    return count


def deepness_metadata(info) -> dict[str, str]:
    """Deepness's metadata keys (JSON values) for a :class:`~engine.checkpoint.ModelInfo`."""
    meta: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": [{"0": "change"}, {"0": "hard region (review)"}],
        "tile_size": int(info.tile_size),
        "tiles_size": int(info.tile_size),
        "tiles_overlap": int(round(100 * info.overlap / info.tile_size)),
        "seg_thresh": float(info.threshold),
    }
    if info.gsd:
        meta["resolution"] = round(float(info.gsd) * 100, 3)
    scaling = info.scaling or {}

    def per_band(key: str) -> list[float]:  # 1 value means the same for all three bands
        values = [float(v) for v in scaling.get(key) or []]
        return values * 3 if len(values) == 1 else values

    scale = per_band("scale")
    if scale and all(abs(s * 255 - 1) < 1e-6 for s in scale):  # Deepness divides by 255
        meta["standardization_mean"] = per_band("mean") * 2  # before and after
        meta["standardization_std"] = per_band("std") * 2
    return {k: json.dumps(v) for k, v in meta.items()}


def _set_metadata(proto, info, export_record: dict) -> None:
    props = dict(info.to_metadata())
    props.update(deepness_metadata(info))
    props["onnx_export"] = json.dumps(export_record)
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "hrmnet-engine", __version__
    proto.doc_string = ("HRMNet change detection. input (N, 6, H, W): before RGB then after RGB, normalised as "
                        "the metadata 'scaling' says; outputs change and hard (N, 1, H, W), probabilities.")


def torch_outputs(net, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The graph's two outputs computed by the HRMNet ``net`` itself (fp32, CPU)."""
    import torch

    with torch.no_grad():
        change, hard = net.float().eval()(torch.from_numpy(x))
    return change[:, :1].numpy(), hard.numpy()


def parity_difference(model_bytes: bytes, net, inputs: list[np.ndarray]) -> float:
    """Max |onnxruntime - torch| over both outputs of ``inputs`` (onnxruntime on CPU; torch
    runs the unmodified HRMNet ``net``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        got = session.run(list(OUTPUTS), {INPUT: x})
        for g, w in zip(got, torch_outputs(net, x)):
            worst = max(worst, float(np.abs(g - w).max()))
    return worst


def _check_target(model: Path, out: Path, overwrite: bool) -> None:
    if out.suffix.lower() != ".onnx":
        raise UserError(f"{out}: the exported model's name must end in .onnx")
    from .outputs import check_output

    check_output(out, "ONNX", [model])
    if not out.parent.is_dir():
        raise UserError(f"{out}: output folder {out.parent} does not exist")
    if out.is_dir():
        raise UserError(f"{out}: is a folder")
    if out.exists() and not overwrite:
        raise UserError(f"{out}: exists (use --overwrite to replace it)")


def _check_options(opset: int, fixed_size: Optional[int]) -> None:
    import importlib

    importlib.import_module("torch")  # without it the CLI says in one line that export needs torch
    try:
        onnx = importlib.import_module("onnx")
        for name in ("onnxruntime", "onnxscript"):
            importlib.import_module(name)
    except ImportError as exc:
        raise UserError(f"export: needs {exc.name or 'onnx'}, which is not installed here "
                        "(pip install onnx onnxscript onnxruntime, or the engine's [onnx] extra)") from exc

    newest = onnx.defs.onnx_opset_version()
    try:  # the exporter's own ceiling (private constant; onnx's when it moves)
        from torch.onnx._constants import ONNX_MAX_OPSET

        newest = min(newest, int(ONNX_MAX_OPSET))
    except (ImportError, ValueError, TypeError):
        pass
    if not MIN_OPSET <= opset <= newest:
        raise UserError(f"--opset {opset}: must be between {MIN_OPSET} and {newest} (the exporter's and onnx's range)")
    if fixed_size is not None and (fixed_size < 32 or fixed_size % 32):
        raise UserError(f"--fixed-size {fixed_size}: must be a multiple of 32 (pixels)")


def _int8_tiles(int8: bool, fp16: bool, calibrate: Optional[Sequence[str]], info, log) -> list:
    """The calibration tiles of ``--int8`` ([] without it), read before the slow export so a
    mistake is reported at once."""
    if not int8:
        if calibrate:
            raise UserError("--calibrate: only with --int8")
        return []
    if fp16:
        raise UserError("--int8 and --fp16: choose one (int8 stores 8-bit weights already)")
    from .quantize import calibration_tiles, default_calibration

    sources = list(calibrate or default_calibration())
    if not sources:
        raise UserError("--int8: give --calibrate BEFORE,AFTER or a dataset folder (the demo pair, the default, "
                        "is not in this installation)")
    return calibration_tiles(sources, info, log)


def _quantized(proto, tiles: list, info, out_p: Path, log):
    """(int8 graph, its record) from the checked fp32 graph ``proto``; refuses (nothing written)
    when the masks agree on fewer than :data:`engine.quantize.MIN_AGREEMENT` of the held-back pixels."""
    from .quantize import MIN_AGREEMENT, mask_agreement, quantize_int8, split_tiles

    calib, held = split_tiles(tiles)
    log(f"int8: calibrating on {len(calib)} tiles, checking on {len(held)} held-back tiles")
    fp32 = proto.SerializeToString()
    quantized = quantize_int8(fp32, calib)
    agreement = mask_agreement(fp32, quantized.SerializeToString(), held, float(info.threshold))
    log(f"int8 mask agrees with fp32 on {100 * agreement:.3f} % of the held-back pixels")
    if agreement < MIN_AGREEMENT:
        raise UserError(f"{out_p}: not written: the int8 mask agrees with fp32 on {100 * agreement:.2f} % of the "
                        f"held-back pixels (< {100 * MIN_AGREEMENT:g} %); calibrate on imagery like yours "
                        "(--calibrate BEFORE,AFTER or a dataset) or export without --int8")
    record = {"weights": "int8 per channel", "activations": "uint8", "format": "QDQ (onnxruntime static)",
              "calibration_tiles": len(calib), "held_back_tiles": len(held), "tile_size": int(tiles[0].shape[-1]),
              "mask_agreement": float(f"{agreement:.6f}"), "min_agreement": MIN_AGREEMENT}
    return quantized, record


def export_onnx(model: str | os.PathLike, out: str | os.PathLike, opset: int = DEFAULT_OPSET, fp16: bool = False,
                fixed_size: Optional[int] = None, overwrite: bool = False, log=print, int8: bool = False,
                calibrate: Optional[Sequence[str]] = None) -> dict:
    """Export checkpoint ``model`` to the ONNX file ``out`` (see the module docstring).

    Args:
        model: our .safetensors or the authors' .pth.
        out: the .onnx file to write (staged by :mod:`engine.outputs`: never partial,
            never replacing the model).
        opset: ONNX opset (18 or later).
        fp16: store the weights as float16 (arithmetic stays float32; the file halves).
        fixed_size: fix H = W to this many pixels (a multiple of 32) instead of dynamic.
        overwrite: replace an existing ``out``.
        log: called with progress lines.
        int8: quantize to int8 (:mod:`engine.quantize`), checked against the fp32 graph.
        calibrate: ``--int8``'s calibration sources (``BEFORE,AFTER`` or dataset folders;
            default the demo pair).

    Returns:
        The ``onnx_export`` record (also in the file's metadata) plus ``path`` and ``bytes``.

    Raises:
        UserError: bad options or model, or a graph that differs from torch by more
            than :data:`TOLERANCE` on the parity inputs, or an int8 graph whose mask agrees
            with fp32 on too few held-back pixels (nothing is written then).
    """
    model_p, out_p = Path(model).expanduser().absolute(), Path(out).expanduser().absolute()
    _check_target(model_p, out_p, overwrite)
    _check_options(opset, fixed_size)
    from .checkpoint import load_model

    if model_p.suffix.lower() == ".onnx":
        raise UserError(f"{model_p}: already an ONNX model; export takes a checkpoint (.safetensors or .pth)")
    net, info = load_model(model_p)
    if fixed_size is not None:  # the graph's size becomes the model's tile size (Deepness, detect)
        info.tile_size = fixed_size
        if 2 * info.overlap >= fixed_size:
            info.overlap = fixed_size // 4
    tiles = _int8_tiles(int8, fp16, calibrate, info, log)
    if fp16:
        net = net.half().float()  # the arithmetic the fp16-weight graph does
    module = exportable(net)
    log(f"exporting {model_p.name} (opset {opset}, {'H = W = %d' % fixed_size if fixed_size else 'dynamic N, H, W'})")
    # fp16: keep the checkpoint's own tensors (an fp16 checkpoint then loses nothing);
    # folded BatchNorm weights rounded to fp16 would move the probabilities by ~1e-3
    proto = _to_onnx(module, opset, fixed_size, optimize=not fp16)
    _castlike_to_cast(proto)
    if fp16:
        log(f"fp16 weights: {_fp16_weights(proto)} tensors")
    difference = parity_difference(proto.SerializeToString(), net, parity_inputs(fixed_size))
    log(f"max |onnxruntime - torch| on the parity inputs: {difference:.2e}")
    if not difference <= TOLERANCE:
        raise UserError(f"{out_p}: not written: the exported graph differs from torch by {difference:.2e} "
                        f"(> {TOLERANCE:g}) on the parity inputs")
    record = {"source": model_p.name, "opset": opset, "fp16_weights": bool(fp16), "fixed_size": fixed_size,
              "inputs": {INPUT: "N,6,H,W float32 normalised"}, "outputs": {k: "N,1,H,W probability" for k in OUTPUTS},
              "parity_max_abs_diff": float(f"{difference:.3g}"), "tolerance": TOLERANCE}
    if int8:
        proto, record["int8"] = _quantized(proto, tiles, info, out_p, log)
    _set_metadata(proto, info, record)
    data = proto.SerializeToString()
    from .outputs import staged_file

    with staged_file(out_p, overwrite, inputs=[model_p]) as path:
        Path(path).write_bytes(data)
    return {**record, "path": str(out_p), "bytes": len(data)}
