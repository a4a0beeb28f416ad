"""Vector output formats: the supported extensions, their GDAL drivers and the files
(sidecars) each consists of. Names only, no file access: the lowest floor of vector
output, used by :mod:`engine.outputs` (which files an output touches) and
:mod:`engine.vector.io` (writing and moving them).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from ..errors import UserError

__all__ = ["SUPPORTED_VECTOR_EXTENSIONS", "check_vector_path", "vector_driver", "vector_sidecars"]

PathLike = Union[str, os.PathLike]

SUPPORTED_VECTOR_EXTENSIONS = (".shp", ".gpkg", ".fgb", ".geojson")

_DRIVERS = {".shp": "ESRI Shapefile", ".gpkg": "GPKG", ".fgb": "FlatGeobuf", ".geojson": "GeoJSON"}

# Files a vector output consists of, besides the main one (suffixes replace the main one's).
_SIDECARS = {
    ".shp": (".shx", ".dbf", ".prj", ".cpg"),
    ".gpkg": (".gpkg-wal", ".gpkg-shm"),
    ".fgb": (),
    ".geojson": (),
}


def check_vector_path(path: PathLike) -> None:
    """Raise :class:`UserError` unless ``path`` ends with a supported vector extension.

    Only the name is checked (no file access), so the CLI can call it before any work.
    """
    suffix = Path(path).suffix
    if suffix.lower() not in SUPPORTED_VECTOR_EXTENSIONS:
        raise UserError(
            f"{path}: unsupported vector format '{suffix}' (use {', '.join(SUPPORTED_VECTOR_EXTENSIONS)})"
        )


def vector_driver(path: PathLike) -> str:
    """The GDAL/OGR driver name for ``path``'s extension (raises UserError if unsupported)."""
    check_vector_path(path)
    return _DRIVERS[Path(path).suffix.lower()]


def vector_sidecars(path: PathLike) -> list[Path]:
    """All files the vector dataset ``path`` may consist of, the main file first.

    Existing or not: ``x.shp`` gives ``x.shp, x.shx, x.dbf, x.prj, x.cpg``; ``x.gpkg``
    gives ``x.gpkg`` and its SQLite journal files; ``.fgb`` and ``.geojson`` are one file.
    The extra files take the main extension's letter case (``X.SHP`` → ``X.SHX``).
    """
    path = Path(path)
    check_vector_path(path)
    suffix = path.suffix
    extras = _SIDECARS[suffix.lower()]
    if suffix.isupper():
        extras = tuple(e.upper() for e in extras)
    return [path] + [path.with_suffix(e) for e in extras]
