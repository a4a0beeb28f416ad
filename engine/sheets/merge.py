"""Merge the finished sheets into one change layer equal to a single ``detect`` on the mosaic,
streaming: memory stays flat in the number of sheets and polygons.

* Border pieces (polygons touching a sheet edge) are the only polygons held, and only
  while they can still grow: pieces whose edge pixels are 4-neighbours across a sheet edge
  belong to one component (the rule of :mod:`engine.vector.strips` for strips), joined
  edge by edge as a sweep down the area opens the sheets a row of sheets at a time; a
  component no sheet left to open can touch is unioned, its statistics added, then
  min-area, simplify and georeferencing are applied once (:class:`_Joiner`).
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

__all__ = ["merge_polygons", "merge_to_file", "write_merged", "link_pieces", "BAND_ROWS", "BATCH"]

#: Global rows whose polygons are sorted and written together (a band across the whole area:
#: kept low so that a wide area of many polygons holds few at a time).
BAND_ROWS = 128
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


class _Joiner:
    """Border pieces joined edge by edge as the sweep opens the sheets, a row of sheets (same
    first row) at a time: the new pieces are linked with the components still open; a
    component is closed, merged and finalized as soon as no sheet that could touch it is
    left to open (every sheet of the area starting at or above the lowest bottom edge of its
    sheets is open). Only the open components and the closed ones not yet written are held."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx, self.width, self.grid = ctx, int(ctx.area[0]), area_grid(ctx)
        self.open: list[dict] = []
        self.ready = None  # closed components not yet written, sorted by first pixel

    def add(self, group: Sequence[tuple]) -> None:
        """Open the sheets of ``group``: their border pieces joined with the open components."""
        nodes = self.open + [c for sid, folder, window in group for c in _pieces(sid, folder, window)]
        if not nodes:
            return
        owner = np.concatenate([np.full(len(c["rows"]), i, dtype=np.int64) for i, c in enumerate(nodes)])
        links = link_pieces(owner, np.concatenate([c["rows"] for c in nodes]),
                            np.concatenate([c["cols"] for c in nodes]), self.width)
        label = _labels(len(nodes), links)
        members: dict[int, list[dict]] = {}
        for node, lab in zip(nodes, label.tolist()):
            members.setdefault(lab, []).append(node)
        self.open = [_join(m) for m in members.values()]

    def close(self, next_row: float) -> None:
        """Close the components whose sheets all end above ``next_row`` (the first row of the
        next sheets to open)."""
        done = [c for c in self.open if c["max_r1"] < next_row]
        if not done:
            return
        self.open = [c for c in self.open if c["max_r1"] >= next_row]
        frame = self._finalized(done)
        if self.ready is not None and len(self.ready):
            import pandas as pd

            frame = pd.concat([self.ready, frame], ignore_index=True)
        self.ready = frame.sort_values(["first_row", "first_col"], kind="stable").reset_index(drop=True)

    def open_row(self) -> float:
        """The first row of the open components' first pixels (nothing at or below it can be
        written yet)."""
        return min((c["key"][0] for c in self.open), default=np.inf)

    def take(self, row_end: int) -> list:
        """The closed components whose first pixel lies above ``row_end`` (and forget them)."""
        if self.ready is None or not len(self.ready):
            return []
        n = int(np.searchsorted(self.ready["first_row"].to_numpy(), row_end, side="left"))
        part, self.ready = self.ready.iloc[:n], self.ready.iloc[n:]
        return [part] if n else []

    def _finalized(self, comps: list[dict]):
        """Closed components -> GeoDataFrame (merged, min-area, simplify, georeferenced)."""
        import geopandas as gpd

        from ..vector.strips import merge_pieces

        geoms = np.array([c["geoms"][0] if len(c["geoms"]) == 1 else merge_pieces(c["geoms"]) for c in comps],
                         dtype=object)
        keep, mgeoms, areas = finalize(self.grid, geoms, self.ctx.plan.min_area, self.ctx.plan.simplify)
        kept = [c for c, k in zip(comps, keep) if k]

        def mean(total: str, count: str) -> np.ndarray:
            return np.array([c[total] / c[count] if c[count] else np.nan for c in kept], dtype=np.float64)

        crs = self.grid.crs_string
        return gpd.GeoDataFrame(
            {"first_row": np.array([c["key"][0] for c in kept], dtype=np.int64),
             "first_col": np.array([c["key"][1] for c in kept], dtype=np.int64), "area_m2": areas,
             "mean_prob": mean("prob_sum", "prob_count"),
             "max_prob": np.array([c["prob_max"] if c["prob_count"] else np.nan for c in kept], dtype=np.float64),
             "review": mean("review_sum", "review_count"), "sheet": [c["sheet"] for c in kept]},
            geometry=gpd.GeoSeries(mgeoms, crs=crs), crs=crs)


def _pieces(sid: str, folder: Path, window: tuple) -> list[dict]:
    """A sheet's border pieces, each as a component of one piece (see :func:`_join`)."""
    if not (folder / "border.fgb").exists():
        return []
    b = _read(folder / "border.fgb").sort_values("piece").reset_index(drop=True)  # FlatGeobuf may reorder
    e = _edges(folder / "edges.npz")
    order = np.argsort(e["piece"], kind="stable")
    cuts = np.searchsorted(e["piece"][order], np.arange(1, len(b)))
    rows, cols = np.split(e["row"][order], cuts), np.split(e["col"][order], cuts)
    review = "review_sum" in b
    r1 = int(window[1]) + int(window[3])
    return [{"geoms": [g], "key": (int(fr), int(fc)), "sheet": sid, "max_r1": r1,
             "prob_sum": float(ps), "prob_count": int(pc), "prob_max": float(pm),
             "review_sum": float(rs) if review else 0.0, "review_count": int(rc) if review else 0,
             "rows": rr, "cols": cc}
            for g, fr, fc, ps, pc, pm, rs, rc, rr, cc in zip(
                b.geometry, b["first_row"], b["first_col"], b["prob_sum"], b["prob_count"], b["prob_max"],
                b["review_sum"] if review else b["prob_sum"], b["review_count"] if review else b["prob_count"],
                rows, cols)]


def _join(comps: list[dict]) -> dict:
    """One component of linked components: pieces in the order they were opened, statistics
    added, the first pixel (and its sheet) the smallest."""
    if len(comps) == 1:
        return comps[0]
    first = min(comps, key=lambda c: c["key"])
    return {"geoms": [g for c in comps for g in c["geoms"]], "key": first["key"], "sheet": first["sheet"],
            "max_r1": max(c["max_r1"] for c in comps),
            "prob_sum": sum(c["prob_sum"] for c in comps), "prob_count": sum(c["prob_count"] for c in comps),
            "prob_max": max(c["prob_max"] for c in comps), "review_sum": sum(c["review_sum"] for c in comps),
            "review_count": sum(c["review_count"] for c in comps),
            "rows": np.concatenate([c["rows"] for c in comps]), "cols": np.concatenate([c["cols"] for c in comps])}


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
    """The merged layer in bands of at most :data:`BAND_ROWS` rows, each a GeoDataFrame
    sorted by first pixel with first_row, first_col, area_m2, mean_prob, max_prob, [review],
    sheet.

    A sweep down the area: rows are written once every sheet starting above them is open and
    no open border component starts above them; otherwise the next row of sheets is opened.

    Args:
        done: ``(sheet id, folder, window)`` of the finished sheets; window = (col, row,
            width, height) in the area's pixels.
    """
    import pandas as pd

    groups: dict[int, list] = {}
    for item in sorted(done, key=lambda d: (int(d[2][1]), int(d[2][0]))):
        groups.setdefault(int(item[2][1]), []).append(item)
    starts = sorted(groups)
    joiner, streams = _Joiner(ctx), []
    height, crs, row, k = int(ctx.area[1]), area_grid(ctx).crs_string, 0, 0
    while row < height:
        limit = min(starts[k] if k < len(starts) else np.inf, joiner.open_row(), height)
        if limit <= row:  # open the next row of sheets
            group = groups[starts[k]]
            k += 1
            streams += [_Finals(sid, folder / "final.fgb", crs) for sid, folder, _w in group]
            joiner.add(group)
            joiner.close(starts[k] if k < len(starts) else np.inf)
            continue
        while row < limit:
            row1 = int(min(row + BAND_ROWS, limit))
            parts = [p for s in streams for p in s.take(row1)] + joiner.take(row1)
            streams = [s for s in streams if not s.exhausted]
            if parts:
                band = pd.concat(parts, ignore_index=True)
                yield band.sort_values(["first_row", "first_col"], kind="stable").reset_index(drop=True)
            row = row1


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

    with staged_file(target, overwrite, inputs) as path:
        return write_merged(ctx, done, Path(path))


def write_merged(ctx: RunContext, done: Sequence[tuple], path: Path) -> Counter:
    """Write the merged layer to ``path`` (a staged file, see :mod:`engine.outputs`) band by
    band; polygons per sheet id. On an error the writer is aborted (the staging removes
    what is left)."""
    from ..vector.io import VectorWriter

    crs = area_grid(ctx).crs_string
    has_review = _has_review(done)
    counts: Counter = Counter()
    writer = None
    try:
        for band in _numbered(merged_bands(ctx, done), has_review, crs):
            if writer is None:
                writer = VectorWriter(path, band.crs.to_wkt() if band.crs is not None else None)
            writer.write(band)
            counts.update(band["sheet"].tolist())
        if writer is None:  # an empty layer that still has the fields, ``sheet`` included
            _write_empty(_empty(crs, has_review), path)
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

