"""The mosaic of one date: a GDAL VRT placing every sheet's raster on one pixel grid.

The sheets of a date must share CRS, pixel size and pixel grid (whole-pixel offsets),
band count and data type, and must not overlap: what an agency's sheet series is. Holes
(a missing or failed sheet) read as nodata through the VRT's mask band, which takes each
sheet's own mask (nodata value, alpha, internal mask), so a hole never looks like data.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence
from xml.sax.saxutils import escape

import numpy as np

from ..errors import UserError

__all__ = ["SheetRaster", "probe_rasters", "agreeing", "write_mosaic", "MosaicGrid", "blame_sheet"]

_EPS = 1e-6


@dataclass(frozen=True)
class SheetRaster:
    """Header of one sheet's raster: size, georeferencing, bands (no pixels read)."""

    id: str
    path: str
    width: int
    height: int
    transform: tuple  # affine a, b, c, d, e, f
    crs: Optional[str]
    count: int
    dtypes: tuple
    nodata: Optional[float]
    block: tuple  # (rows, cols)


def probe_rasters(items: Sequence[tuple[str, str]]) -> tuple[list[SheetRaster], dict[str, str]]:
    """Open each ``(sheet id, path)`` header; returns (readable, {id: why not})."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    good, bad = [], {}
    for sid, path in items:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as ds:
                    good.append(SheetRaster(sid, str(path), ds.width, ds.height, tuple(ds.transform)[:6],
                                            ds.crs.to_wkt() if ds.crs else None, ds.count, tuple(ds.dtypes),
                                            ds.nodata, tuple(ds.block_shapes[0])))
        except Exception as exc:  # any unreadable file fails its sheet alone
            bad[sid] = f"{path}: not a raster GDAL can read ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})"
    return good, bad


@dataclass(frozen=True)
class MosaicGrid:
    """Pixel grid of a mosaic: ``transform`` (a, b, c, d, e, f) of its top-left pixel."""

    width: int
    height: int
    transform: tuple
    crs: Optional[str]

    def offset(self, r: SheetRaster) -> tuple[int, int]:
        """(col, row) of the sheet raster's top-left pixel in the mosaic."""
        a, _, c, _, e, f = self.transform
        return int(round((r.transform[2] - c) / a)), int(round((r.transform[5] - f) / e))


def _signature(r: SheetRaster) -> tuple:
    """What the sheets of one date must share: CRS, pixel size, rotation, bands, data types."""
    a, b, _c, d, e, _f = r.transform
    return r.crs, round(a, 9), round(e, 9), bool(b or d), r.count, r.dtypes


def _difference(r: SheetRaster, ref: SheetRaster) -> str:
    if r.crs != ref.crs:
        return "no CRS" if r.crs is None else "another CRS"
    if (r.transform[1] or r.transform[3]) and not (ref.transform[1] or ref.transform[3]):
        return "a rotated grid"
    if r.count != ref.count or r.dtypes != ref.dtypes:
        return f"{r.count} bands of {r.dtypes[0]}"
    return f"pixel size {r.transform[0]:g} x {-r.transform[4]:g}"


def agreeing(rasters: Sequence[SheetRaster], date: str) -> tuple[list[SheetRaster], dict[str, str]]:
    """The sheets that agree with most sheets of the date (CRS, pixel size, pixel grid, bands),
    and ``{id: why}`` for the others, which fail alone: a truncated or damaged file (that
    GDAL still opens without its georeferencing, say) is named itself, never a healthy
    neighbour. A tie goes to the sheet listed first."""
    if not rasters:
        return [], {}
    counts: dict[tuple, int] = {}
    for r in rasters:
        counts[_signature(r)] = counts.get(_signature(r), 0) + 1
    best = max(counts.values())
    ref = next(r for r in rasters if counts[_signature(r)] == best)
    good, odd = [], {}
    for r in rasters:
        if _signature(r) != _signature(ref):
            odd[r.id] = (f"{r.path}: {_difference(r, ref)}, unlike the other {date} sheets (e.g. {ref.path}); "
                         "a damaged file, or not of this sheet series")
            continue
        col, row = (r.transform[2] - ref.transform[2]) / ref.transform[0], (r.transform[5] - ref.transform[5]) / ref.transform[4]
        if abs(col - round(col)) > _EPS or abs(row - round(row)) > _EPS:
            odd[r.id] = f"{r.path}: not on the pixel grid of the other {date} sheets (offset {col:g}, {row:g} px from {ref.path})"
            continue
        good.append(r)
    return good, odd


def _grid(rasters: Sequence[SheetRaster], date: str) -> MosaicGrid:
    first = rasters[0]
    a, b, c, d, e, f = first.transform
    if b or d:
        raise UserError(f"{first.path}: rotated rasters cannot be mosaicked ({date} date)")
    for r in rasters[1:]:
        if r.crs != first.crs:
            raise UserError(f"{r.path}: CRS differs from {first.path}'s (the {date} sheets must share one CRS)")
        ra, rb, rc, rd, re, rf = r.transform
        if abs(ra - a) > 1e-9 * abs(a) or abs(re - e) > 1e-9 * abs(e) or rb or rd:
            raise UserError(f"{r.path}: pixel size differs from {first.path}'s (the {date} sheets must share one)")
        col, row = (rc - c) / a, (rf - f) / e
        if abs(col - round(col)) > _EPS or abs(row - round(row)) > _EPS:
            raise UserError(f"{r.path}: not on {first.path}'s pixel grid (offset {col:g}, {row:g} px)")
        if r.count != first.count or r.dtypes != first.dtypes:
            raise UserError(f"{r.path}: {r.count} bands of {r.dtypes[0]} differ from {first.path}'s "
                            f"{first.count} of {first.dtypes[0]} (the {date} sheets must agree)")
    cols = [(r.transform[2] - c) / a for r in rasters]
    rows = [(r.transform[5] - f) / e for r in rasters]
    c0, r0 = min(round(v) for v in cols), min(round(v) for v in rows)
    c1 = max(round(v) + r.width for v, r in zip(cols, rasters))
    r1 = max(round(v) + r.height for v, r in zip(rows, rasters))
    grid = MosaicGrid(int(c1 - c0), int(r1 - r0), (a, 0.0, c + c0 * a, 0.0, e, f + r0 * e), first.crs)
    _check_overlaps(rasters, grid, date)
    return grid


def _check_overlaps(rasters: Sequence[SheetRaster], grid: MosaicGrid, date: str) -> None:
    """Refuse sheets sharing a pixel (sorted by left edge: each is compared only with those
    starting left of its right edge, a few for a sheet grid)."""
    boxes = np.array([grid.offset(r) + (r.width, r.height) for r in rasters], dtype=np.int64)
    order = np.argsort(boxes[:, 0], kind="stable")
    x0, y0 = boxes[order, 0], boxes[order, 1]
    x1, y1 = x0 + boxes[order, 2], y0 + boxes[order, 3]
    for i in range(len(order) - 1):
        end = int(np.searchsorted(x0, x1[i], side="left"))  # sheets starting before this one ends
        cand = slice(i + 1, max(i + 1, end))
        hit = (y0[cand] < y1[i]) & (y0[i] < y1[cand]) & (x0[i] < x1[cand])
        if hit.any():
            a, b = order[i], order[i + 1 + int(np.flatnonzero(hit)[0])]
            first, second = (a, b) if a < b else (b, a)
            raise UserError(f"{rasters[second].path}: overlaps {rasters[first].path} (the {date} sheets must not overlap)")


def write_mosaic(rasters: Sequence[SheetRaster], path: Path, date: str, nodata: Optional[float] = None) -> MosaicGrid:
    """Write the VRT mosaic of ``rasters`` (all bands) to ``path``; returns its grid.

    Holes are masked by a mask band built from the sheets' own masks, or, with
    ``nodata``, filled with that value (declared as the bands' nodata)."""
    if not rasters:
        raise UserError(f"no readable {date} raster: nothing to mosaic")
    grid = _grid(rasters, date)
    dtype = _gdal_type(rasters[0].dtypes[0])
    lines = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">']
    if grid.crs:
        lines.append(f"  <SRS>{escape(grid.crs)}</SRS>")
    lines.append("  <GeoTransform>" + ", ".join(repr(float(v)) for v in _gdal_transform(grid.transform))
                 + "</GeoTransform>")
    for band in range(1, rasters[0].count + 1):
        lines.append(f'  <VRTRasterBand dataType="{dtype}" band="{band}">')
        if nodata is not None:
            lines.append(f"    <NoDataValue>{nodata!r}</NoDataValue>")
        lines += [_source(r, grid, str(band), "SimpleSource") for r in rasters]
        lines.append("  </VRTRasterBand>")
    if nodata is not None:
        lines.append("</VRTDataset>")
        return _write(lines, path, grid)
    lines.append("  <MaskBand>")
    lines.append('    <VRTRasterBand dataType="Byte">')
    lines += ["  " + _source(r, grid, "mask,1", "SimpleSource") for r in rasters]
    lines.append("    </VRTRasterBand>")
    lines.append("  </MaskBand>")
    lines.append("</VRTDataset>")
    return _write(lines, path, grid)


def _write(lines: list[str], path: Path, grid: MosaicGrid) -> MosaicGrid:
    from ..outputs import staged_file, staging_of

    text = "\n".join(lines) + "\n"
    if staging_of(path) is not None:  # already a private staged file (a user's output being built)
        Path(path).write_text(text, encoding="utf-8")
        return grid
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return grid  # unchanged: a resumed run's mosaic stays as it was
    with staged_file(path, overwrite=True) as staged:  # exclusive private temporary, renamed into place
        Path(staged).write_text(text, encoding="utf-8")
    return grid


def _source(r: SheetRaster, grid: MosaicGrid, band: str, kind: str) -> str:
    col, row = grid.offset(r)
    bh, bw = r.block
    return (f'    <{kind}><SourceFilename relativeToVRT="0">{escape(os.path.abspath(r.path))}</SourceFilename>'
            f'<SourceBand>{band}</SourceBand>'
            f'<SourceProperties RasterXSize="{r.width}" RasterYSize="{r.height}" DataType="{_gdal_type(r.dtypes[0])}" '
            f'BlockXSize="{bw}" BlockYSize="{bh}"/>'
            f'<SrcRect xOff="0" yOff="0" xSize="{r.width}" ySize="{r.height}"/>'
            f'<DstRect xOff="{col}" yOff="{row}" xSize="{r.width}" ySize="{r.height}"/></{kind}>')


def _gdal_transform(t: tuple) -> tuple:
    a, b, c, d, e, f = t
    return (c, a, b, f, d, e)


_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
          "int32": "Int32", "float32": "Float32", "float64": "Float64", "int64": "Int64", "uint64": "UInt64"}


def _gdal_type(dtype: str) -> str:
    if dtype not in _TYPES:
        raise UserError(f"data type {dtype}: not supported in a sheet mosaic")
    return _TYPES[dtype]


def window_of(r: SheetRaster, grid: MosaicGrid) -> tuple[int, int, int, int]:
    """(col, row, width, height) of the sheet in the mosaic."""
    col, row = grid.offset(r)
    return col, row, r.width, r.height



# ----------------------------------------------------------------------------- read errors

_SOURCE = re.compile(r'<SourceFilename relativeToVRT="0">([^<]*)</SourceFilename>.*?'
                     r'<DstRect xOff="(-?\d+)" yOff="(-?\d+)" xSize="(\d+)" ySize="(\d+)"/>')
_WINDOW = re.compile(r"cols (\d+)-(\d+), rows (\d+)-(\d+)")


def _sources(vrt: str) -> list[tuple[str, int, int, int, int]]:
    """(path, col, row, width, height) of each sheet raster in a mosaic written by :func:`write_mosaic`."""
    from xml.sax.saxutils import unescape

    text = Path(vrt).read_text(encoding="utf-8")
    band = text.split("</VRTRasterBand>")[0]  # the first band lists every sheet once
    return [(unescape(m.group(1)), *(int(v) for v in m.groups()[1:])) for m in _SOURCE.finditer(band)]


def _vrt_box(message: str, vrt: str, before_vrt: str) -> Optional[tuple[float, float, float, float]]:
    """The failed read's window as (col0, row0, col1, row1) pixels of ``vrt`` (a window of
    the before's grid, for a resampled after, is mapped through map coordinates)."""
    import rasterio
    from rasterio.warp import transform_bounds

    m = _WINDOW.search(message)
    if m is None:
        return None
    c0, c1, r0, r1 = (int(v) for v in m.groups())
    if "(resampled onto the before's grid)" not in message:
        return c0, r0, c1 + 1, r1 + 1
    with rasterio.open(before_vrt) as b, rasterio.open(vrt) as a:
        x0, y1 = b.transform * (c0 - 1, r0 - 1)  # a pixel more: the resampling kernel
        x1, y0 = b.transform * (c1 + 2, r1 + 2)
        if a.crs and b.crs and a.crs != b.crs:
            x0, y0, x1, y1 = transform_bounds(b.crs, a.crs, min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        (ca, ra), (cb, rb) = ~a.transform * (x0, y1), ~a.transform * (x1, y0)
    return min(ca, cb) - 2, min(ra, rb) - 2, max(ca, cb) + 2, max(ra, rb) + 2


def blame_sheet(exc: BaseException, before_vrt: str, after_vrt: str) -> BaseException:
    """A read failure of a mosaic (``before_vrt``/``after_vrt``) as the failure of
    the user's sheet raster behind it: each sheet of the failed window is read directly
    and the first that fails gives the one line (``"after_r1c1.tif: cannot read cols
    ..."``); ``exc`` itself when it is about something else or no sheet fails alone."""
    import rasterio
    from rasterio.windows import Window

    from ..raster.read_errors import reading, window_text

    message = str(exc)
    vrt = next((str(v) for v in (before_vrt, after_vrt) if message.startswith(f"{v}: cannot read")), None)
    if vrt is None:
        return exc
    try:
        box = _vrt_box(message, vrt, str(before_vrt))
        for path, col, row, width, height in _sources(vrt):
            if box is not None:
                w0, h0 = max(int(box[0]) - col, 0), max(int(box[1]) - row, 0)
                w1, h1 = min(int(np.ceil(box[2])) - col, width), min(int(np.ceil(box[3])) - row, height)
            else:  # no window in the message: the whole sheet
                w0, h0, w1, h1 = 0, 0, width, height
            if w1 <= w0 or h1 <= h0:
                continue
            win = Window(w0, h0, w1 - w0, h1 - h0)
            with rasterio.open(path) as ds, reading(path, window_text(w0, h0, w1 - w0, h1 - h0)):
                ds.read(window=win)
                ds.read_masks(window=win)
    except UserError as found:
        return found
    except Exception:  # the search itself failed: keep the mosaic's message
        return exc
    return exc
