"""Dataset preparation: map sheets (before, after, labels) -> the authors' tile layout.

One *sheet* is a before raster, an after raster and change labels (a raster, or a
vector file of change polygons). Every sheet is cut into ``tile_size`` tiles on the
before's grid (the after is warped onto it when its grid differs, the vector labels are
reprojected and rasterized onto it) and written as georeferenced GeoTIFF tiles::

    OUT/train/A/NAME.tif  OUT/train/B/NAME.tif  OUT/train/label/NAME.tif  (uint8 0/255)
    OUT/train/labelled/NAME.tif                    (with a labelled area: 255 labelled, 0 not)
    OUT/train/list/train.txt                       one NAME.tif a line
    OUT/val/...  OUT/test/...
    OUT/dataset.json                               CRS, GSD, bands, sources, counts

Splits never share an area: with enough sheets whole sheets go to one split each (or the
sheets named by ``--val``/``--test`` or a ``split`` column); otherwise each sheet is cut into
horizontal bands of tile rows that are assigned to the splits, and a tile that would overlap
a tile of another split is dropped.

Partial labels (``labelled_area``, :mod:`.areas`): tiles are cut only where they meet the
area, and each gets a ``labelled`` mask; labels outside the area are 0 in the label tile
and ignored by training and evaluation. Footprints (:mod:`.footprints`): the change labels
are derived from two building-footprint layers, labelled where both layers cover.

The pure helpers (:func:`tile_origins`, :func:`assign_sheets`, :func:`assign_bands`,
:func:`parse_split`) need no files; :func:`prepare_dataset` does the I/O.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np

from ..errors import UserError
from ..events import Events
from .areas import LABELLED, Area, area_geometry, pixel_span, starts_within, tile_mask
from .footprints import DEFAULT_TOLERANCE_M, FootprintChanges, footprint_changes

__all__ = [
    "SPLITS",
    "LabelSource",
    "Sheet",
    "assign_bands",
    "assign_bands_multi",
    "assign_sheets",
    "check_output_dir",
    "parse_split",
    "prepare_dataset",
    "read_pairs",
    "sheet_names",
    "staged_output",
    "tile_origins",
]

SPLITS = ("train", "val", "test")
VECTOR_SUFFIXES = {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite", ".gdb"}


# --------------------------------------------------------------------------------------
# output folder


def check_output_dir(out: Union[str, Path], overwrite: bool, inputs: Sequence[Union[str, Path]] = ()) -> Path:
    """Refuse an output folder that exists and is not empty (unless ``overwrite``), or
    that is or contains one of ``inputs`` (by real path: ``..`` and symlinks resolved)."""
    from ..outputs import check_folder_output

    out = Path(out)
    check_folder_output(out, inputs)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: exists and is not empty (use --overwrite to replace it)")
    if not out.absolute().parent.is_dir():
        raise UserError(f"{out.absolute().parent}: output's parent folder does not exist")
    return out


@contextlib.contextmanager
def staged_output(out: Union[str, Path], overwrite: bool = False,
                  inputs: Sequence[Union[str, Path]] = ()) -> Iterator[Path]:
    """Write a folder in a private staging folder, then rename it to ``out`` in one step.

    Yields the staging folder (beside ``out``; see :func:`engine.outputs.staged_folder`).
    On success an existing ``out`` is replaced (only allowed with ``overwrite`` or when it
    is empty; a folder that appeared meanwhile is refused otherwise); on any error the
    staging folder is removed, so no half-written dataset is left behind.
    """
    from ..outputs import staged_folder

    out = check_output_dir(out, overwrite, inputs)
    with staged_folder(out, overwrite, inputs) as stage:
        yield stage


# --------------------------------------------------------------------------------------
# options and the pairs table


@dataclass
class Sheet:
    """One before/after/labels triplet (paths; labels None when derived from footprints), its
    tile-name stem, and the split it must go to ("" = chosen by the split fractions)."""

    before: Path
    after: Path
    labels: Optional[Path]
    name: str = ""
    split: str = ""


@dataclass
class LabelSource:
    """Where the labels are complete and where they come from, beyond each sheet's ``labels``.

    Attributes:
        labelled_area: the area where the labels are complete (:class:`.areas.Area`), None: everywhere.
        footprints: (before, after) building-footprint layers that give the labels of every sheet.
        tolerance_m: outline tolerance of the footprints in metres.
        gsd: metres per pixel of rasters without georeference (``--gsd``).
    """

    labelled_area: Optional[Area] = None
    footprints: Optional[tuple[Path, Path]] = None
    tolerance_m: float = DEFAULT_TOLERANCE_M
    gsd: Optional[float] = None


def parse_split(text: str) -> tuple[float, float, float]:
    """``"0.6,0.3,0.1"`` -> (train, val, test) fractions; each >= 0, train > 0, sum 1."""
    try:
        parts = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(not math.isfinite(p) or p < 0 for p in parts):
        raise UserError(f"--split {text}: expected three fractions train,val,test, e.g. 0.6,0.3,0.1")
    if abs(sum(parts) - 1) > 1e-3:
        raise UserError(f"--split {text}: the fractions must add up to 1 (they add up to {sum(parts):g})")
    if parts[0] <= 0:
        raise UserError(f"--split {text}: the train fraction must be above 0")
    return parts  # type: ignore[return-value]


def read_pairs(csv_path: Union[str, Path], labels: bool = True) -> list[Sheet]:
    """Read a sheets table: columns ``before,after,labels`` (optional ``name`` and ``split``:
    train, val, test or empty). Without ``labels`` (footprints give them) the labels column
    is not needed.

    Paths are relative to the table's folder (absolute paths work too). Each file must
    exist. Sheet names default to the before's file stem, made unique.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: file not found")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip().lower() for c in (reader.fieldnames or [])]
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{csv_path}: not a readable CSV table ({exc})") from None
    keys = ("before", "after", "labels") if labels else ("before", "after")
    missing = [c for c in keys if c not in columns]
    if missing:
        raise UserError(f"{csv_path}: missing column(s) {', '.join(missing)}; expected a header {','.join(keys)}")
    sheets = []
    for i, row in enumerate(rows, start=2):
        if not any(row.values()):
            continue
        paths: dict = {"labels": None}
        for key in keys:
            if not row.get(key):
                raise UserError(f"{csv_path}: line {i}: empty {key} path")
            p = Path(row[key])
            paths[key] = p if p.is_absolute() else csv_path.parent / p
        split = row.get("split", "").lower()
        if split not in ("",) + SPLITS:
            raise UserError(f"{csv_path}: line {i}: split {row['split']!r}: expected train, val, test or empty")
        sheets.append(Sheet(paths["before"], paths["after"], paths["labels"], row.get("name", ""), split))
    if not sheets:
        raise UserError(f"{csv_path}: no sheets listed (expected rows before,after,labels)")
    return sheets


def sheet_names(sheets: Sequence[Sheet]) -> list[str]:
    """The names :func:`prepare_dataset` gives the sheets (the ``name`` column, else the before's
    file stem less a ``_before``-like suffix; made unique); also the tiles' name stems."""
    names, seen = [], {}
    for s in sheets:
        stem = s.name or s.before.stem
        for suffix in ("_before", "-before", "_A", "_t1"):
            if not s.name and stem.endswith(suffix) and len(stem) > len(suffix):
                stem = stem[: -len(suffix)]
        base = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem) or "sheet"
        n = seen.get(base, 0)
        seen[base] = n + 1
        names.append(base if n == 0 else f"{base}_{n + 1}")
    return names


# --------------------------------------------------------------------------------------
# pure helpers: tile grid and split assignment


def tile_origins(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets (px) of tiles along one axis covering ``[0, length)``.

    Tiles start every ``stride`` px; when the last one does not reach the end, one more
    is placed flush with the end (so the whole sheet is used). Empty when
    ``length < tile``.
    """
    if length < tile:
        return []
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _quotas(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items by ``fractions`` (largest remainder), at least one per non-zero
    fraction when ``n`` allows."""
    raw = [n * f for f in fractions]
    counts = [int(math.floor(r)) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts


def assign_sheets(tile_counts: Sequence[int], fractions: Sequence[float], seed: int) -> list[int]:
    """Assign whole sheets to splits (0 train, 1 val, 2 test), tiles close to ``fractions``.

    Sheets are taken in a seeded random order; each goes to the split furthest below
    its share of tiles. Every split with a non-zero fraction gets at least one sheet
    when there are enough sheets.
    """
    n = len(tile_counts)
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(n))
    total = float(sum(tile_counts)) or 1.0
    wanted = [i for i, f in enumerate(fractions) if f > 0]
    result = [-1] * n
    got = [0.0] * len(fractions)
    # one sheet for each split that needs one, the smallest splits first
    if n >= len(wanted):
        for split in sorted(wanted, key=lambda i: fractions[i]):
            sheet = order.pop(0)
            result[sheet] = split
            got[split] += tile_counts[sheet]
    for sheet in order:
        split = max(wanted, key=lambda i: fractions[i] * total - got[i])
        result[sheet] = split
        got[split] += tile_counts[sheet]
    return result


def assign_bands(row_starts: Sequence[int], tile: int, fractions: Sequence[float], seed: int) -> list[int]:
    """Split one sheet by rows: the split (0, 1, 2) of each tile row, or -1 to drop it.

    Same as :func:`assign_bands_multi` for a single sheet.
    """
    return assign_bands_multi([row_starts], tile, fractions, seed)[0]


def assign_bands_multi(rows_per_sheet: Sequence[Sequence[int]], tile: int, fractions: Sequence[float],
                       seed: int) -> list[list[int]]:
    """Split sheets by rows: per sheet, the split (0, 1, 2) of each tile row, or -1 to drop it.

    The tile rows of each sheet are grouped into up to ten horizontal bands (at least
    one row each). All bands of all sheets are pooled and go to the splits in a seeded
    random order, counts proportional to ``fractions`` (each non-zero split gets a band
    when there are enough). A tile row that overlaps (``|start - other| < tile``) a row
    of another split in the same sheet is dropped, so no pixel is shared between splits.
    """
    band_of = []  # per sheet, the global band index of each row
    n_bands = 0
    for rows in rows_per_sheet:
        n_rows = len(rows)
        k = min(n_rows, 10)
        band_of.append([n_bands + min(i * k // n_rows, k - 1) for i in range(n_rows)])
        n_bands += k
    quotas = _quotas(n_bands, fractions)
    labels = [s for s, q in enumerate(quotas) for _ in range(q)]
    rng = np.random.default_rng(seed)
    band_split = [labels[i] for i in rng.permutation(n_bands)]
    results = []
    for rows, bands in zip(rows_per_sheet, band_of):
        split = [band_split[b] for b in bands]
        result = list(split)
        for i in range(len(rows)):
            for j in range(i):  # earlier rows win
                if result[j] >= 0 and split[j] != split[i] and abs(rows[i] - rows[j]) < tile:
                    result[i] = -1
                    break
        results.append(result)
    return results


# --------------------------------------------------------------------------------------
# reading one sheet on the before's grid


@dataclass
class _SheetReader:
    """Opened rasters of one sheet; :meth:`read` returns one tile on the before's grid."""

    sheet: Sheet
    source: LabelSource = field(default_factory=LabelSource)
    derive: Optional[Callable[[Any], FootprintChanges]] = None  # footprints' changes in a CRS
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    notes: list = field(default_factory=list)  # warnings for the user

    def __post_init__(self) -> None:
        try:
            self._open()
        except BaseException:
            self.stack.close()
            raise

    def _open(self) -> None:
        self.before = self._open_raster(self.sheet.before, "before")
        self.after = self._open_raster(self.sheet.after, "after")
        b, a = self.before, self.after
        if a.count != b.count:
            raise UserError(f"{self.sheet.after}: {a.count} band(s), but the before has {b.count}")
        if a.dtypes[0] != b.dtypes[0]:
            raise UserError(f"{self.sheet.after}: data type {a.dtypes[0]}, but the before is {b.dtypes[0]}")
        self.after_view = self._on_before_grid(a, self.sheet.after, "bilinear")
        self._check_georeference()
        self.labels_raster = None
        self.shapes = None
        self.labels_elsewhere: Optional[str] = None  # why no label feature touches the sheet
        derived = self.derive(self.before.crs) if self.sheet.labels is None and self.derive else None
        if derived is not None:
            self._use_shapes(derived.changes.geometry, "the footprints' changes")
        elif self._is_vector(self.sheet.labels):
            self._load_vector(self.sheet.labels)
        else:
            self.labels_file = self._open_raster(self.sheet.labels, "labels")
            self.labels_raster = self._on_before_grid(self.labels_file, self.sheet.labels, "nearest")
        self.area = self._labelled_area(derived)
        self.odd_label_values: set = set()

    def _check_georeference(self) -> None:
        """A before without CRS needs ``--gsd`` (its pixel size is unknown); with one, --gsd is refused."""
        gsd = self.source.gsd
        if self.before.crs is None and not gsd:
            raise UserError(f"{self.sheet.before}: no georeference, so its ground sampling distance is unknown; "
                            "give --gsd METRES per pixel (e.g. --gsd 0.5)")
        if self.before.crs is None:
            self.notes.append(f"{self.sheet.before}: no georeference; tiles are written without one, at the "
                              f"--gsd {gsd:g} m given, and vector labels or areas are read in pixels "
                              "(x = column, y = row from the top)")
        elif gsd:
            raise UserError(f"{self.sheet.before}: georeferenced ({abs(self.before.transform.a):g} units per pixel "
                            f"in {self.before.crs.to_string()}); --gsd is only for rasters without georeference")

    def _labelled_area(self, derived: Optional[FootprintChanges]):
        """The labelled area on this sheet (a geometry in the before's CRS), None: all labelled.

        ``--labelled-area`` when given, else the footprints' common extent."""
        from shapely.geometry import box

        if self.source.labelled_area is not None:
            area = area_geometry(self.source.labelled_area, self.before.crs, self.sheet.name)
            where = f"--labelled-area {self.source.labelled_area.text}"
        elif derived is not None:
            area = derived.common
            where = "the footprint layers' common extent"
            if area is None:
                raise UserError(f"{self.source.footprints[0]}: does not overlap {self.source.footprints[1]}, so no "
                                "area is labelled by both dates")
        else:
            return None
        sheet_box = box(*self.before.bounds)
        if area.is_empty or not area.intersection(sheet_box).area > 0:
            self.notes.append(f"{where}: does not meet sheet {self.sheet.name}; no tile is cut from it")
        return area

    # -- opening --
    def _open_raster(self, path: Path, role: str):
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        if not path.exists():
            raise UserError(f"{path}: file not found ({role})")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                ds = rasterio.open(path)
        except RasterioIOError:
            raise UserError(f"{path}: not a raster GDAL can read ({role})") from None
        self.stack.enter_context(ds)
        return ds

    @staticmethod
    def _is_vector(path: Path) -> bool:
        if not path.exists():
            raise UserError(f"{path}: file not found (labels)")
        if path.suffix.lower() in VECTOR_SUFFIXES or path.is_dir():
            return True
        import rasterio
        from rasterio.errors import RasterioIOError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with rasterio.open(path):
                    return False
        except RasterioIOError:
            return True

    def _on_before_grid(self, ds, path: Path, resampling: str):
        """``ds`` itself when it shares the before's grid, else a WarpedVRT onto it."""
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        b = self.before
        same_size = (ds.width, ds.height) == (b.width, b.height)
        if ds.crs is None or b.crs is None:
            if ds.crs is None and b.crs is None and same_size:
                return ds
            if same_size and ds.crs is None and ds.transform.is_identity:
                self.notes.append(f"{path}: no georeference; assumed to be on the before's grid (same size)")
                return ds
            if ds.crs is None:
                raise UserError(f"{path}: {ds.width}x{ds.height} px without georeference, so it cannot be matched "
                                f"to the before {self.sheet.before.name} ({b.width}x{b.height} px)")
            raise UserError(f"{self.sheet.before}: no georeference, so {path.name} ({ds.width}x{ds.height} px) "
                            f"cannot be matched to it ({b.width}x{b.height} px)")
        if ds.crs == b.crs and ds.transform.almost_equals(b.transform) and same_size:
            return ds
        # must overlap the before
        from rasterio.warp import transform_bounds

        left, bottom, right, top = transform_bounds(ds.crs, b.crs, *ds.bounds)
        bl, bb, br, bt = b.bounds
        if left >= br or right <= bl or bottom >= bt or top <= bb:
            raise UserError(f"{path}: does not overlap the before raster {self.sheet.before.name}")
        # outside the source: nodata where it has one, else an alpha band (read_masks sees it)
        vrt = WarpedVRT(ds, crs=b.crs, transform=b.transform, width=b.width, height=b.height,
                        resampling=getattr(Resampling, resampling), nodata=ds.nodata,
                        add_alpha=ds.nodata is None)
        self.stack.enter_context(vrt)
        return vrt

    def _load_vector(self, path: Path) -> None:
        import geopandas as gpd

        try:
            gdf = gpd.read_file(path)
        except Exception as exc:  # pyogrio raises several error types for unreadable files
            raise UserError(f"{path}: not a raster or vector file GDAL can read ({str(exc).splitlines()[0]})") from None
        if len(gdf) and gdf.crs is None and self.before.crs is not None:
            raise UserError(f"{path}: the vector labels have no CRS (add a .prj or save them with one)")
        if self.before.crs is None and gdf.crs is not None:
            raise UserError(f"{self.sheet.before}: has no CRS, so vector labels with one cannot be placed on it "
                            "(give them in pixels, without a CRS)")
        gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
        if len(gdf) and self.before.crs is not None:
            gdf = gdf.to_crs(self.before.crs)
        if len(gdf):
            kinds = gdf.geometry.geom_type
            polys = kinds.isin(["Polygon", "MultiPolygon"])
            if not polys.all():
                self.notes.append(f"{path}: {int((~polys).sum())} non-polygon feature(s) ignored")
            gdf = gdf[polys]
        if len(gdf) == 0:
            self.notes.append(f"{path}: no change polygons; every tile is labelled no change")
        self._use_shapes(gdf.geometry, str(path))

    def _use_shapes(self, geometry, what: str) -> None:
        """Change polygons (a GeoSeries in the before's CRS) to rasterize tile by tile."""
        self.shapes = geometry.reset_index(drop=True)
        self.sindex = self.shapes.sindex if len(self.shapes) else None
        self.labels_elsewhere = self._elsewhere(what)

    def _elsewhere(self, path: Union[str, Path]) -> Optional[str]:
        """One line with both extents (the before's CRS) when there are change polygons but
        none touches the sheet (a wrong file or CRS); None otherwise."""
        from shapely.geometry import box

        if not len(self.shapes) or self.shapes.intersects(box(*self.before.bounds)).any():
            return None
        return (f"{path}: no label feature touches the sheet {self.sheet.before.name}: labels extent "
                f"{_extent_text(self.shapes.total_bounds)}, raster extent {_extent_text(self.before.bounds)} "
                f"({self.before.crs.to_string() if self.before.crs else 'pixels'}); wrong file, or wrong CRS in the labels?")

    @property
    def may_have_change(self) -> bool:
        """False when the labels are vector polygons and none touches the sheet (a raster's
        values are not known before its tiles are read)."""
        return self.labels_raster is not None or bool(len(self.shapes)) and self.labels_elsewhere is None

    # -- reading --
    def labelled(self, row: int, col: int, size: int) -> Optional[np.ndarray]:
        """(size, size) bool: the tile's pixels inside the labelled area; None without an area."""
        from rasterio.windows import Window
        from rasterio.windows import transform as win_transform

        if self.area is None:
            return None
        return tile_mask(self.area, win_transform(Window(col, row, size, size), self.before.transform), size)

    def tile_span(self, rows: list[int], cols: list[int], size: int) -> tuple[list[int], list[int]]:
        """The tile rows and columns that meet the labelled area's bounds (all without an area)."""
        if self.area is None:
            return rows, cols
        span = pixel_span(self.area, self.before.transform)
        if span is None:
            return [], []
        return starts_within(rows, size, span[0], span[1]), starts_within(cols, size, span[2], span[3])

    def read(self, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Tile at (row, col) px: before, after (bands, size, size), change bool (size, size)
        and the fraction of pixels valid in both dates."""
        from rasterio.windows import Window

        from ..raster.read_errors import reading, window_text

        win = Window(col, row, size, size)
        where = window_text(col, row, size, size)
        resampled = " (resampled onto the before's grid)"
        bands = list(range(1, self.before.count + 1))
        with reading(self.sheet.before, where):
            a = self.before.read(bands, window=win)
            valid = self.before.read_masks(1, window=win) > 0
        with reading(self.sheet.after, where + (resampled if self.after_view is not self.after else "")):
            b = self.after_view.read(bands, window=win)
            valid &= self.after_view.read_masks(1, window=win) > 0
        if self.labels_raster is not None:
            with reading(self.sheet.labels, where + (resampled if self.labels_raster is not self.labels_file else "")):
                lab = self.labels_raster.read(1, window=win)
            values = np.unique(lab)
            odd = set(values.tolist()) - {0, 1, 255}
            if odd:
                self.odd_label_values |= odd
            change = lab > 0
        else:
            change = self._rasterize(win, size)
        return a, b, change, float(valid.mean())

    def _rasterize(self, win, size: int) -> np.ndarray:
        from rasterio.features import rasterize
        from rasterio.windows import bounds, transform
        from shapely.geometry import box

        if self.sindex is None:
            return np.zeros((size, size), bool)
        tile_box = box(*bounds(win, self.before.transform))
        hits = self.sindex.query(tile_box, predicate="intersects")
        if len(hits) == 0:
            return np.zeros((size, size), bool)
        out = rasterize(((g, 1) for g in self.shapes.iloc[hits]), out_shape=(size, size),
                        transform=transform(win, self.before.transform), fill=0, dtype="uint8")
        return out > 0

    def close(self) -> None:
        self.stack.close()


# --------------------------------------------------------------------------------------
# the dataset


@dataclass
class _Plan:
    """Which tile goes where: ``tiles`` holds (reader index, row, col, split index)."""

    tiles: list
    by_sheet: bool
    sheet_split: Optional[list]  # split index of each sheet when splitting by sheet
    dropped_border: int  # tiles dropped at split borders


@dataclass
class _Written:
    """What :func:`_write_tiles` wrote: counts and names per split, tiles per sheet."""

    counts: dict
    lists: dict
    per_source: list
    dropped_empty: int = 0
    dropped_nodata: int = 0
    dropped_unlabelled: int = 0


def prepare_dataset(
    sheets: Sequence[Sheet],
    out_dir: Union[str, Path],
    *,
    tile_size: int = 512,
    stride: int = 512,
    split: Sequence[float] = (0.6, 0.3, 0.1),
    seed: int = 42,
    keep_empty: float = 1.0,
    events: Optional[Events] = None,
    labels: Optional[LabelSource] = None,
) -> dict:
    """Cut ``sheets`` into tiles and write the authors' layout into ``out_dir``.

    Every sheet is opened and checked before anything is written; then the tiles are
    planned (split assignment), read and written, and the lists and ``dataset.json`` last.

    Args:
        sheets: triplets to read (paths must exist).
        out_dir: existing, empty folder written into (use :func:`staged_output`).
        tile_size: tile edge in px; stride: px between tile starts.
        split: (train, val, test) fractions.
        seed: seeds the split assignment and the ``keep_empty`` draw.
        keep_empty: fraction (0..1) of tiles without any change to keep.
        events: progress, warnings and cancel checks.
        labels: labelled area, footprint layers, ``--gsd`` (see :class:`LabelSource`); a
            sheet's ``split`` sends it whole to that split.

    Returns:
        counts per split: ``{"train": {"tiles": n, "change_pixels": n, "empty_tiles": n,
        "unlabelled_pixels": n}, ...}`` plus ``"dropped"`` (tiles dropped: empty draw,
        nodata, split borders, outside the labelled area).

    Raises:
        UserError: a bad sheet (unreadable, mismatched, labels that touch no sheet, too
            small for the tile size), or nothing left to write.
    """
    events = events or Events()
    out_dir = Path(out_dir).absolute()
    if not sheets:
        raise UserError("no sheets to prepare")
    if not 0 <= keep_empty <= 1:
        raise UserError(f"--keep-empty {keep_empty}: must be a fraction between 0 and 1")
    labels = labels or LabelSource()
    for s, name in zip(sheets, sheet_names(sheets)):
        s.name = name
    readers = _open_sheets(sheets, labels, events)
    try:
        _check_labels_touch(readers, events)
        grids = _tile_grids(readers, tile_size, stride)
        plan = _plan_tiles(grids, tile_size, split, seed, [s.split for s in sheets])
        events.start(command="prepare", sheets=len(readers), tiles=len(plan.tiles), tile_size=tile_size,
                     stride=stride, split_by="sheet" if plan.by_sheet else "region")
        written = _write_tiles(readers, plan, out_dir, tile_size, keep_empty, seed, events)
        _warn_label_values(readers, events)
        _write_lists(out_dir, written, split, events)
        meta = _dataset_meta(readers, plan, written, out_dir, tile_size=tile_size, stride=stride, split=split,
                             seed=seed, keep_empty=keep_empty, labels=labels)
        (out_dir / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    finally:
        for r in readers:
            r.close()
    return meta["counts"]


def _open_sheets(sheets: Sequence[Sheet], labels: LabelSource, events: Events) -> list[_SheetReader]:
    """Open (and so check) every sheet; pass on their notes as warnings."""
    readers: list[_SheetReader] = []
    derived: dict = {}  # the footprints' changes per CRS (WKT)

    def derive(crs) -> FootprintChanges:
        key = crs.to_wkt() if crs is not None else None
        if key not in derived:
            derived[key] = footprint_changes(*labels.footprints, crs, labels.tolerance_m, labels.gsd)
            c = derived[key].counts
            events.log(f"footprints: {c['before']} before, {c['after']} after; {c['appeared']} appeared, "
                       f"{c['vanished']} vanished (tolerance {labels.tolerance_m:g} m)")
        return derived[key]

    try:
        for s in sheets:
            readers.append(_SheetReader(s, labels, derive if labels.footprints else None))
    except BaseException:
        for r in readers:
            r.close()
        raise
    for r in readers:
        for note in r.notes:
            events.warn(note)
    return readers


def _check_labels_touch(readers: Sequence[_SheetReader], events: Events) -> None:
    """Refuse when vector labels exist but no feature of any sheet touches its sheet (an
    all "no change" dataset from a wrong file or CRS); otherwise warn per such sheet."""
    elsewhere = [r for r in readers if r.labels_elsewhere]
    if not elsewhere:
        return
    if not any(r.may_have_change for r in readers):
        raise UserError(elsewhere[0].labels_elsewhere)
    for r in elsewhere:
        events.warn(f"{r.labels_elsewhere} Every tile of sheet {r.sheet.name} is labelled no change")


def _tile_grids(readers: Sequence[_SheetReader], tile_size: int, stride: int) -> list[tuple[list[int], list[int]]]:
    """Per sheet, the (row starts, col starts) of its tiles in px; refuses a sheet smaller
    than one tile."""
    grids = []
    for r in readers:
        rows = tile_origins(r.before.height, tile_size, stride)
        cols = tile_origins(r.before.width, tile_size, stride)
        if not rows or not cols:
            raise UserError(f"{r.sheet.before}: {r.before.width}x{r.before.height} px, smaller than "
                            f"--tile-size {tile_size}")
        grids.append(r.tile_span(rows, cols, tile_size))  # only where tiles meet the labelled area
    if not any(rows and cols for rows, cols in grids):
        raise UserError("the labelled area meets no sheet: no tile to cut (is it in the rasters' CRS?)")
    return grids


def _plan_tiles(grids: Sequence[tuple[list[int], list[int]]], tile_size: int, split: Sequence[float],
                seed: int, chosen: Sequence[str] = ()) -> _Plan:
    """Whole sheets to splits when some are chosen (the others go to train) or there are enough
    sheets, else bands of tile rows."""
    chosen = list(chosen) or [""] * len(grids)
    by_sheet = any(chosen) or len(grids) >= sum(1 for f in split if f > 0)
    if any(chosen):
        sheet_split = [SPLITS.index(c) if c else 0 for c in chosen]
    else:
        sheet_split = assign_sheets([len(r) * len(c) for r, c in grids], split, seed) if by_sheet else None
    row_splits = None if by_sheet else assign_bands_multi([r for r, _ in grids], tile_size, split, seed)
    tiles, dropped_border = [], 0
    for i, (rows, cols) in enumerate(grids):
        row_split = [sheet_split[i]] * len(rows) if sheet_split is not None else row_splits[i]
        for row, sp in zip(rows, row_split):
            if sp < 0:
                dropped_border += len(cols)
                continue
            tiles.extend((i, row, col, sp) for col in cols)
    return _Plan(tiles, by_sheet, sheet_split, dropped_border)


def _write_tiles(readers: Sequence[_SheetReader], plan: _Plan, out_dir: Path, tile_size: int, keep_empty: float,
                 seed: int, events: Events) -> _Written:
    """Read and write every planned tile, dropping those with less than half valid pixels
    and (by a seeded draw) ``1 - keep_empty`` of those without change."""
    for sp in SPLITS:
        for sub in ("A", "B", "label", "list"):
            (out_dir / sp / sub).mkdir(parents=True, exist_ok=True)
    labelled_area = any(r.area is not None for r in readers)
    done = _Written({sp: {"tiles": 0, "change_pixels": 0, "empty_tiles": 0, "unlabelled_pixels": 0} for sp in SPLITS},
                    {sp: [] for sp in SPLITS}, [{sp: 0 for sp in SPLITS} for _ in readers])
    rng = np.random.default_rng(seed)
    for k, (i, row, col, sp) in enumerate(plan.tiles):
        events.check_cancel()
        r = readers[i]
        a, b, change, valid = r.read(row, col, tile_size)
        labelled = r.labelled(row, col, tile_size)
        if labelled is None and labelled_area:
            labelled = np.ones_like(change)  # a sheet without an area (pairs mixing both): all labelled
        if labelled is not None:
            change &= labelled
        keep_draw = rng.random()
        if valid < 0.5:
            done.dropped_nodata += 1
        elif labelled is not None and not labelled.any():
            done.dropped_unlabelled += 1
        elif not change.any() and keep_draw >= keep_empty:
            done.dropped_empty += 1
        else:
            split_name = SPLITS[sp]
            name = f"{r.sheet.name}_{row}_{col}.tif"
            _write_triplet(out_dir / split_name, name, r, row, col, a, b, change, labelled)
            done.lists[split_name].append(name)
            c = done.counts[split_name]
            n_change = int(change.sum())
            c["tiles"] += 1
            c["change_pixels"] += n_change
            c["empty_tiles"] += int(n_change == 0)
            c["unlabelled_pixels"] += 0 if labelled is None else int(labelled.size - labelled.sum())
            done.per_source[i][split_name] += 1
        events.progress(k + 1, len(plan.tiles), "tiles")
    return done


def _write_triplet(folder: Path, name: str, r: _SheetReader, row: int, col: int, a: np.ndarray, b: np.ndarray,
                   change: np.ndarray, labelled: Optional[np.ndarray] = None) -> None:
    """``folder/{A,B,label}/name``: the dates (bands, n, n) and the label (0/255), georeferenced
    as the tile at (row, col) px of the sheet's before; ``folder/labelled/name`` (255 labelled,
    0 not) when ``labelled`` is given."""
    from rasterio.windows import Window
    from rasterio.windows import transform as win_transform

    size = change.shape[0]
    geo = {}
    if r.before.crs is not None:
        geo = dict(crs=r.before.crs, transform=win_transform(Window(col, row, size, size), r.before.transform))
    base = dict(driver="GTiff", width=size, height=size, compress="deflate", **geo)
    img_profile = dict(base, count=a.shape[0], dtype=a.dtype)
    if a.shape[0] == 3 and a.dtype == np.uint8:
        img_profile["photometric"] = "RGB"
    if r.before.nodata is not None:
        img_profile["nodata"] = r.before.nodata
    _write_tile(folder / "A" / name, a, img_profile)
    _write_tile(folder / "B" / name, b, img_profile)
    _write_tile(folder / "label" / name, (change.astype(np.uint8) * 255)[None], dict(base, count=1, dtype="uint8"))
    if labelled is not None:
        (folder / LABELLED).mkdir(exist_ok=True)
        _write_tile(folder / LABELLED / name, (labelled.astype(np.uint8) * 255)[None], dict(base, count=1, dtype="uint8"))


def _warn_label_values(readers: Sequence[_SheetReader], events: Events) -> None:
    for r in readers:
        if r.odd_label_values:
            vals = sorted(r.odd_label_values)[:5]
            events.warn(f"{r.sheet.labels}: label values other than 0/255 ({', '.join(map(str, vals))}...); "
                        "every value above 0 is treated as change")


def _write_lists(out_dir: Path, written: _Written, split: Sequence[float], events: Events) -> None:
    """``SPLIT/list/SPLIT.txt``; refuses a dataset without any tile, warns for an empty split."""
    for sp in SPLITS:
        (out_dir / sp / "list" / f"{sp}.txt").write_text("".join(n + "\n" for n in written.lists[sp]))
    if sum(c["tiles"] for c in written.counts.values()) == 0:
        raise UserError("no tiles written: every tile was dropped (no valid data, or --keep-empty 0 "
                        "and no change in the labels)")
    for sp, f in zip(SPLITS, split):
        if f > 0 and written.counts[sp]["tiles"] == 0:
            events.warn(f"split {sp} got no tiles (too few sheets or tile rows for --split)")


def _dataset_meta(readers: Sequence[_SheetReader], plan: _Plan, written: _Written, out_dir: Path, *,
                  tile_size: int, stride: int, split: Sequence[float], seed: int, keep_empty: float,
                  labels: LabelSource) -> dict:
    """The content of ``dataset.json``: CRS, GSD, bands, options, counts and sources."""
    from .. import __version__

    first = readers[0].before
    crs_set = {r.before.crs.to_string() if r.before.crs else None for r in readers}
    gsds = [(abs(r.before.transform.a), abs(r.before.transform.e)) for r in readers]
    return {
        "format": "hrmnet-tiles",
        "version": 1,
        "created_by": f"hrmnet-engine {__version__} prepare",
        "layout": "{split}/{A,B,label}/NAME.tif + {split}/list/{split}.txt",
        "crs": crs_set.pop() if len(crs_set) == 1 else None,
        "gsd": labels.gsd if first.crs is None else _gsd(gsds),
        "bands": {
            "count": first.count,
            "dtype": first.dtypes[0],
            "descriptions": [d or f"band {j + 1}" for j, d in enumerate(first.descriptions)],
            "nodata": first.nodata,
        },
        "label": _label_meta(readers, labels, out_dir),
        "tile_size": tile_size,
        "stride": stride,
        "split": dict(zip(SPLITS, split)),
        "split_by": "sheet" if plan.by_sheet else "region",
        "seed": seed,
        "keep_empty": keep_empty,
        "counts": {**written.counts, "dropped": {"empty": written.dropped_empty, "nodata": written.dropped_nodata,
                                                 "split_border": plan.dropped_border,
                                                 "outside_labelled_area": written.dropped_unlabelled}},
        "sources": [
            {
                "name": r.sheet.name,
                "before": _source_path(r.sheet.before, out_dir),
                "after": _source_path(r.sheet.after, out_dir),
                "labels": _source_path(r.sheet.labels, out_dir) if r.sheet.labels else "footprints",
                "crs": r.before.crs.to_string() if r.before.crs else None,
                "size": [r.before.width, r.before.height],
                "split": SPLITS[plan.sheet_split[i]] if plan.sheet_split is not None else "region",
                "tiles": written.per_source[i],
            }
            for i, r in enumerate(readers)
        ],
    }


def _label_meta(readers: Sequence[_SheetReader], labels: LabelSource, out_dir: Path) -> dict:
    """``dataset.json``'s ``label``: the values, the labelled masks, where the labels came from."""
    meta: dict = {"dtype": "uint8", "change": 255, "no_change": 0}
    if any(r.area is not None for r in readers):
        meta["labelled"] = {"folder": "{split}/" + LABELLED + "/NAME.tif", "labelled": 255, "not_labelled": 0,
                            "area": labels.labelled_area.text if labels.labelled_area is not None
                            else "the footprint layers' common extent"}
    if labels.footprints:
        meta["footprints"] = {"before": _source_path(labels.footprints[0], out_dir),
                              "after": _source_path(labels.footprints[1], out_dir),
                              "tolerance_m": labels.tolerance_m,
                              "change": "appeared or vanished farther than tolerance_m from the other date"}
    return meta


def _write_tile(path: Path, array: np.ndarray, profile: dict) -> None:
    """One tile; without georeference when the sheet has none (said once, when it was opened)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array)


def _source_path(path: Path, stage: Path) -> str:
    """Path as stored in dataset.json: relative to the dataset when inside it."""
    path = path.absolute()
    try:
        return path.relative_to(stage).as_posix()
    except ValueError:
        return str(path)


def _extent_text(bounds: Sequence[float]) -> str:
    """``"(xmin, ymin, xmax, ymax)"`` with up to 10 significant digits."""
    return "(" + ", ".join(f"{float(v):.10g}" for v in bounds) + ")"


def _gsd(gsds: list[tuple[float, float]]) -> Optional[float]:
    """One ground sampling distance (CRS units per px) when all sheets agree, else None."""
    xs = [g for pair in gsds for g in pair]
    if not xs or max(xs) - min(xs) > 1e-6 * max(xs):
        return None
    return float(xs[0])
