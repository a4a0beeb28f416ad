"""Merge the finished sheets into one change layer equal to a single ``detect`` on the mosaic,
streaming: memory stays flat in the number of sheets and polygons.

* Border pieces (polygons touching a sheet edge) are the only polygons held: pieces whose
  edge pixels are 4-neighbours across a sheet edge belong to one component (the rule of
  :mod:`engine.vector.strips` for strips); they are unioned, their statistics added, then
  min-area, simplify and georeferencing are applied once.
* Interior polygons go from each sheet's ``final.fgb`` (sorted by first pixel) straight to
  the output, a band of :data:`BAND_ROWS` global rows at a time: the sheets crossing the
  band are read in batches of :data:`BATCH`, their polygons and the joined border
  components of the band sorted together and written.

All polygons are numbered in raster-scan order of their first pixel (as ``detect`` does)
and carry ``sheet``: the id of the sheet holding that pixel.
"""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import UserError
from .job import area_grid, finalize
from .plan import RunContext

__all__ = ["merge_polygons", "merge_to_file", "link_pieces", "BAND_ROWS", "BATCH"]

#: Global rows whose polygons are sorted and written together.
BAND_ROWS = 512
#: Interior polygons read from one sheet's final.fgb at a time.
BATCH = 2048


def link_pieces(piece: np.ndarray, row: np.ndarray, col: np.ndarray, width: int) -> list[tuple[int, int]]:
    """Pairs of pieces with 4-neighbouring edge pixels (global pixel ``row``/``col``)."""
    if len(piece) == 0:
        return []
    key = row.astype(np.int64) * (width + 1) + col  # +1: a right neighbour never wraps to the next row
    order = np.argsort(key, kind="stable")
    key, piece = key[order], piece[order]
    pairs = []
    for step in (1, width + 1):  # right and down neighbours
        at = np.searchsorted(key, key + step)
        ok = at < len(key)
        ok[ok] &= key[at[ok]] == (key + step)[ok]
        a, b = piece[ok], piece[at[ok]]
        diff = a != b
        pairs.extend(zip(a[diff].tolist(), b[diff].tolist()))
    return pairs


def _labels(n: int, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Component label (0..k-1) of each of ``n`` pieces linked by ``pairs``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(pairs):
        return np.arange(n)
    a, b = np.array(pairs, dtype=np.int64).T
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _read(path: Path, **kw):
    """A sheet's piece file as a GeoDataFrame; a damaged one is one line naming it."""
    import pyogrio

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pyogrio.read_dataframe(path, **kw)
    except Exception as exc:  # verified before the merge: damaged since (a disk error)
        raise _damaged(path, exc) from None


def _damaged(path: Path, exc: BaseException) -> UserError:
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return UserError(f"{path}: damaged sheet result ({detail}); run the same command again to compute the sheet again")


def _edges(path: Path) -> dict:
    try:
        with np.load(path) as e:
            return {k: e[k] for k in ("piece", "row", "col")}
    except Exception as exc:
        raise _damaged(path, exc) from None


def _border_components(ctx: RunContext, done: Sequence[tuple]):
    """The border pieces of all done sheets joined into components, finalized, sorted by
    first pixel: a GeoDataFrame with first_row, first_col, area_m2, mean_prob, max_prob,
    review, sheet (or None when no sheet has border pieces)."""
    import geopandas as gpd
    import pandas as pd

    from ..vector.strips import _merge_pieces

    borders, edges, offset = [], [], 0
    for sid, folder, _window in done:
        if (folder / "border.fgb").exists():
            b = _read(folder / "border.fgb").sort_values("piece").reset_index(drop=True)
            b["sheet"] = sid
            borders.append(b)
            e = _edges(folder / "edges.npz")
            edges.append((e["piece"] + offset, e["row"], e["col"]))
            offset += len(b)
    if not borders:
        return None
    grid = area_grid(ctx)
    border = pd.concat(borders, ignore_index=True)
    del borders
    links = link_pieces(np.concatenate([e[0] for e in edges]), np.concatenate([e[1] for e in edges]),
                        np.concatenate([e[2] for e in edges]), ctx.area[0])
    label = _labels(len(border), links)
    del links
    key = border["first_row"].to_numpy(np.int64) * (ctx.area[0] + 1) + border["first_col"].to_numpy(np.int64)
    order = np.lexsort((key, label))  # by component, then first pixel: a component's first piece leads
    starts = np.flatnonzero(np.r_[True, label[order][1:] != label[order][:-1]])
    first = order[starts]  # the piece holding each component's first pixel
    count, prob_sum = _sums(label, border, "prob_count"), _sums(label, border, "prob_sum")
    prob_max = np.maximum.reduceat(border["prob_max"].to_numpy(np.float64)[order], starts)
    review = np.full(len(starts), np.nan)
    if "review_count" in border:
        rcount = _sums(label, border, "review_count")
        review = np.where(rcount > 0, _sums(label, border, "review_sum") / np.maximum(rcount, 1), np.nan)
    pieces, by_index = border.geometry.to_numpy(), np.argsort(label, kind="stable")  # pieces in file order
    ends = np.r_[starts[1:], len(order)]
    geoms = np.array([pieces[by_index[s0]] if e0 - s0 == 1 else _merge_pieces(list(pieces[by_index[s0:e0]]))
                      for s0, e0 in zip(starts, ends)], dtype=object)
    groups = label[first]  # component of each output row (labels index the sums)
    keep, mgeoms, areas = finalize(grid, geoms, ctx.plan.min_area, ctx.plan.simplify)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count[groups] > 0, prob_sum[groups] / np.maximum(count[groups], 1), np.nan)
    frame = gpd.GeoDataFrame(
        {"first_row": border["first_row"].to_numpy(np.int64)[first][keep],
         "first_col": border["first_col"].to_numpy(np.int64)[first][keep], "area_m2": areas,
         "mean_prob": mean[keep], "max_prob": np.where(count[groups] > 0, prob_max, np.nan)[keep],
         "review": review[groups][keep], "sheet": border["sheet"].to_numpy()[first][keep]},
        geometry=gpd.GeoSeries(mgeoms, crs=grid.crs_string), crs=grid.crs_string)
    return frame.sort_values(["first_row", "first_col"], kind="stable").reset_index(drop=True)


def _sums(label: np.ndarray, frame, column: str) -> np.ndarray:
    """Per component sums of ``column`` (float64, indexed by label)."""
    return np.bincount(label, weights=frame[column].to_numpy(np.float64))


class _Finals:
    """One sheet's interior polygons (``final.fgb``, sorted by first pixel), read in
    batches of :data:`BATCH`: :meth:`take` returns those whose first row is above a row."""

    def __init__(self, sid: str, path: Path, crs) -> None:
        self.sid, self.path, self.crs, self.read, self.buffer = sid, path, crs, 0, None
        self.total = self._count() if path.exists() else 0

    def _count(self) -> int:
        import pyogrio

        try:
            return int(pyogrio.read_info(self.path)["features"])
        except Exception as exc:
            raise _damaged(self.path, exc) from None

    @property
    def exhausted(self) -> bool:
        return self.read >= self.total and (self.buffer is None or len(self.buffer) == 0)

    def take(self, row_end: int) -> list:
        """The polygons with first_row < ``row_end`` not taken yet (GeoDataFrames)."""
        out = []
        while not self.exhausted:
            if self.buffer is None or len(self.buffer) == 0:
                self.buffer = _read(self.path, skip_features=self.read, max_features=BATCH)
                self.read += len(self.buffer)
                if len(self.buffer) == 0:  # fewer features than its header said
                    raise _damaged(self.path, OSError(f"{self.read} of {self.total} features readable"))
            n = int(np.searchsorted(self.buffer["first_row"].to_numpy(), row_end, side="left"))
            if n:
                part = self.buffer.iloc[:n].copy()
                part["sheet"] = self.sid
                if self.crs:
                    part = part.set_crs(self.crs, allow_override=True)
                out.append(part)
                self.buffer = self.buffer.iloc[n:]
            if len(self.buffer):  # the rest lies below row_end
                break
        return out


def merged_bands(ctx: RunContext, done: Sequence[tuple]) -> Iterator:
    """The merged layer in bands of :data:`BAND_ROWS` rows, each a GeoDataFrame sorted by
    first pixel with first_row, first_col, area_m2, mean_prob, max_prob, [review], sheet.

    Args:
        done: ``(sheet id, folder, window)`` of the finished sheets; window = (col, row,
            width, height) in the area's pixels.
    """
    import pandas as pd

    components = _border_components(ctx, done)
    comp_rows = components["first_row"].to_numpy() if components is not None else np.zeros(0, np.int64)
    pending = sorted(done, key=lambda d: (int(d[2][1]), int(d[2][0])))
    active: list[_Finals] = []
    taken_comp, height, crs = 0, int(ctx.area[1]), area_grid(ctx).crs_string
    for row0 in range(0, height, BAND_ROWS):
        row1 = min(row0 + BAND_ROWS, height)
        while pending and int(pending[0][2][1]) < row1:  # sheets whose rows start in this band
            sid, folder, _w = pending.pop(0)
            active.append(_Finals(sid, folder / "final.fgb", crs))
        parts = [p for s in active for p in s.take(row1)]
        active = [s for s in active if not s.exhausted]
        n = int(np.searchsorted(comp_rows, row1, side="left"))
        if n > taken_comp:
            parts.append(components.iloc[taken_comp:n])
            taken_comp = n
        if parts:
            band = pd.concat(parts, ignore_index=True)
            yield band.sort_values(["first_row", "first_col"], kind="stable").reset_index(drop=True)


def _columns(has_review: bool) -> list[str]:
    cols = ["id", "area_m2", "mean_prob", "max_prob", "sheet"]
    if has_review:  # the mean review score over each polygon's pixels (see engine.vector.review_areas)
        cols.insert(4, "review")
    return cols


def _has_review(done: Sequence[tuple]) -> bool:
    return any((folder / "review.tif").exists() for _sid, folder, _w in done)


def _numbered(bands: Iterator, has_review: bool, crs) -> Iterator:
    """The bands with ``id`` (1, 2, ... over all bands) and the output's columns only."""
    import geopandas as gpd

    cols, next_id = _columns(has_review), 1
    for band in bands:
        band["id"] = np.arange(next_id, next_id + len(band), dtype=np.int64)
        next_id += len(band)
        band["sheet"] = band["sheet"].astype(str)
        if has_review and "review" not in band:
            band["review"] = np.nan
        yield gpd.GeoDataFrame(band[cols + ["geometry"]], geometry="geometry", crs=crs)


def merge_polygons(ctx: RunContext, done: Sequence[tuple]):
    """The whole merged layer as one GeoDataFrame (``id, area_m2, mean_prob, max_prob,
    [review,] sheet``; ids in raster-scan order); :func:`merge_to_file` streams it instead."""
    import geopandas as gpd
    import pandas as pd

    crs = area_grid(ctx).crs_string
    bands = list(_numbered(merged_bands(ctx, done), _has_review(done), crs))
    if not bands:
        return _empty(crs, _has_review(done))
    return gpd.GeoDataFrame(pd.concat(bands, ignore_index=True), geometry="geometry", crs=crs)


def _empty(crs, has_review: bool):
    import geopandas as gpd

    data = {c: np.empty(0, dtype=object if c == "sheet" else np.int64 if c == "id" else np.float64)
            for c in _columns(has_review)}
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def merge_to_file(ctx: RunContext, done: Sequence[tuple], target: Path, overwrite: bool,
                  inputs: Sequence = ()) -> Counter:
    """Write the merged layer to ``target`` band by band (staged, renamed into place when
    complete; nothing left on an error or a full disk). Returns polygons per sheet id."""
    from ..outputs import staged_file
    from ..vector.io import VectorWriter

    crs = area_grid(ctx).crs_string
    has_review = _has_review(done)
    counts: Counter = Counter()
    with staged_file(target, overwrite, inputs) as path:
        writer = None
        try:
            for band in _numbered(merged_bands(ctx, done), has_review, crs):
                if writer is None:
                    writer = VectorWriter(path, band.crs.to_wkt() if band.crs is not None else None)
                writer.write(band)
                counts.update(band["sheet"].tolist())
            if writer is None:  # an empty layer that still has the fields, ``sheet`` included
                _write_empty(_empty(crs, has_review), Path(path))
            else:
                writer.close()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    return counts


def _write_empty(frame, path: Path) -> None:
    import pyogrio

    from ..vector.io import layer_name, vector_driver

    driver = vector_driver(path)
    frame = frame.astype({"sheet": str})
    with warnings.catch_warnings():  # the layer is named after the user's file, as VectorWriter does
        warnings.simplefilter("ignore")
        pyogrio.write_dataframe(frame, path, layer=None if driver == "ESRI Shapefile" else layer_name(path), driver=driver,
                                geometry_type="Polygon")

