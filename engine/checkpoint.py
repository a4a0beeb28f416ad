"""Checkpoints: our self-describing ``.safetensors`` format and the authors' ``.pth``.

Our format is one safetensors file: the HRMNet state_dict (fp32 or fp16 tensors) and
string metadata, each field JSON-encoded under its own key (see :class:`ModelInfo`).
The authors' ``best_model.pth`` (a plain state_dict) also loads; it is opened with
``torch.load(weights_only=True)`` so a file that needs arbitrary unpickling is refused,
never executed.
"""
from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .errors import UserError, first_line
from .model_info import (FORMAT_VERSION, IMAGENET_MEAN, IMAGENET_STD, MetadataError, ModelInfo, check_info,
                         check_model_file)

if TYPE_CHECKING:  # torch is imported where it is used: read_info works without it
    import torch

__all__ = [
    "FORMAT_VERSION",
    "MetadataError",
    "ModelInfo",
    "check_info",
    "load_checkpoint",
    "load_model",
    "read_info",
    "save_checkpoint",
    "check_state_dict",
    "check_model_file",
    "is_safetensors",
    "IMAGENET_MEAN",  # the model's input normalisation (defined with ModelInfo; training reads it here)
    "IMAGENET_STD",
]


def _expected_keys() -> dict[str, torch.Tensor]:
    from .model import HRMNet

    return HRMNet().state_dict()


def check_state_dict(state: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`UserError` naming the first missing/unexpected/mis-shaped keys."""
    expected = _expected_keys()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (first: {', '.join(unexpected[:3])})")
        raise UserError(f"{source}: not an HRMNet checkpoint: " + "; ".join(parts))
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise UserError(f"{source}: not an HRMNet checkpoint: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` starts like a safetensors file (an 8-byte header length, then JSON)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < n <= os.path.getsize(path) - 8


def _load_safetensors(path: Path) -> tuple[dict, ModelInfo]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: corrupt or truncated safetensors file ({first_line(exc)})") from exc
    return state, ModelInfo.from_metadata(meta, str(path))


def _load_pth(path: Path) -> tuple[dict, ModelInfo]:
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path}: refused: not a plain state_dict that can be read safely "
            "(it would need arbitrary unpickling, which is never done)"
        ) from exc
    except Exception as exc:  # any other failure to parse a user's file is "corrupt", not a bug
        raise UserError(f"{path}: corrupt or truncated checkpoint ({first_line(exc)})") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: not a state_dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    info = ModelInfo(training={"source": "authors' checkpoint", "file": path.name})
    return obj, info


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelInfo]:
    """Read a checkpoint (ours or the authors') into an fp32 state_dict and its info.

    Raises :class:`UserError` for a missing, corrupt, unsafe or non-HRMNet file.
    """
    p = check_model_file(path, "a checkpoint")
    state, info = _load_safetensors(p) if is_safetensors(p) else _load_pth(p)
    check_state_dict(state, str(p))
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    return state, info


def load_model(path: str | os.PathLike) -> tuple[torch.nn.Module, ModelInfo]:
    """An HRMNet in eval mode with the checkpoint's weights (strict), and its info."""
    from .model import HRMNet

    state, info = load_checkpoint(path)
    model = HRMNet()
    model.load_state_dict(state, strict=True)
    return model.eval(), info


def read_info(path: str | os.PathLike) -> ModelInfo:
    """Only the metadata (reads the whole file for .pth, only the header for safetensors;
    an exported .onnx through onnxruntime, without torch)."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        from .onnx_predictor import read_onnx_info

        return read_onnx_info(p)
    if p.is_file() and is_safetensors(p):
        try:
            from safetensors import SafetensorError, safe_open
        except ImportError:  # the light engine (no torch, no safetensors): the header is JSON
            return ModelInfo.from_metadata(_header_metadata(p), str(p))
        try:
            with safe_open(str(p), framework="pt") as f:
                return ModelInfo.from_metadata(f.metadata() or {}, str(p))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{p}: corrupt or truncated safetensors file ({first_line(exc)})") from exc
    return load_checkpoint(p)[1]


def _header_metadata(path: Path) -> dict:
    """The ``__metadata__`` of a safetensors header (8-byte little-endian length, then JSON),
    read without the safetensors package."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n).decode("utf-8"))
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict):
            raise ValueError("__metadata__ is not a mapping")
        return meta
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"{path}: corrupt or truncated safetensors file ({first_line(exc)})") from exc


def save_checkpoint(
    path: str | os.PathLike,
    state: dict[str, torch.Tensor] | torch.nn.Module,
    info: ModelInfo,
    dtype: Optional[torch.dtype] = None,
) -> None:
    """Write ``state`` (or a module's state_dict) with ``info`` as our safetensors format.

    Floating tensors are stored as ``dtype`` (default fp32, or fp16 for a small file). The file
    is written beside the target and renamed, so a failure leaves no partial file.
    ``info`` is checked first (:func:`check_info`): a file that detection would refuse
    is never written.
    """
    import torch
    from safetensors.torch import save_file

    dtype = dtype or torch.float32
    check_info(info, str(path))
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    if hasattr(state, "_metadata"):
        state = dict(state)
    tensors = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in state.items()
    }
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=info.to_metadata())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
