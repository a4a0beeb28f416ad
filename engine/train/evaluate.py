"""Evaluate a checkpoint on one split: one confusion matrix over all its tiles.

:func:`confusion_over` (also the training loop's validation) runs the model over a
loader of whole tiles and accumulates the change-class confusion matrix;
:func:`colour_map` draws one tile's outcome (TP white, FP red, FN cyan, TN black, not
labelled grey); :func:`evaluate` wires data, model and outputs for the ``evaluate`` command.

Tiling: each dataset tile is one forward pass of the model, as in training and validation.
``detect`` instead cuts a raster into tiles that overlap by the checkpoint's ``overlap``
and blends them, so pixels near a tile's edge see more context there. Figures from
``evaluate`` (in particular the review-score ratios, which are sensitive to edges) are
therefore those of whole tiles, not of ``detect``'s blended output (:data:`TILING`).

Pixels outside a tile's ``labelled`` mask (partial labels) are left out of every figure.
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
from .dataset import ChangeDataset, Normalisation, Sample, label_warning, scan_split, split_target
from .metrics import Confusion

__all__ = ["COLOURS", "TILING", "colour_map", "confusion_over", "eval_loader", "evaluate", "pair_names"]

# TP, FP, FN, TN, not labelled colours (RGB).
COLOURS = {"tp": (255, 255, 255), "fp": (255, 0, 0), "fn": (0, 255, 255), "tn": (0, 0, 0),
           "unlabelled": (128, 128, 128)}
#: How evaluate tiles, said in its results (see the module docstring).
TILING = ("whole dataset tiles, one forward pass each, no overlap blending (detect overlaps and blends its "
          "tiles, so figures near tile edges, review ratios most of all, differ from detect's)")


def colour_map(pred: np.ndarray, label: np.ndarray, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W) bool prediction and label -> (H, W, 3) uint8: TP white, FP red, FN cyan, TN black;
    pixels outside ``valid`` (not labelled) grey."""
    pred, label = np.asarray(pred, bool), np.asarray(label, bool)
    out = np.zeros(pred.shape + (3,), np.uint8)
    out[pred & label] = COLOURS["tp"]
    out[pred & ~label] = COLOURS["fp"]
    out[~pred & label] = COLOURS["fn"]
    if valid is not None:
        out[~np.asarray(valid, bool)] = COLOURS["unlabelled"]
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
    on_batch: Optional[Callable[[np.ndarray, np.ndarray, Optional[np.ndarray], list[int]], None]] = None,
    check_cancel: Optional[Callable[[], None]] = None,
    review=None,
) -> Confusion:
    """Run ``model`` (in eval mode) over ``loader``; the confusion matrix of ``change[:,0] > threshold``
    over the labelled pixels (all of them, or those of the tiles' ``labelled`` masks).

    ``on_batch(pred (N,H,W) bool, label (N,H,W) bool, valid (N,H,W) bool or None, indices)``
    sees each batch (numpy, on the CPU) when given, e.g. to write colour maps. ``review`` (a
    :class:`~engine.train.review_metrics.ReviewStats`) gets each batch's hard-region
    score (and the labelled mask) when the model gives one.
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
            target, mask = split_target(y)
            label = target[:, 0].to(pred.device) > 0.5
            valid = None if mask is None else mask[:, 0].to(pred.device) > 0.5
            conf.update(pred, label, valid)
            pred_np, label_np = pred.cpu().numpy(), label.cpu().numpy()
            valid_np = None if valid is None else valid.cpu().numpy()
            if review is not None and hard is not None:
                review.update(pred_np, label_np, hard[:, 0].float().cpu().numpy(), valid=valid_np)
            if on_batch is not None:
                on_batch(pred_np, label_np, valid_np, [int(i) for i in idx])
    finally:
        model.train(was_training)
    return conf


def _map_name(sample: Sample) -> str:
    return Path(sample.label.name).stem + ".png"


def _check_maps(out_dir: Optional[Path], samples: list[Sample], model_path: Union[str, os.PathLike],
                overwrite: bool) -> None:
    """Refuse colour maps that would replace an input (a label PNG, the checkpoint), or an
    existing file without ``overwrite``."""
    if out_dir is None:
        return
    from ..outputs import Inputs, check_output

    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder")
    inputs = Inputs([model_path] + [p for s in samples for p in (s.before, s.after, s.label, s.labelled) if p])
    for name in sorted({_map_name(s) for s in samples}):
        check_output(out_dir / name, "colour map", inputs)
        if not overwrite and (out_dir / name).exists():
            raise UserError(f"{out_dir / name}: exists (use --overwrite to replace the colour maps)")


def _maps_stage(out_dir: Optional[Path]):
    """A private staging folder in ``out_dir`` for the colour maps (None without one)."""
    if out_dir is None:
        return None
    from ..outputs import Staging

    out_dir.mkdir(parents=True, exist_ok=True)
    return Staging(out_dir)


def pair_names(samples: list[Sample], data: Union[str, os.PathLike]) -> list[str]:
    """The before/after pair each tile comes from: the sheet of ``dataset.json`` (``prepare``
    names tiles ``SHEET_ROW_COL``), else the tile itself (the authors' datasets: one pair a tile)."""
    import json
    import re

    try:
        sources = json.loads((Path(data) / "dataset.json").read_text()).get("sources") or []
        sheets = sorted((str(src["name"]) for src in sources if src.get("name")), key=len, reverse=True)
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        sheets = []
    names = []
    for sample in samples:
        stem = Path(sample.name).stem if Path(sample.name).suffix else sample.name
        sheet = next((n for n in sheets if re.fullmatch(re.escape(n) + r"_\d+_\d+", stem)), None)
        names.append(sheet or stem)
    return names


class _PerPair:
    """One confusion matrix per pair (see :func:`pair_names`), tile by tile."""

    def __init__(self, pairs: list[str]) -> None:
        self.pairs = pairs
        self.conf: dict[str, Confusion] = {}
        self.tiles: dict[str, int] = {}

    def add(self, pred: np.ndarray, label: np.ndarray, valid: Optional[np.ndarray], i: int) -> None:
        name = self.pairs[i]
        self.conf.setdefault(name, Confusion()).update(pred, label, valid)
        self.tiles[name] = self.tiles.get(name, 0) + 1

    def result(self) -> list[dict]:
        """``[{"pair", "tiles", "pixels", **metrics, "confusion"}, ...]`` in first-seen order."""
        return [{"pair": name, "tiles": self.tiles[name], "pixels": c.total, **c.scores(), "confusion": c.as_dict()}
                for name, c in self.conf.items()]


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
    overwrite: bool = False,
    per_pair: bool = False,
) -> dict:
    """Metrics of a checkpoint on ``data/split``.

    Returns ``{"metrics": {kappa, iou, f1, precision, recall, oa}, "confusion": {tp, fp,
    fn, tn}, "tiles": n, "runtime": {device, precision, ...}, "tiling": TILING, ...}`` and,
    with ``per_pair``, ``"pairs"``: the same figures for each pair (:func:`pair_names`).
    With ``out``, writes ``out/NAME.png`` per tile (colour map; existing maps are replaced
    only with ``overwrite``). Raises :class:`UserError` for bad data, a bad checkpoint or
    an output folder that is a file or holds the maps already.
    """
    from .onnx_eval import load_for_evaluation

    events = events or Events()
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    samples = scan_split(data, split)
    warning = label_warning(samples)
    if warning:
        events.warn(warning)
    out_dir = Path(out) if out is not None else None
    _check_maps(out_dir, samples, model_path, overwrite)  # before the model loads
    model, info, rt = load_for_evaluation(model_path, device, precision)  # a checkpoint or an exported .onnx
    events.start(command="evaluate", data=str(data), split=split, model=str(model_path), tiles=len(samples),
                 **rt.describe())
    loader = eval_loader(samples, batch_size, workers, Normalisation.from_scaling(info.scaling),
                         pin_memory=rt.device.type == "cuda")
    pairs = _PerPair(pair_names(samples, data))
    conf, review = _run(model, loader, rt, info.threshold, samples, out_dir, pairs, events)
    result = {
        "metrics": conf.scores(),
        "confusion": conf.as_dict(),
        "tiles": len(samples),
        "labelled_pixels": conf.total,
        "split": split,
        "data": str(data),
        "model": str(model_path),
        "threshold": info.threshold,
        "runtime": rt.describe(),
        "tiling": TILING,
        "review": review,  # None when the model gives no hard-region score (ONNX)
    }
    if per_pair:
        result["pairs"] = pairs.result()
    events.done(outputs={"maps": str(out_dir)} if out_dir is not None else {}, stats=result)
    return result


def _run(model, loader: DataLoader, rt, threshold: float, samples: list[Sample], out_dir: Optional[Path],
         pairs: _PerPair, events: Events) -> tuple[Confusion, Optional[dict]]:
    """The evaluation pass: the confusion matrix and review report; per-pair counts into ``pairs``,
    colour maps into ``out_dir`` (all committed at the end, none if the run fails)."""
    from PIL import Image

    from .review_metrics import ReviewStats

    done = [0]
    stage = _maps_stage(out_dir)

    def each_batch(pred: np.ndarray, label: np.ndarray, valid: Optional[np.ndarray], indices: list[int]) -> None:
        for k, i in enumerate(indices):
            v = None if valid is None else valid[k]
            pairs.add(pred[k], label[k], v, i)
            if stage is not None:
                name = _map_name(samples[i])
                Image.fromarray(colour_map(pred[k], label[k], v)).save(stage.path(name, shown=out_dir / name),
                                                                       format="PNG")
        done[0] += len(indices)
        events.progress(done[0], len(samples), stage="evaluate")

    review = ReviewStats()
    try:
        conf = confusion_over(model, loader, rt, threshold, on_batch=each_batch, check_cancel=events.check_cancel,
                              review=review)
        if stage is not None:
            from ..outputs import commit

            names = sorted({_map_name(x) for x in samples})
            commit([(stage, n, stage.folder / n, out_dir / n) for n in names], overwrite=True)
    finally:
        if stage is not None:
            stage.close()
    return conf, review.result()
