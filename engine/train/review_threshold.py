"""Choosing the "look here" threshold (``review_threshold``) on the validation split.

``detect --out-review-areas`` flags connected regions whose review score is above the
checkpoint's ``review_threshold``, that hold no change and touch no change pixel. This
module measures, tile by tile, how well such regions catch the changes the model missed,
for each threshold of :data:`GRID`, and picks one by :data:`RULE`.

On each tile, for a threshold ``t``:

- areas: 4-connected components of ``(review > t) & ~pred`` that touch no predicted change
  pixel (8-neighbourhood), as :func:`engine.vector.review_areas.candidate_strip` builds them;
- an area is a hit when it holds a missed pixel (``label & ~pred``);
- missed changes: 4-connected components of ``label & ~pred`` that touch no predicted change
  pixel (changes the mask missed entirely, not a polygon's too-small outline); one is caught
  when an area overlaps it.

Precision = hits / areas, recall = caught / missed changes, and their F1. Components cut by a
tile's edge count once per tile (a cheap proxy of the full-image areas). numpy and scipy only.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .review_metrics import as_tiles

__all__ = ["GRID", "RULE", "ThresholdStats", "choose_threshold", "Tee"]

#: Thresholds tried (review score, 0..1 exclusive).
GRID = tuple(round(0.05 * k, 2) for k in range(1, 11))  # 0.05 .. 0.5
#: How :func:`choose_threshold` picks (stored with the choice).
RULE = ("highest F1 of area precision (share of areas holding missed change) and recall (share of "
        "missed changes an area overlaps); ties go to the higher threshold; the default when no "
        "threshold gives a hit")
# columns of ThresholdStats.counts
_COLUMNS = ("areas", "hits", "missed_caught", "flagged_px", "missed_px_caught")


class ThresholdStats:
    """Counts per threshold of :data:`GRID` (or ``grid``), accumulated tile by tile."""

    def __init__(self, grid: tuple = GRID) -> None:
        self.grid = tuple(float(t) for t in grid)
        self.counts = np.zeros((len(self.grid), len(_COLUMNS)), dtype=np.int64)
        self.missed = 0  # missed changes (components), the same for every threshold

    def update(self, pred: np.ndarray, label: np.ndarray, review: np.ndarray,
               valid: Optional[np.ndarray] = None) -> None:
        """Add tiles: ``pred``, ``label`` (N, H, W) or (H, W) bool, ``review`` same shape float
        0..1 (NaN = unknown), ``valid`` bool (default: where review is finite)."""
        pred, label, review, ok = as_tiles(pred, label, review, valid)
        for p, y, r, v in zip(pred, label, review, ok):
            self._tile(p, y & v, np.where(v, r, -1.0))

    def _tile(self, pred: np.ndarray, label: np.ndarray, review: np.ndarray) -> None:
        from scipy import ndimage

        near = ndimage.binary_dilation(pred, structure=np.ones((3, 3), dtype=bool))
        missed_px = label & ~pred
        mlab, m = ndimage.label(missed_px)
        far_missed = np.bincount(mlab[near & missed_px], minlength=m + 1) == 0  # touches no change
        far_missed[0] = False
        self.missed += int(far_missed.sum())
        for i, t in enumerate(self.grid):
            lab, n = ndimage.label((review > t) & ~pred)
            if n == 0:
                continue
            keep = np.bincount(lab[near], minlength=n + 1) == 0  # touches no change pixel
            keep[0] = False
            area = keep[lab]
            inside = area & missed_px
            hits = np.count_nonzero(np.bincount(lab[inside], minlength=n + 1))
            caught = np.bincount(mlab[inside], minlength=m + 1) > 0
            self.counts[i] += (int(keep.sum()), hits, int((caught & far_missed).sum()), int(area.sum()),
                               int(inside.sum()))

    def table(self) -> list[dict]:
        """One row per threshold: the counts, precision, recall and F1 (None when undefined)."""
        rows = []
        for t, c in zip(self.grid, self.counts):
            row = {"threshold": t, **{k: int(v) for k, v in zip(_COLUMNS, c)}, "missed_changes": self.missed}
            precision = row["hits"] / row["areas"] if row["areas"] else None
            recall = row["missed_caught"] / self.missed if self.missed else None
            f1 = (2 * precision * recall / (precision + recall) if precision and recall else
                  (0.0 if precision is not None and recall is not None else None))
            row.update(precision=_r(precision), recall=_r(recall), f1=_r(f1))
            rows.append(row)
        return rows

    def result(self, default: float) -> dict:
        """``{"value", "measured", "rule", "table"}``: the chosen threshold (``default`` when
        nothing was measured), whether it was measured, :data:`RULE` and :meth:`table`."""
        rows = self.table()
        value = choose_threshold(rows)
        return {"value": default if value is None else value, "measured": value is not None, "rule": RULE,
                "table": rows}


def choose_threshold(rows: list[dict]) -> Optional[float]:
    """The threshold of the row with the highest ``f1`` (ties: the higher threshold), or None
    when no row has a positive F1 (no area caught a missed change, or nothing was missed)."""
    best = None
    for row in rows:
        f1 = row.get("f1")
        if f1 and (best is None or (f1, row["threshold"]) >= (best["f1"], best["threshold"])):
            best = row
    return None if best is None else float(best["threshold"])


def _r(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(float(v), 5)


class Tee:
    """Hands each ``update(...)`` to several accumulators (e.g. ReviewStats and ThresholdStats)."""

    def __init__(self, *sinks) -> None:
        self.sinks = sinks

    def update(self, *args, **kwargs) -> None:
        for sink in self.sinks:
            sink.update(*args, **kwargs)
