"""Merge the finished sheets into one change layer equal to a single ``detect`` on the mosaic.

Border pieces whose edge pixels are 4-neighbours across a sheet edge belong to one
component (the rule of :mod:`engine.vector.strips` for strips); they are unioned, their
statistics added, then min-area, simplify and georeferencing are applied once. All
polygons are numbered in raster-scan order of their first pixel (as ``detect`` does) and
carry ``sheet``: the id of the sheet holding that pixel.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .job import area_grid, finalize
from .plan import RunContext

__all__ = ["merge_polygons", "link_pieces", "write_merged"]


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


def _groups(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _read(path: Path):
    import pyogrio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pyogrio.read_dataframe(path)


def merge_polygons(ctx: RunContext, done: Sequence[tuple[str, Path]]):
    """The merged layer of the done sheets ``(id, folder)`` as a GeoDataFrame with
    ``id, area_m2, mean_prob, max_prob, [review,] sheet`` (ids in raster-scan order;
    ``review`` when the sheets have a review score)."""
    import geopandas as gpd
    import pandas as pd

    from ..vector.strips import merge_pieces

    grid = area_grid(ctx)
    finals, borders, edges = [], [], []
    offset = 0
    for sid, folder in done:
        if (folder / "final.fgb").exists():
            f = _read(folder / "final.fgb")
            f["sheet"] = sid
            finals.append(f)
        if (folder / "border.fgb").exists():
            b = _read(folder / "border.fgb").sort_values("piece").reset_index(drop=True)  # FlatGeobuf may reorder
            b["sheet"] = sid
            borders.append(b)
            e = np.load(folder / "edges.npz")
            edges.append((e["piece"] + offset, e["row"], e["col"]))
            offset += len(b)
    rows = []
    if borders:
        border = pd.concat(borders, ignore_index=True)
        piece = np.concatenate([e[0] for e in edges])
        links = link_pieces(piece, np.concatenate([e[1] for e in edges]), np.concatenate([e[2] for e in edges]),
                            ctx.area[0])
        geoms, meta = [], []
        for members in _groups(len(border), links):
            sub = border.iloc[members]
            pieces = list(sub.geometry)
            geoms.append(pieces[0] if len(pieces) == 1 else merge_pieces(pieces))
            first = sub.sort_values(["first_row", "first_col"]).iloc[0]
            count = int(sub.prob_count.sum())
            rcount = int(sub.review_count.sum()) if "review_count" in sub else 0
            meta.append((int(first.first_row), int(first.first_col), first.sheet,
                         float(sub.prob_sum.sum()) / count if count else np.nan,
                         float(sub.prob_max.max()) if count else np.nan,
                         float(sub.review_sum.sum()) / rcount if rcount else np.nan))
        keep, mgeoms, areas = finalize(grid, np.array(geoms, dtype=object), ctx.plan.min_area, ctx.plan.simplify)
        meta = [m for m, k in zip(meta, keep) if k]
        rows.append(gpd.GeoDataFrame(
            {"first_row": [m[0] for m in meta], "first_col": [m[1] for m in meta], "area_m2": areas,
             "mean_prob": [m[3] for m in meta], "max_prob": [m[4] for m in meta], "sheet": [m[2] for m in meta],
             "review": [m[5] for m in meta]},
            geometry=gpd.GeoSeries(mgeoms, crs=grid.crs_string), crs=grid.crs_string))
    rows.extend(f.set_crs(grid.crs_string, allow_override=True) if grid.crs_string else f for f in finals)
    cols = ["id", "area_m2", "mean_prob", "max_prob", "sheet"]
    has_review = any("review" in f for f in finals) or any("review_sum" in b for b in borders)
    if has_review:  # the mean review score over each polygon's pixels (see engine.vector.review_areas)
        cols.insert(4, "review")
    if not rows:
        empty = {"id": np.empty(0, np.int64), "area_m2": np.empty(0), "mean_prob": np.empty(0),
                 "max_prob": np.empty(0), "sheet": np.empty(0, dtype=object)}
        return gpd.GeoDataFrame(empty, geometry=gpd.GeoSeries([], crs=grid.crs_string), crs=grid.crs_string)
    merged = pd.concat(rows, ignore_index=True).sort_values(["first_row", "first_col"], kind="stable")
    merged = merged.reset_index(drop=True)
    merged["id"] = np.arange(1, len(merged) + 1, dtype=np.int64)
    merged["sheet"] = merged["sheet"].astype(str)
    return gpd.GeoDataFrame(merged[cols + ["geometry"]], geometry="geometry", crs=grid.crs_string)


def write_merged(frame, target: Path, overwrite: bool, inputs: Sequence = ()) -> None:
    """Write the merged layer to ``target`` safely (staged, renamed into place)."""
    from ..outputs import staged_file
    from ..vector.io import VectorWriter

    with staged_file(target, overwrite, inputs) as path:
        if len(frame) == 0:  # an empty layer that still has the fields, ``sheet`` included
            _write_empty(frame, Path(path))
            return
        writer = VectorWriter(path, frame.crs.to_wkt() if frame.crs is not None else None)
        try:
            writer.write(frame)
            writer.close()
        except BaseException:
            writer.abort()
            raise


def _write_empty(frame, path: Path) -> None:
    import pyogrio

    from ..vector.io import layer_name, vector_driver

    driver = vector_driver(path)
    frame = frame.astype({"sheet": str})
    with warnings.catch_warnings():  # the layer is named after the user's file, as VectorWriter does
        warnings.simplefilter("ignore")
        pyogrio.write_dataframe(frame, path, layer=None if driver == "ESRI Shapefile" else layer_name(path), driver=driver,
                                geometry_type="Polygon")

