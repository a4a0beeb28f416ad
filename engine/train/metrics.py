"""Change-detection metrics over one confusion matrix of a whole evaluated set.

Counts accumulate tile by tile (:meth:`Confusion.update`); the scores are computed once
at the end from the totals (not averaged per tile), for the change class:

- precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R)
- IoU = TP / (TP + FP + FN), OA = (TP + TN) / N
- kappa = (OA − pe) / (1 − pe), pe = ((TP+FP)(TP+FN) + (FN+TN)(FP+TN)) / N²

A ratio whose denominator is zero is 0.0 (e.g. F1 when there is no change at all and
none is predicted).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Union

import numpy as np
import torch

__all__ = ["Confusion", "METRIC_KEYS", "scores"]

METRIC_KEYS = ("kappa", "iou", "f1", "precision", "recall", "oa")
ArrayLike = Union[np.ndarray, torch.Tensor]


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def scores(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Precision, recall, F1, IoU, OA and kappa (keys of :data:`METRIC_KEYS`) from counts."""
    tp, fp, fn, tn = (float(v) for v in (tp, fp, fn, tn))
    n = tp + fp + fn + tn
    precision = _div(tp, tp + fp)
    recall = _div(tp, tp + fn)
    f1 = _div(2 * precision * recall, precision + recall)
    iou = _div(tp, tp + fp + fn)
    oa = _div(tp + tn, n)
    pe = _div((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn), n * n)
    kappa = _div(oa - pe, 1 - pe) if pe < 1 else 0.0
    return {"kappa": kappa, "iou": iou, "f1": f1, "precision": precision, "recall": recall, "oa": oa}


def _bool(x: ArrayLike) -> ArrayLike:
    if isinstance(x, torch.Tensor):
        return x.bool() if x.dtype == torch.bool else x > 0.5 if x.is_floating_point() else x != 0
    x = np.asarray(x)
    return x if x.dtype == bool else (x > 0.5 if np.issubdtype(x.dtype, np.floating) else x != 0)


def _counts_torch(p: torch.Tensor, y: torch.Tensor, v: Optional[torch.Tensor]) -> list[int]:
    """(TP, FP, FN, pixels counted) of bool tensors; only where ``v`` when given."""
    if v is None:
        return torch.stack([(p & y).sum(), (p & ~y).sum(), (~p & y).sum()]).tolist() + [int(np.prod(p.shape))]
    return torch.stack([(p & y & v).sum(), (p & ~y & v).sum(), (~p & y & v).sum(), v.sum()]).tolist()


def _counts_numpy(p: np.ndarray, y: np.ndarray, v: Optional[np.ndarray]) -> list[int]:
    """(TP, FP, FN, pixels counted) of bool arrays; only where ``v`` when given."""
    if v is None:
        return [int(np.count_nonzero(p & y)), int(np.count_nonzero(p & ~y)), int(np.count_nonzero(~p & y)), p.size]
    return [int(np.count_nonzero(p & y & v)), int(np.count_nonzero(p & ~y & v)), int(np.count_nonzero(~p & y & v)),
            int(np.count_nonzero(v))]


@dataclass
class Confusion:
    """Pixel counts of the change class: true/false positives/negatives (int)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def update(self, pred: ArrayLike, label: ArrayLike, valid: Optional[ArrayLike] = None) -> "Confusion":
        """Add one tile or batch: ``pred`` and ``label`` of the same shape, bool, {0,1}
        or probabilities (> 0.5 is change); numpy arrays or tensors on any device.
        ``valid`` (same shape; None = every pixel): only those pixels are counted."""
        p, y = _bool(pred), _bool(label)
        if tuple(p.shape) != tuple(y.shape):
            raise ValueError(f"prediction shape {tuple(p.shape)} != label shape {tuple(y.shape)}")
        if isinstance(p, torch.Tensor):
            y = y.to(p.device) if isinstance(y, torch.Tensor) else torch.as_tensor(y, device=p.device)
            v = None if valid is None else torch.as_tensor(_bool(valid), device=p.device)
            counts = _counts_torch(p, y, v)
        else:
            y = y.cpu().numpy() if isinstance(y, torch.Tensor) else y
            v = None if valid is None else np.asarray(_bool(valid.cpu() if isinstance(valid, torch.Tensor) else valid))
            counts = _counts_numpy(p, y, v)
        tp, fp, fn, n = (int(c) for c in counts)
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.tn += n - tp - fp - fn
        return self

    def __add__(self, other: "Confusion") -> "Confusion":
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def scores(self) -> dict[str, float]:
        """See :func:`scores`."""
        return scores(self.tp, self.fp, self.fn, self.tn)
