"""How well HRMNet's hard-region (review) score points at the model's errors.

:class:`ReviewStats` accumulates, tile by tile, a fine histogram of the review score of
all pixels and of the wrongly classified ones, plus each predicted polygon's mean score
and whether it is a false positive. :meth:`ReviewStats.result` then reports:

- pixels: the error rate among the top 1 % and 5 % of pixels by review score against
  the rest, their ratio, and the share of all errors the top pixels hold (pixels tied at
  the cut count pro rata, so the top is exactly 1 % or 5 %);
- polygons (4-connected components of the predicted change in each tile): the share of
  false positives (less than half of the polygon's pixels are change in the truth)
  among the 10 % of polygons with the highest mean review score against the rest.

numpy and scipy only (no torch), so detection outputs can be scored the same way.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["ReviewStats", "PIXEL_FRACTIONS", "POLYGON_FRACTION", "as_tiles", "format_review"]

PIXEL_FRACTIONS = (0.01, 0.05)
POLYGON_FRACTION = 0.10
BINS = 1 << 16  # histogram resolution of the score (0..1)


class ReviewStats:
    """Accumulates review scores against errors; see the module docstring."""

    def __init__(self) -> None:
        self.all = np.zeros(BINS, dtype=np.int64)
        self.wrong = np.zeros(BINS, dtype=np.int64)
        self.poly_review: list[np.ndarray] = []
        self.poly_fp: list[np.ndarray] = []

    def update(self, pred: np.ndarray, label: np.ndarray, review: np.ndarray,
               valid: Optional[np.ndarray] = None) -> None:
        """Add tiles: ``pred``, ``label`` (N, H, W) or (H, W) bool, ``review`` same shape
        float 0..1 (NaN = unknown), ``valid`` bool (default: where review is finite). A
        ``valid`` mask (partial labels) also keeps the polygons to the valid pixels."""
        pred, label, review, ok = as_tiles(pred, label, review, valid)
        bins = np.clip((np.nan_to_num(review) * (BINS - 1)).astype(np.int64), 0, BINS - 1)
        self.all += np.bincount(bins[ok], minlength=BINS)
        self.wrong += np.bincount(bins[ok & (pred != label)], minlength=BINS)
        for p, y, r, v in zip(pred, label, review, ok):
            self._polygons(p if valid is None else p & v, y, r)

    def _polygons(self, pred: np.ndarray, label: np.ndarray, review: np.ndarray) -> None:
        from scipy import ndimage

        labels, n = ndimage.label(pred)
        if n == 0:
            return
        flat = labels.ravel()
        idx = np.flatnonzero(flat)
        lab = flat[idx]
        size = np.bincount(lab, minlength=n + 1)[1:]
        true = np.bincount(lab, weights=label.ravel()[idx], minlength=n + 1)[1:]
        r = review.ravel()[idx].astype(np.float64)
        ok = np.isfinite(r)
        rsum = np.bincount(lab[ok], weights=r[ok], minlength=n + 1)[1:]
        rcount = np.bincount(lab[ok], minlength=n + 1)[1:]
        self.poly_review.append(np.where(rcount > 0, rsum / np.maximum(rcount, 1), 0.0))
        self.poly_fp.append(true < 0.5 * size)

    def result(self) -> Optional[dict]:
        """The report (see the module docstring), or None when nothing was added."""
        total, errors = int(self.all.sum()), int(self.wrong.sum())
        if total == 0:
            return None
        out: dict = {"pixels": total, "errors": errors, "error_rate": _ratio(errors, total)}
        above_all = np.cumsum(self.all[::-1])[::-1]  # pixels with a score in this bin or higher
        above_wrong = np.cumsum(self.wrong[::-1])[::-1]
        for q in PIXEL_FRACTIONS:
            b = int(np.flatnonzero(above_all >= q * total)[-1])
            # pixels tied in bin b: take the share of them the top needs (errors pro rata)
            n_top = q * total
            higher_n = int(above_all[b + 1]) if b + 1 < BINS else 0
            higher_e = int(above_wrong[b + 1]) if b + 1 < BINS else 0
            e_top = higher_e + (n_top - higher_n) / self.all[b] * self.wrong[b]
            top_rate, rest_rate = _ratio(e_top, n_top), _ratio(errors - e_top, total - n_top)
            out[f"top_{round(q * 100)}pct"] = {
                "fraction": round(n_top / total, 5), "score_from": round(b / (BINS - 1), 4),
                "error_rate": top_rate, "rest_error_rate": rest_rate,
                "ratio": None if not rest_rate else round(top_rate / rest_rate, 2),
                "error_share": _ratio(e_top, errors)}
        out["polygons"] = self._polygon_result()
        return out

    def _polygon_result(self) -> dict:
        review = np.concatenate(self.poly_review) if self.poly_review else np.zeros(0)
        fp = np.concatenate(self.poly_fp) if self.poly_fp else np.zeros(0, bool)
        n = len(review)
        k = int(round(POLYGON_FRACTION * n)) if n else 0
        k = max(1, k) if n else 0
        top = np.zeros(n, bool)
        top[np.argsort(-review, kind="stable")[:k]] = True
        return {"count": n, "false_positives": int(fp.sum()), "top_fraction": POLYGON_FRACTION,
                "top_fp_share": _ratio(int(fp[top].sum()), int(top.sum())),
                "rest_fp_share": _ratio(int(fp[~top].sum()), int((~top).sum()))}


def as_tiles(pred: np.ndarray, label: np.ndarray, review: np.ndarray, valid: Optional[np.ndarray] = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(pred, label, review, ok)`` as (N, H, W) arrays: bool, bool, float32 and bool, where
    ``ok`` is ``valid`` (default: everywhere) and a finite review score. (H, W) inputs become
    one tile."""
    pred, label = np.asarray(pred, bool), np.asarray(label, bool)
    review = np.asarray(review, np.float32)
    if pred.ndim == 2:
        pred, label, review = pred[None], label[None], review[None]
        valid = None if valid is None else np.asarray(valid)[None]
    ok = np.isfinite(review) if valid is None else (np.asarray(valid, bool) & np.isfinite(review))
    return pred, label, review, ok


def _ratio(a: float, b: float) -> Optional[float]:
    return round(float(a) / float(b), 5) if b else None


def format_review(report: Optional[dict]) -> list[str]:
    """Lines for the evaluate table (empty without a report)."""
    if not report:
        return []
    lines = ["  review score vs errors (HRMNet's hard-region head):"]
    for key in (f"top_{round(q * 100)}pct" for q in PIXEL_FRACTIONS):
        t = report[key]
        lines.append(f"    top {key[4:-3]} % of pixels: error rate {_pct(t['error_rate'])} vs {_pct(t['rest_error_rate'])}"
                     f" elsewhere ({t['ratio']}x), {_pct(t['error_share'])} of all errors")
    p = report["polygons"]
    lines.append(f"    polygons: {p['count']}, false positives {p['false_positives']}; among the "
                 f"{round(p['top_fraction'] * 100)} % with the highest review {_pct(p['top_fp_share'])} are false "
                 f"positives vs {_pct(p['rest_fp_share'])} of the rest")
    return lines


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} %"
