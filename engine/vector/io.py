"""Vector output files: supported formats, sidecar files, atomic moves, streamed writing.

A vector "file" may be several files on disk (a shapefile is ``.shp`` + ``.shx`` +
``.dbf`` + ``.prj`` + ``.cpg``), so moving or deleting one goes through
:func:`move_vector` / :func:`remove_vector`, which handle all of them.

:class:`VectorWriter` streams polygons into the target in batches, so a scene with
millions of polygons never sits in memory: GeoPackage and shapefile are appended to
directly; FlatGeobuf and GeoJSON (which GDAL cannot append to cheaply) are staged in a
hidden GeoPackage beside the target and converted at the end as an Arrow stream.
"""
from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import UserError, first_line
from .formats import SUPPORTED_VECTOR_EXTENSIONS, check_vector_path, vector_driver, vector_sidecars

__all__ = [
    "SUPPORTED_VECTOR_EXTENSIONS",
    "FIELDS",
    "LAYER_NAME",
    "layer_name",
    "check_vector_path",
    "vector_driver",
    "vector_sidecars",
    "temporary_vector_path",
    "move_vector",
    "remove_vector",
    "VectorWriter",
]

PathLike = Union[str, os.PathLike]

#: Attribute fields of the change polygons and their dtypes, in order.
FIELDS = {"id": "int64", "area_m2": "float64", "mean_prob": "float64", "max_prob": "float64"}

#: Layer name inside GeoPackage, FlatGeobuf and GeoJSON outputs whose file name is not known
#: (see :func:`layer_name`; a shapefile's is its file name).
LAYER_NAME = "changes"


def layer_name(path: PathLike) -> str:
    """The layer name inside the vector output ``path``: the user's file name without its
    extension (QGIS names a loaded layer after it, so a batch's results differ), also while
    ``path`` is a staged file; :data:`LAYER_NAME` for a temporary of unknown target."""
    from ..outputs import display

    shown = Path(display(path))
    return LAYER_NAME if shown.name.startswith((".", "(")) or not shown.stem else shown.stem


def temporary_vector_path(dst: PathLike) -> Path:
    """A fresh hidden path beside ``dst`` with the same extension, to write to and then
    :func:`move_vector` onto ``dst`` (e.g. ``out/.changes.1a2b3c4d.partial.shp``)."""
    dst = Path(dst)
    check_vector_path(dst)
    return dst.with_name(f".{dst.stem}.{uuid.uuid4().hex[:8]}.partial{dst.suffix}")


def move_vector(src: PathLike, dst: PathLike) -> None:
    """Rename the vector dataset ``src`` (with its sidecars) to ``dst``, replacing it.

    Both must have the same extension. Stale sidecars of an old ``dst`` that ``src``
    lacks are removed; the main file is moved last so it appears complete.
    """
    src_files, dst_files = vector_sidecars(src), vector_sidecars(dst)
    if Path(src).suffix.lower() != Path(dst).suffix.lower():
        raise ValueError(f"move_vector: {src} and {dst} have different formats")
    for s, d in list(zip(src_files, dst_files))[1:]:
        if s.exists():
            os.replace(s, d)
        else:
            d.unlink(missing_ok=True)
    os.replace(src_files[0], dst_files[0])


def remove_vector(path: PathLike) -> None:
    """Delete the vector dataset ``path`` and its sidecars; missing files are ignored
    (as is a staged path whose staging folder has ended, see :func:`engine.outputs.discard`)."""
    from ..outputs import discard

    check_vector_path(path)
    discard(path)


def empty_frame(crs: Optional[str], fields: Optional[dict] = None):
    """A GeoDataFrame with no rows and the change-polygon fields (the schema of outputs;
    ``fields``: name -> dtype, default :data:`FIELDS`)."""
    import geopandas as gpd

    data = {name: np.empty(0, dtype=dtype) for name, dtype in (fields or FIELDS).items()}
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


class VectorWriter:
    """Writes batches of change polygons to ``path`` (format by extension).

    Usage: ``w = VectorWriter(path, crs)``; ``w.write(frame)`` any number of times with
    GeoDataFrames whose columns are :data:`FIELDS` plus geometry; then ``w.close()``
    (creates a valid empty layer if nothing was written) or ``w.abort()`` (deletes
    everything written). ``path`` is replaced if it exists.

    Args:
        path: the output file (.shp, .gpkg, .fgb, .geojson).
        crs: the layer's CRS (anything pyproj accepts), or None for no CRS.
        fields: name -> dtype of the layer (default :data:`FIELDS`), for an empty layer.
    """

    def __init__(self, path: PathLike, crs: Optional[str], fields: Optional[dict] = None) -> None:
        self.path = Path(path)
        self.fields = dict(fields or FIELDS)
        self.driver = vector_driver(self.path)
        self.crs = crs
        self.layer = layer_name(self.path)
        self.count = 0
        self._started = False
        self._closed = False
        if self.driver in ("FlatGeobuf", "GeoJSON"):
            self._stage: Optional[Path] = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.gpkg")
            self._stage_driver = "GPKG"
        else:
            self._stage = None
            self._stage_driver = self.driver
        remove_vector(self.path)

    @property
    def _write_path(self) -> Path:
        return self._stage if self._stage is not None else self.path

    def _layer(self, driver: str) -> Optional[str]:
        return None if driver == "ESRI Shapefile" else self.layer

    def write(self, frame) -> None:
        """Append the rows of ``frame`` (a GeoDataFrame with :data:`FIELDS` + Polygon geometry)."""
        if len(frame) == 0:
            return
        self._write(frame, append=self._started)
        self._started = True
        self.count += len(frame)

    def _write(self, frame, append: bool) -> None:
        import pyogrio
        from pyogrio.errors import DataLayerError, DataSourceError

        try:
            with warnings.catch_warnings():  # no CRS (pixel space) is reported by the caller
                warnings.filterwarnings("ignore", message="'crs' was not provided")
                pyogrio.write_dataframe(frame, self._write_path, layer=self._layer(self._stage_driver),
                                        driver=self._stage_driver, geometry_type="Polygon", append=append,
                                        **({} if append else _creation_options(self._stage_driver)))
        except (DataSourceError, DataLayerError, OSError) as exc:
            raise _write_failed(self.path, exc) from None

    def close(self) -> None:
        """Finish the file: an empty layer if nothing was written; convert staged formats."""
        if self._closed:
            return
        try:
            if not self._started:
                self._write(empty_frame(self.crs, self.fields), append=False)
                self._started = True
            if self._stage is not None:
                self._convert_stage()
            self._verify()
        except BaseException:
            self.abort()
            raise
        finally:
            if self._stage is not None:
                remove_vector(self._stage)
        self._closed = True

    def _verify(self) -> None:
        """Read the finished file back: some drivers report a failed write (a full disk)
        only by leaving a short file."""
        import pyogrio

        try:
            features = pyogrio.read_info(self.path, layer=self._layer(self.driver))["features"]
        except Exception as exc:  # any failure to read it back means the write failed
            raise _write_failed(self.path, exc) from None
        if features not in (self.count, -1):
            raise _write_failed(self.path, OSError(f"{features} of {self.count} features were written"))

    def _convert_stage(self) -> None:
        """Stream the staging GeoPackage into the target format (no full load in memory).

        Needs pyogrio >= 0.8 with GDAL >= 3.8 (Arrow write API); older ones load the
        staged polygons at once instead.
        """
        import pyogrio
        from pyogrio.errors import DataLayerError, DataSourceError

        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="'crs' was not provided")
                if _has_arrow_write():
                    from pyogrio.raw import open_arrow, write_arrow

                    with open_arrow(self._stage, layer=self.layer, use_pyarrow=False) as (meta, reader):
                        write_arrow(reader, self.path, layer=self.layer, driver=self.driver,
                                    geometry_name=meta["geometry_name"] or "geometry", geometry_type="Polygon",
                                    crs=meta["crs"], encoding=None)
                else:
                    frame = pyogrio.read_dataframe(self._stage, layer=self.layer)
                    pyogrio.write_dataframe(frame, self.path, layer=self.layer, driver=self.driver,
                                            geometry_type="Polygon")
        except (DataSourceError, DataLayerError, OSError) as exc:
            raise _write_failed(self.path, exc) from None

    def abort(self) -> None:
        """Delete whatever was written (target and staging file)."""
        self._closed = True
        remove_vector(self.path)
        if self._stage is not None:
            remove_vector(self._stage)


def _has_arrow_write() -> bool:
    """pyogrio can stream Arrow data into GDAL (pyogrio >= 0.8, GDAL >= 3.8)."""
    try:
        from pyogrio.raw import HAS_ARROW_WRITE_API
    except ImportError:
        return False
    return bool(HAS_ARROW_WRITE_API)


def _creation_options(driver: str) -> dict:
    """Dataset creation options for a new file of ``driver``."""
    if driver == "GPKG":
        # GeoPackage 1.2: what GDAL < 3.10 (QGIS 3.22-3.34 LTS) reads without warnings;
        # GDAL >= 3.10 would write 1.4, which they report as "only partially supported".
        return {"dataset_options": {"VERSION": "1.2"}}
    return {}


def _write_failed(path: Path, exc: BaseException) -> UserError:
    """One line naming the user's output (not a staged file): disk full, or the driver's words."""
    from ..outputs import disk_full, display

    if disk_full(exc, path.parent if path.parent.exists() else None):
        return UserError(f"{display(path)}: no space left on device")
    return UserError(f"{display(path)}: cannot write ({first_line(exc)})")

