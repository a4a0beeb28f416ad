"""Evaluate a checkpoint on one split: one confusion matrix over all its tiles.

:func:`confusion_over` (also the training loop's validation) runs the model over a
loader of whole tiles and accumulates the change-class confusion matrix;
:func:`colour_map` draws one tile's outcome (TP white, FP red, FN cyan, TN black);
:func:`evaluate` wires data, model and outputs for the ``evaluate`` command.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import UserError
from ..events import Events
from ..runtime import Runtime
from .dataset import ChangeDataset, Normalisation, Sample, label_warning, scan_split
from .metrics import Confusion

__all__ = ["COLOURS", "colour_map", "confusion_over", "eval_loader", "evaluate"]

# TP, FP, FN, TN colours (RGB).
COLOURS = {"tp": (255, 255, 255), "fp": (255, 0, 0), "fn": (0, 255, 255), "tn": (0, 0, 0)}


def colour_map(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """(H, W) bool prediction and label -> (H, W, 3) uint8: TP white, FP red, FN cyan, TN black."""
    pred, label = np.asarray(pred, bool), np.asarray(label, bool)
    out = np.zeros(pred.shape + (3,), np.uint8)
    out[pred & label] = COLOURS["tp"]
    out[pred & ~label] = COLOURS["fp"]
    out[~pred & label] = COLOURS["fn"]
    return out


def eval_loader(samples: list[Sample], batch_size: int, workers: int = 0,
                norm: Normalisation = Normalisation(), pin_memory: bool = False) -> DataLoader:
    """Whole tiles in list order, batched when all tiles have one size (else one a batch)."""
    same = len({s.size for s in samples}) <= 1
    return DataLoader(ChangeDataset(samples, norm=norm), batch_size=batch_size if same else 1,
                      shuffle=False, num_workers=workers, pin_memory=pin_memory)


@torch.no_grad()
def confusion_over(
    model: torch.nn.Module,
    loader: DataLoader,
    runtime: Runtime,
    threshold: float = 0.5,
    on_batch: Optional[Callable[[np.ndarray, np.ndarray, list[int]], None]] = None,
    check_cancel: Optional[Callable[[], None]] = None,
    review=None,
) -> Confusion:
    """Run ``model`` (in eval mode) over ``loader``; the confusion matrix of ``change[:,0] > threshold``.

    ``on_batch(pred (N,H,W) bool, label (N,H,W) bool, indices)`` sees each batch
    (numpy, on the CPU) when given, e.g. to write colour maps. ``review`` (a
    :class:`~engine.train.review_metrics.ReviewStats`) gets each batch's hard-region
    score when the model gives one.
    """
    was_training = model.training
    model.eval()
    conf = Confusion()
    try:
        for x, y, idx in loader:
            if check_cancel is not None:
                check_cancel()
            x = runtime.tensor(x)
            with runtime.autocast():
                change, hard = model(x)
            pred = change[:, 0] > threshold
            label = y[:, 0].to(pred.device) > 0.5
            conf.update(pred, label)
            if review is not None and hard is not None:
                review.update(pred.cpu().numpy(), label.cpu().numpy(), hard[:, 0].float().cpu().numpy())
            if on_batch is not None:
                on_batch(pred.cpu().numpy(), label.cpu().numpy(), [int(i) for i in idx])
    finally:
        model.train(was_training)
    return conf


def _map_name(sample: Sample) -> str:
    return Path(sample.label.name).stem + ".png"


def _check_maps(out_dir: Optional[Path], samples: list[Sample], model_path: Union[str, os.PathLike]) -> None:
    """Refuse colour maps that would replace an input (a label PNG, the checkpoint)."""
    if out_dir is None:
        return
    from ..outputs import Inputs, check_output

    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder")
    inputs = Inputs([model_path] + [p for s in samples for p in (s.before, s.after, s.label)])
    for name in sorted({_map_name(s) for s in samples}):
        check_output(out_dir / name, "colour map", inputs)


def _maps_stage(out_dir: Optional[Path]):
    """A private staging folder in ``out_dir`` for the colour maps (None without one)."""
    if out_dir is None:
        return None
    from ..outputs import Staging

    out_dir.mkdir(parents=True, exist_ok=True)
    return Staging(out_dir)


def evaluate(
    data: Union[str, os.PathLike],
    split: str,
    model_path: Union[str, os.PathLike],
    out: Optional[Union[str, os.PathLike]] = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 4,
    workers: int = 0,
    events: Optional[Events] = None,
) -> dict:
    """Metrics of a checkpoint on ``data/split``.

    Returns ``{"metrics": {kappa, iou, f1, precision, recall, oa}, "confusion": {tp, fp,
    fn, tn}, "tiles": n, "runtime": {device, precision, ...}, ...}``. With ``out``, writes ``out/NAME.png`` per tile (colour
    map). Raises :class:`UserError` for bad data, a bad checkpoint or an output folder
    that is a file.
    """
    from PIL import Image

    from .onnx_eval import load_for_evaluation

    events = events or Events()
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    samples = scan_split(data, split)
    warning = label_warning(samples)
    if warning:
        events.warn(warning)
    out_dir = Path(out) if out is not None else None
    _check_maps(out_dir, samples, model_path)  # before the model loads
    model, info, rt = load_for_evaluation(model_path, device, precision)  # a checkpoint or an exported .onnx
    events.start(command="evaluate", data=str(data), split=split, model=str(model_path), tiles=len(samples),
                 **rt.describe())
    done = [0]

    def write_maps(pred: np.ndarray, label: np.ndarray, indices: list[int]) -> None:
        for p, y, i in zip(pred, label, indices):
            if stage is not None:
                name = _map_name(samples[i])
                Image.fromarray(colour_map(p, y)).save(stage.path(name, shown=out_dir / name), format="PNG")
        done[0] += len(indices)
        events.progress(done[0], len(samples), stage="evaluate")

    loader = eval_loader(samples, batch_size, workers, Normalisation.from_scaling(info.scaling),
                         pin_memory=rt.device.type == "cuda")
    stage = _maps_stage(out_dir)
    from .review_metrics import ReviewStats

    review = ReviewStats()
    try:
        conf = confusion_over(model, loader, rt, info.threshold, on_batch=write_maps,
                              check_cancel=events.check_cancel, review=review)
        if stage is not None:  # all maps appear at the end, none if the run fails
            from ..outputs import commit

            names = sorted({_map_name(x) for x in samples})
            commit([(stage, n, stage.folder / n, out_dir / n) for n in names], overwrite=True)
    finally:
        if stage is not None:
            stage.close()
    result = {
        "metrics": conf.scores(),
        "confusion": conf.as_dict(),
        "tiles": len(samples),
        "split": split,
        "data": str(data),
        "model": str(model_path),
        "threshold": info.threshold,
        "runtime": rt.describe(),
        "review": review.result(),  # None when the model gives no hard-region score (ONNX)
    }
    events.done(outputs={"maps": str(out_dir)} if out_dir is not None else {}, stats=result)
    return result
