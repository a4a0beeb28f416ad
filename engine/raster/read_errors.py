"""GDAL read failures -> one line naming the user's file.

A raster that opens fine can still fail while its pixels are read: a GeoTIFF cut short
or damaged in a late tile fails only when that tile is decoded. rasterio then raises
``RasterioIOError("Read failed. See previous exception for details.")`` chained to
GDAL's own errors (``CPLE_*``); :func:`gdal_message` digs out GDAL's most specific
line and :func:`reading` turns the failure into a :class:`~engine.errors.UserError`::

    with reading(path, "cols 0-511, rows 384-511"):
        data = dataset.read(1, window=window)
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

from ..errors import UserError

__all__ = ["gdal_message", "reading", "window_text"]

_MAX = 200  # characters of GDAL's message kept in the one line


def _read_error_types() -> tuple[type, ...]:
    from rasterio.errors import RasterioError

    types: list[type] = [RasterioError]
    try:
        from rasterio._err import CPLE_BaseError  # GDAL's errors; not re-exported by rasterio.errors

        types.append(CPLE_BaseError)
    except ImportError:  # pragma: no cover - other rasterio versions
        pass
    return tuple(types)


def gdal_message(exc: BaseException) -> str:
    """The most specific line of a (chained) GDAL/rasterio error.

    rasterio's own message ("Read failed. See previous exception for details.") says
    nothing; the deepest cause is GDAL's codec or I/O message (e.g. "TIFFFillTile:Read
    error at row 384, col 384, tile 12; got 32733 bytes, expected 41172").
    """
    lines = []
    seen: set[int] = set()
    cur: Optional[BaseException] = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = str(cur).strip()
        if text and "see previous exception" not in text.lower():
            lines.append(text.splitlines()[0])
        cur = cur.__cause__ or cur.__context__
    if not lines:
        return type(exc).__name__
    return lines[-1][:_MAX]


def window_text(col_off: int, row_off: int, width: int, height: int) -> str:
    """``"cols 0-127, rows 384-511"`` (inclusive pixel ranges)."""
    return f"cols {col_off}-{col_off + width - 1}, rows {row_off}-{row_off + height - 1}"


@contextlib.contextmanager
def reading(path: str | os.PathLike, where: str = "") -> Iterator[None]:
    """Turn a rasterio/GDAL error raised inside the block into one :class:`UserError`
    line: ``"PATH: cannot read WHERE (the file may be truncated or damaged): GDAL's message"``.
    """
    try:
        yield
    except UserError:
        raise
    except _read_error_types() as exc:
        what = f" {where}" if where else ""
        raise UserError(f"{path}: cannot read{what} (the file may be truncated or damaged): "
                        f"{gdal_message(exc)}") from exc
