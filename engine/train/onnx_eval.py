"""``evaluate --model MODEL.onnx``: an exported model where the evaluation expects a torch
module and a :class:`~engine.runtime.Runtime` (the data still come through torch's loader;
the forward pass runs on onnxruntime)."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Union

__all__ = ["load_for_evaluation", "OnnxModule", "OnnxRuntime"]


class OnnxModule:
    """An :class:`~engine.onnx_predictor.OnnxPredictor` called like HRMNet: torch (N, 6, H, W)
    in, ``(change (N, 1, H, W), hard (N, 1, H, W) or None)`` out (hard when the predictor
    gives the review score)."""

    training = False

    def __init__(self, predictor) -> None:
        self.predictor = predictor

    def __call__(self, x) -> tuple[Any, Any]:
        import torch

        from ..core.predictors import split_output

        prob, review = split_output(self.predictor(x.detach().float().cpu().numpy()))
        return torch.from_numpy(prob)[:, None], None if review is None else torch.from_numpy(review)[:, None]

    def eval(self) -> "OnnxModule":
        return self

    def train(self, mode: bool = True) -> "OnnxModule":
        return self


class OnnxRuntime:
    """The part of :class:`~engine.runtime.Runtime` the evaluation uses: CPU tensors, no
    autocast (onnxruntime computes in fp32), and onnxruntime's own description."""

    precision, channels_last = "fp32", False

    def __init__(self, described: dict) -> None:
        import torch

        self.device = torch.device("cpu")
        self.described = dict(described)

    def tensor(self, x):
        return x

    def prepare(self, model):
        return model

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        yield

    def describe(self) -> dict:
        return dict(self.described)


def load_for_evaluation(model_path: Union[str, os.PathLike], device: str, precision: str) -> tuple[Any, Any, Any]:
    """(model, :class:`~engine.checkpoint.ModelInfo`, runtime) for
    :func:`~engine.train.evaluate.confusion_over`: a checkpoint prepared on the chosen
    device, or an exported .onnx on onnxruntime (providers chosen like ``--device``)."""
    from ..onnx_predictor import is_onnx

    if is_onnx(model_path):
        from ..onnx_predictor import load_onnx

        predictor, info = load_onnx(model_path, device, precision, review=True)
        return OnnxModule(predictor), info, OnnxRuntime(predictor.describe())
    from ..checkpoint import load_model
    from ..runtime import select_runtime

    model, info = load_model(model_path)
    runtime = select_runtime(device, precision)
    return runtime.prepare(model), info, runtime
