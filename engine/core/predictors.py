"""Infer: the models behind one :class:`Predictor` interface, and loading one.

A predictor maps a batch of model inputs (N, 6, H, W) to change probabilities (N, H, W):
:class:`ModelPredictor` (HRMNet on torch; torch is imported only when one is made),
:class:`engine.onnx_predictor.OnnxPredictor` (onnxruntime, no torch: the light engine) and
:class:`DifferencePredictor` (a stand-in for tests and benchmarks). :func:`load_engine`
picks one for a model file, once per process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import numpy as np

from ..errors import UserError

__all__ = ["Predictor", "gives_review", "split_output", "ModelPredictor", "DifferencePredictor", "Engine",
           "check_model_path", "load_engine"]


class Predictor(Protocol):
    """Anything that maps a batch of model inputs to change probabilities.

    Called with a float32 array (N, 6, H, W) (before RGB then after RGB, normalised);
    returns float32 (N, H, W) probabilities in [0, 1]. ``describe()`` (optional) returns
    a dict with at least ``device`` and ``precision`` for the start event. A predictor
    may also offer ``submit(batch) -> handle`` and ``result(handle) -> array``: the
    pipeline then starts batch k+1 before blending batch k.

    A predictor with ``gives_review = True`` returns ``(prob, review)`` instead: review is
    float32 (N, H, W) in [0, 1], HRMNet's hard-region score (see :func:`split_output`).
    """

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def gives_review(predictor) -> bool:
    """Whether ``predictor`` returns ``(prob, review)`` (its ``gives_review`` attribute)."""
    return bool(getattr(predictor, "gives_review", False))


def split_output(out) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """A predictor's result -> (probabilities (N, H, W), review scores (N, H, W) or None)."""
    if isinstance(out, tuple):
        return out[0], out[1]
    return out, None


class ModelPredictor:
    """An HRMNet (or any module returning ``(change, hard)``) on a :class:`~engine.runtime.Runtime`.

    The change probability is ``change[:, 0]``. With ``review=True`` it returns
    ``(prob, review)``, review = ``hard[:, 0]`` (the network computes it anyway: the cost
    is one more copy back from the device).
    """

    def __init__(self, model, runtime, review: bool = False) -> None:
        import torch

        self.torch = torch
        self.runtime = runtime
        self.model = runtime.prepare(model).eval()
        self.gives_review = bool(review)

    def submit(self, batch: np.ndarray):
        """Start the forward pass of ``batch``; :meth:`result` waits for it. On CUDA the
        kernels and the copy back to pinned memory run while the caller blends the
        previous batch."""
        torch = self.torch
        x = torch.from_numpy(batch)
        cuda = self.runtime.device.type == "cuda"
        if cuda:
            x = x.pin_memory()
        x = self.runtime.tensor(x)
        with torch.inference_mode(), self.runtime.autocast():
            change, hard = self.model(x)
            p = change[:, 0].float()
            if self.gives_review:  # one (2, N, H, W) block: one copy back
                p = torch.stack([p, hard[:, 0].float()])
        if not cuda:
            return p, None
        host = torch.empty(p.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(p, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done

    def result(self, handle):
        """(N, H, W) float32 probabilities of a :meth:`submit` ted batch; with review,
        ``(prob, review)``."""
        host, done = handle
        if done is not None:
            done.synchronize()
        out = host.numpy()
        return (out[0], out[1]) if self.gives_review else out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.result(self.submit(batch))

    def describe(self) -> dict:
        return self.runtime.describe()


class DifferencePredictor:
    """Stand-in model: mean absolute difference of the dates' normalised channels,
    times ``gain``, clipped to [0, 1]. Used by tests (geometry) and benchmarks.

    With ``review=True`` it returns ``(prob, review)``, review = ``1 - |2 prob - 1|``
    (highest where the probability is undecided), like a hard-region score."""

    def __init__(self, gain: float = 1.0, review: bool = False) -> None:
        self.gain = gain
        self.gives_review = bool(review)

    def __call__(self, batch: np.ndarray):
        d = np.abs(batch[:, 3:] - batch[:, :3]).mean(axis=1) * self.gain
        prob = np.clip(d, 0.0, 1.0).astype(np.float32)
        if self.gives_review:
            return prob, (1.0 - np.abs(2.0 * prob - 1.0)).astype(np.float32)
        return prob

    def describe(self) -> dict:
        return {"device": "cpu (stand-in model)", "precision": "fp32"}


@dataclass
class Engine:
    """A loaded model (or stand-in) and what it says about itself.

    Attributes:
        predictor: see :class:`Predictor`.
        model_info: the checkpoint's :class:`~engine.checkpoint.ModelInfo`.
        device: ``predictor.describe()`` (at least ``device`` and ``precision``).
    """

    predictor: Any
    model_info: Any
    device: dict = field(default_factory=dict)

    @property
    def device_type(self) -> str:
        return "cuda" if str(self.device.get("device", "")).startswith("cuda") else "cpu"


def check_model_path(model: Optional[str | os.PathLike]) -> None:
    """Raise :class:`UserError` when no model is given or the file is missing (cheap, no load)."""
    if model is None:
        raise UserError("detect: --model is required")
    if not os.path.exists(model):
        raise UserError(f"{model}: model file not found")


def load_engine(model: Optional[str | os.PathLike], options: DetectOptions, predictor=None,
                model_info=None) -> Engine:
    """Load the checkpoint on the chosen device (or wrap a stand-in ``predictor``).

    Raises:
        UserError: no model, unreadable checkpoint, CUDA asked for but absent.
    """
    if predictor is None:
        check_model_path(model)
        from ..onnx_predictor import is_onnx, load_onnx

        if is_onnx(model):  # onnxruntime, no torch
            predictor, model_info = load_onnx(model, options.device, options.precision, review=True)
            return Engine(predictor, model_info, predictor.describe())
        from ..checkpoint import load_model
        from ..runtime import select_runtime

        runtime = select_runtime(options.device, options.precision)
        net, model_info = load_model(model)
        predictor = ModelPredictor(net, runtime, review=True)  # the hard-region score costs one more copy
        return Engine(predictor, model_info, runtime.describe())
    if model_info is None:
        from ..model_info import ModelInfo

        model_info = ModelInfo()
    dev = predictor.describe() if hasattr(predictor, "describe") else {"device": "custom", "precision": "?"}
    return Engine(predictor, model_info, dev)
