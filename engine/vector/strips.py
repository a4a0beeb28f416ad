"""Pure core of polygonization: strips of a boolean mask in, whole components out.

The mask is fed strip by strip (full width, consecutive rows). Each strip is labelled
(4-connectivity) and polygonized in pixel coordinates (x = column, y = row, integer
corners, so geometry from neighbouring strips meets exactly). A component that does not
touch the strip's lower edge is finished at once, with no geometric union: that is the
fast path most polygons take. Components touching the lower edge stay *pending*; in the
next strip, the pixels on both sides of the seam tell which new components continue which
pending ones (union-find over the links), and only those pieces are unioned, once, when
the whole group is finished. Per-component statistics (pixel count, probability sum,
count of valid probabilities, maximum; the same of the review score when given) are
carried and merged with the pieces.

Memory: one strip's labels plus the pending pieces; the scene is never held whole.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from typing import Iterator, Optional

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from scipy import ndimage

__all__ = ["Component", "StripMerger", "polygonize_array", "merge_pieces", "drop_collinear"]


@dataclass
class Component:
    """One connected region of change, complete.

    Attributes:
        geometry: shapely Polygon in pixel coordinates (x = column, y = row of the
            whole raster, pixel corners at integers), holes kept.
        pixels: number of mask pixels.
        prob_sum: sum of the valid probabilities (0..1) over its pixels.
        prob_count: number of pixels with a valid probability.
        prob_max: largest valid probability, NaN when ``prob_count`` is 0.
        first: its first pixel in raster-scan order, as ``row * width + col`` (the
            order polygons are numbered in).
        review_sum, review_count, review_max: the same as ``prob_*`` for the
            hard-region (review) score, when one was fed.
    """

    geometry: shapely.Polygon
    pixels: int
    prob_sum: float = 0.0
    prob_count: int = 0
    prob_max: float = float("nan")
    first: int = -1
    review_sum: float = 0.0
    review_count: int = 0
    review_max: float = float("nan")

    @property
    def mean_prob(self) -> float:
        """Mean valid probability (0..1), NaN when there is none."""
        return self.prob_sum / self.prob_count if self.prob_count else float("nan")

    @property
    def review(self) -> float:
        """Mean valid review score (0..1) over the component's pixels, NaN when there is none."""
        return self.review_sum / self.review_count if self.review_count else float("nan")


@dataclass
class _Group:
    """A component still open at the lower edge: its pieces and merged statistics."""

    pieces: list = field(default_factory=list)
    pixels: int = 0
    prob_sum: float = 0.0
    prob_count: int = 0
    prob_max: float = -np.inf
    first: int = -1
    review_sum: float = 0.0
    review_count: int = 0
    review_max: float = -np.inf

    def add(self, other: "_Group") -> None:
        self.pieces.extend(other.pieces)
        self.pixels += other.pixels
        self.prob_sum += other.prob_sum
        self.prob_count += other.prob_count
        self.prob_max = max(self.prob_max, other.prob_max)
        self.first = other.first if self.first < 0 else min(self.first, other.first)
        self.review_sum += other.review_sum
        self.review_count += other.review_count
        self.review_max = max(self.review_max, other.review_max)

    def finish(self) -> Component:
        geom = self.pieces[0] if len(self.pieces) == 1 else merge_pieces(self.pieces)
        pmax = float(self.prob_max) if self.prob_count else float("nan")
        rmax = float(self.review_max) if self.review_count else float("nan")
        return Component(geom, int(self.pixels), float(self.prob_sum), int(self.prob_count), pmax, int(self.first),
                         float(self.review_sum), int(self.review_count), rmax)


def merge_pieces(pieces: list) -> shapely.Polygon:
    """One polygon from pieces of one component cut at strip seams.

    A piece's holes lie strictly inside its strip (a hole touching a seam would not be
    enclosed), so no other piece touches them: only the outer rings are unioned, which
    is much cheaper than unioning polygons with many holes, and the pieces' holes are
    added back unchanged. The union leaves vertices where seams were; they are exactly
    collinear (integer pixel corners) and are removed.
    """
    shells = shapely.polygons([p.exterior for p in pieces])
    union = shapely.union_all(shells)
    if union.geom_type != "Polygon":  # cannot happen for pieces linked across seams
        return shapely.union_all(pieces)
    rings = [drop_collinear(np.asarray(union.exterior.coords))]
    rings += [drop_collinear(np.asarray(r.coords)) for r in union.interiors]
    holes = [h for p in pieces for h in p.interiors]
    holes = [shapely.linearrings(r) for r in rings[1:]] + holes
    shell = shapely.linearrings(rings[0])
    if not holes:
        return shapely.polygons(shell)
    return shapely.polygons(shell, holes=np.array(holes, dtype=object))


def drop_collinear(ring: np.ndarray) -> np.ndarray:
    """Closed ring (n+1, 2) without the vertices that lie on the line through their neighbours.

    Exact for pixel-corner coordinates (integers), which is what it is used on.
    """
    pts = ring[:-1]
    prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
    cross = (pts[:, 0] - prev[:, 0]) * (nxt[:, 1] - pts[:, 1]) - (pts[:, 1] - prev[:, 1]) * (nxt[:, 0] - pts[:, 0])
    keep = pts[cross != 0]
    return np.vstack([keep, keep[:1]])


class StripMerger:
    """Turns consecutive mask strips into finished components, merged across seams.

    Args:
        width: columns of every strip (the raster width).
    """

    def __init__(self, width: int) -> None:
        self.width = int(width)
        self._pending: dict[int, _Group] = {}
        self._next_gid = 1
        self._prev_bottom: Optional[np.ndarray] = None  # pending group id per column of the last row (0: none)
        self._next_row = 0

    @property
    def pending(self) -> int:
        """Number of components still open at the last strip's lower edge."""
        return len(self._pending)

    def pending_first(self) -> int:
        """Smallest ``first`` (raster-scan index) of a component not finished yet: those
        still open, and those not seen yet (they start at the next row or later)."""
        return min([g.first for g in self._pending.values()] + [self._next_row * self.width])

    def feed(self, mask: np.ndarray, prob: Optional[np.ndarray] = None, row_off: Optional[int] = None,
             last: bool = False, review: Optional[np.ndarray] = None) -> list[Component]:
        """Add the next strip and return the components it finishes.

        Args:
            mask: (rows, width) bool, True = change.
            prob: (rows, width) float probabilities 0..1 with NaN where unknown, or None.
            row_off: row of the strip's first line in the whole raster (default: the row
                after the previous strip); strips must be consecutive.
            last: True for the last strip (nothing stays pending).
            review: (rows, width) float review scores 0..1 with NaN where unknown, or None.
        Returns:
            Finished components, in no particular order.
        """
        mask = np.asarray(mask, dtype=bool)
        rows, width = mask.shape
        if width != self.width:
            raise ValueError(f"strip width {width} != {self.width}")
        if row_off is None:
            row_off = self._next_row
        if row_off != self._next_row:
            raise ValueError(f"strips must be consecutive: expected row {self._next_row}, got {row_off}")
        self._next_row = row_off + rows
        finished: list[Component] = []

        labels, n = ndimage.label(mask)  # default structure: 4-connectivity
        if n == 0:
            finished.extend(g.finish() for g in self._pending.values())
            self._pending.clear()
            self._prev_bottom = None
            return finished

        stats = _label_stats(labels, n, prob, row_off)
        if review is not None:  # review sum, count, max
            stats += _label_stats(labels, n, review, row_off)[1:4]
        else:
            stats += (np.zeros(n + 1), np.zeros(n + 1, dtype=np.int64), np.full(n + 1, -np.inf))
        polys = _label_polygons(labels, n, row_off)
        at_bottom = np.zeros(n + 1, dtype=bool)
        if not last:
            at_bottom[np.unique(labels[-1])] = True
            at_bottom[0] = False

        # Links across the seam: (pending group id, new label) pairs of vertical neighbours.
        pairs = np.empty((0, 2), dtype=np.int64)
        if self._prev_bottom is not None:
            top = labels[0]
            both = (self._prev_bottom > 0) & (top > 0)
            if both.any():
                pairs = np.unique(np.stack([self._prev_bottom[both], top[both].astype(np.int64)], axis=1), axis=0)

        new_pending: dict[int, _Group] = {}
        gid_of_label = np.zeros(n + 1, dtype=np.int64)
        linked_labels = np.zeros(n + 1, dtype=bool)
        linked_labels[pairs[:, 1]] = True

        # Groups of linked nodes (pending gids and new labels), by union-find.
        for gids, labs in _link_groups(pairs):
            group = _Group()
            for gid in gids:
                group.add(self._pending.pop(gid))
            for lab in labs:
                group.add(_piece(polys[lab], stats, lab))
            if at_bottom[labs].any():
                gid = min(gids)
                new_pending[gid] = group
                gid_of_label[labs] = gid
            else:
                finished.append(group.finish())

        # Pending groups nothing continued are complete.
        finished.extend(g.finish() for g in self._pending.values())
        self._pending = new_pending

        # New labels not linked to anything above: the fast path.
        for lab in np.flatnonzero(~linked_labels[1:]) + 1:
            piece = _piece(polys[lab], stats, lab)
            if at_bottom[lab]:
                gid = self._next_gid
                self._next_gid += 1
                self._pending[gid] = piece
                gid_of_label[lab] = gid
            else:
                finished.append(piece.finish())

        self._next_gid = max(self._next_gid, max(self._pending, default=0) + 1)
        self._prev_bottom = None if last else gid_of_label[labels[-1]]
        return finished

    def finish(self) -> list[Component]:
        """Components still pending (call after the last strip if it was not fed with ``last``)."""
        done = [g.finish() for g in self._pending.values()]
        self._pending.clear()
        self._prev_bottom = None
        return done


def _label_stats(labels: np.ndarray, n: int, prob: Optional[np.ndarray], row_off: int = 0) -> tuple:
    """Per label 0..n: pixel count, probability sum, valid count, max (-inf where none),
    first pixel in raster-scan order (``row * width + col`` of the whole raster)."""
    flat = labels.ravel()
    idx = np.flatnonzero(flat)  # changed pixels only: cheap for sparse masks, in raster-scan order
    lab = flat[idx]
    pixels = np.bincount(lab, minlength=n + 1)
    first = np.full(n + 1, -1, dtype=np.int64)
    seen, at = np.unique(lab, return_index=True)
    first[seen] = idx[at].astype(np.int64) + int(row_off) * labels.shape[1]
    if prob is None:
        return pixels, np.zeros(n + 1), np.zeros(n + 1, dtype=np.int64), np.full(n + 1, -np.inf), first
    val = np.asarray(prob).ravel()[idx].astype(np.float64)
    ok = np.isfinite(val)
    if not ok.all():
        lab, val = lab[ok], val[ok]
    psum = np.bincount(lab, weights=val, minlength=n + 1)
    pcount = np.bincount(lab, minlength=n + 1)
    pmax = np.full(n + 1, -np.inf)
    np.maximum.at(pmax, lab, val)
    return pixels, psum, pcount, pmax, first


def _label_polygons(labels: np.ndarray, n: int, row_off: int) -> list:
    """Polygon of each label 1..n in whole-raster pixel coordinates (index 0 unused).

    GDAL's polygonizer yields GeoJSON-like rings; they are flattened into one coordinate
    array and turned into shapely geometries in a few vectorized calls (a ring at a time
    in Python would dominate the run time for components with thousands of holes).
    """
    values: list[int] = []
    rings_per_poly: list[int] = []
    ring_lengths: list[int] = []
    chunks: list[np.ndarray] = []  # coordinates per polygon as float arrays, not Python tuples
    for geom, value in shapes(labels, mask=labels > 0, connectivity=4, transform=Affine.translation(0, row_off)):
        coords = geom["coordinates"]
        values.append(int(value))
        rings_per_poly.append(len(coords))
        lengths = [len(r) for r in coords]
        ring_lengths.extend(lengths)
        chunks.append(np.fromiter(chain.from_iterable(chain.from_iterable(coords)), dtype=np.float64,
                                  count=2 * sum(lengths)))
    polys: list = [None] * (n + 1)
    if not values:
        return polys
    xy = np.concatenate(chunks)
    del chunks
    ring_geoms = shapely.linearrings(xy.reshape(-1, 2), indices=np.repeat(np.arange(len(ring_lengths)), ring_lengths))
    poly_geoms = shapely.polygons(ring_geoms, indices=np.repeat(np.arange(len(values)), rings_per_poly))
    for lab, poly in zip(values, poly_geoms):
        # One 4-connected label is one polygon; guard anyway.
        polys[lab] = poly if polys[lab] is None else shapely.union_all([polys[lab], poly])
    return polys


def _piece(poly, stats: tuple, lab: int) -> _Group:
    pixels, psum, pcount, pmax, first, rsum, rcount, rmax = stats
    return _Group([poly], int(pixels[lab]), float(psum[lab]), int(pcount[lab]), float(pmax[lab]), int(first[lab]),
                  float(rsum[lab]), int(rcount[lab]), float(rmax[lab]))


def _link_groups(pairs: np.ndarray) -> Iterator[tuple[list[int], np.ndarray]]:
    """Connected sets of (pending gid, new label) links: yields (gids, labels)."""
    if len(pairs) == 0:
        return
    parent: dict = {}

    def find(x):
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for gid, lab in pairs.tolist():
        a, b = ("g", gid), ("l", lab)
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra
    members: dict = {}
    for node in parent:
        members.setdefault(find(node), []).append(node)
    for nodes in members.values():
        gids = sorted(v for k, v in nodes if k == "g")
        labs = np.array(sorted(v for k, v in nodes if k == "l"), dtype=np.int64)
        yield gids, labs


def polygonize_array(mask: np.ndarray, prob: Optional[np.ndarray] = None, window_rows: int = 1024,
                     review: Optional[np.ndarray] = None) -> list[Component]:
    """Polygonize a whole (rows, cols) bool mask in strips of ``window_rows`` (for tests and small inputs).

    Returns components in pixel coordinates, in raster-scan order of their first pixel;
    see :class:`StripMerger`.
    """
    mask = np.asarray(mask, dtype=bool)
    merger = StripMerger(mask.shape[1])
    out: list[Component] = []
    rows = mask.shape[0]
    for r0 in range(0, rows, window_rows):
        r1 = min(rows, r0 + window_rows)
        out.extend(merger.feed(mask[r0:r1], None if prob is None else prob[r0:r1], r0, last=r1 >= rows,
                               review=None if review is None else review[r0:r1]))
    out.extend(merger.finish())
    return sorted(out, key=lambda c: c.first)
