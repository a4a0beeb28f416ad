"""The sheet list of a ``sheets`` run: which before/after pair belongs to which map sheet.

``--sheets`` is either

* a CSV file (``.csv``; comma, semicolon or tab separated; UTF-8, an Excel BOM is fine)
  whose header names the columns, normally ``id,before,after``. Relative paths in it are
  relative to the CSV's folder; or
* any vector layer GDAL reads: a sheet index made by ``gdaltindex`` (its ``location``
  field holds the raster path), or an agency's own grid. Each feature is one sheet; its
  bounds become the sheet's extent (in the layer's CRS). A file with several layers is
  named as ``grid.gpkg|layername=sheets``; ``|subset=SQL`` (an OGR SQL WHERE clause, as in
  QGIS's layer sources) keeps only some sheets, e.g. ``grid.gpkg|subset="sheet" IN ('A1','A2')``;
  a CSV with a subset is read through GDAL's CSV driver.

The id comes from ``id_field`` (default ``id``; for ``gdaltindex`` output, which has only
``location``, the file name without extension, also usable as ``{id}`` in templates). The before/after paths come from the
``before``/``after`` columns, or from templates whose ``{FIELD}`` placeholders take any
attribute of the sheet: ``/ortho/2019/{id}.tif``, ``{location}``, ``tiles/{row:03d}_{col:03d}.tif``
(Python format specs work on numeric fields). A relative path (from a template or a column)
is resolved against the folder of the sheet list file, not the current folder.

Every problem (a sheet without a partner, a duplicate id, a missing file, an empty
placeholder field) is collected first and reported in ONE :class:`~engine.errors.UserError`
before any work starts, or, with ``skip_missing``, returned as :class:`SkippedSheet` records
with the reason. Problems with the settings themselves (an unknown field in a template,
a missing id field, an unreadable file) always raise.
"""
from __future__ import annotations

import csv
import math
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from ..errors import UserError

__all__ = ["SheetSpec", "SkippedSheet", "read_sheets", "index_crs", "MAX_LISTED"]

PathLike = Union[str, os.PathLike]
Extent = tuple[float, float, float, float]

#: At most this many problems are spelled out in the error message (the count is always given).
MAX_LISTED = 20

# Characters that cannot appear in a folder name on Windows or POSIX (ids become folder names).
_BAD_ID = re.compile(r'[<>:"/\\|?*\x00-\x1f]')


@dataclass(frozen=True)
class SheetSpec:
    """One map sheet to process.

    Attributes:
        id: the sheet id (usable as a folder name).
        before: raster of the earlier date (absolute path).
        after: raster of the later date (absolute path).
        extent: (xmin, ymin, xmax, ymax) of the index feature in the index's CRS
            (see :func:`index_crs`); None for a CSV list or a feature without geometry.
    """

    id: str
    before: Path
    after: Path
    extent: Optional[Extent] = None


@dataclass(frozen=True)
class SkippedSheet:
    """A sheet left out (``skip_missing``) and why, e.g. ``"no after image: /a/7.tif does not exist"``."""

    id: str
    reason: str
    extent: Optional[Extent] = None


@dataclass(frozen=True)
class _Row:
    where: str  # "line 3" / "feature 7", for messages about rows without a usable id
    attrs: dict
    extent: Optional[Extent]


def read_sheets(sheets: PathLike, id_field: Optional[str] = None, before: Optional[str] = None,
                after: Optional[str] = None, skip_missing: bool = False
                ) -> tuple[list[SheetSpec], list[SkippedSheet]]:
    """Read a sheet list (CSV or vector index) into sheet specs, in file order.

    Args:
        sheets: CSV file or vector layer (``path`` or ``path|layername=NAME``).
        id_field: attribute holding the sheet id (default ``id``).
        before, after: path templates with ``{FIELD}`` placeholders; None = use the
            ``before``/``after`` attribute as the path. Relative results are resolved
            against the folder of ``sheets``.
        skip_missing: return problem sheets as skipped instead of raising.

    Returns:
        (sheets to process, sheets skipped with their reason).

    Raises:
        UserError: unreadable list, unknown fields, or (without ``skip_missing``) all
            problem sheets in one message.
    """
    path, layer, where = _split_source(str(sheets))
    if not path.exists():
        raise UserError(f"{path}: no such file")
    plain_csv = path.suffix.lower() == ".csv" and layer is None and where is None
    rows, fields = _read_csv(path) if plain_csv else _read_vector(path, layer, where)
    if id_field is None and "id" not in fields and "location" in fields:
        rows, fields = _ids_from_location(rows), fields + ["id"]
    id_field = id_field or "id"
    templates = _templates(sheets, fields, id_field, before, after)
    good, bad = _resolve(rows, id_field, templates, path.resolve().parent)
    if bad and not skip_missing:
        raise UserError(_problem_message(sheets, bad))
    return good, bad


def index_crs(sheets: PathLike) -> Optional[str]:
    """The CRS of a vector sheet index as WKT (None for a CSV list or a layer without CRS)."""
    path, layer, _ = _split_source(str(sheets))
    if path.suffix.lower() == ".csv":
        return None
    import pyogrio

    return pyogrio.read_info(path, layer=layer).get("crs")


def _split_source(text: str) -> tuple[Path, Optional[str], Optional[str]]:
    """QGIS's ``path|layername=x|subset=SQL`` -> (path, layer, OGR SQL where clause).

    The subset comes last and is taken to the end of the text (it may contain ``|``).
    """
    where = None
    if "|subset=" in text:
        text, where = text.split("|subset=", 1)
        where = where.strip() or None
    path, *options = text.split("|")
    layer = None
    for option in options:
        key, _, value = option.partition("=")
        if key == "layername" and value:
            layer = value
    return Path(path), layer, where


def _read_csv(path: Path) -> tuple[list[_Row], list[str]]:
    """Rows of a CSV list (all values strings, stripped) and its column names."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (save the CSV as UTF-8)")
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise UserError(f"{path}: empty; expected a header such as id,before,after")
    try:
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(lines, dialect)
    header = [h.strip() for h in next(reader)]
    rows = []
    for number, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        attrs = {h: (values[i].strip() if i < len(values) else "") for i, h in enumerate(header)}
        rows.append(_Row(f"line {number}", attrs, None))
    return rows, header


def _read_vector(path: Path, layer: Optional[str], where: Optional[str] = None) -> tuple[list[_Row], list[str]]:
    """Features of a vector sheet index: attributes and bounds."""
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    try:
        layers = [name for name, _ in pyogrio.list_layers(path)]
    except (DataSourceError, ValueError) as exc:
        raise UserError(f"{path}: not a CSV file or a vector layer GDAL can read") from exc
    if layer is None and len(layers) > 1:
        raise UserError(f"{path}: {len(layers)} layers ({', '.join(layers)}); name one as "
                        f"{path}|layername={layers[0]}")
    if layer is not None and layer not in layers:
        raise UserError(f"{path}: no layer {layer!r} (layers: {', '.join(layers)})")
    try:
        frame = pyogrio.read_dataframe(path, layer=layer, where=where, fid_as_index=True)
    except (DataSourceError, DataLayerError, ValueError) as exc:
        what = f"subset {where!r} is not a valid filter" if where else "cannot read the sheet index"
        raise UserError(f"{path}: {what} ({exc})") from exc
    fields = [c for c in frame.columns if c != frame.geometry.name] if hasattr(frame, "geometry") else \
        list(frame.columns)
    bounds = frame.geometry.bounds.to_numpy() if hasattr(frame, "geometry") else None
    rows = []
    for k, (fid, record) in enumerate(zip(frame.index, frame[fields].to_dict("records"))):
        extent = None
        if bounds is not None and all(math.isfinite(v) for v in bounds[k]):
            extent = tuple(float(v) for v in bounds[k])
        rows.append(_Row(f"feature {fid}", record, extent))
    return rows, fields


def _ids_from_location(rows: list[_Row]) -> list[_Row]:
    """gdaltindex output has only ``location``: its file name without extension becomes ``id``."""
    out = []
    for row in rows:
        location = _text(row.attrs.get("location"))
        stem = re.split(r"[/\\]", location)[-1].rsplit(".", 1)[0] if location else None
        out.append(_Row(row.where, {**row.attrs, "id": stem}, row.extent))
    return out


def _placeholders(template: str, option: str) -> list[str]:
    """Field names in a template; only plain names (no positional, attribute or index access)."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise UserError(f"{option} {template}: {exc} (write a literal brace as {{{{ or }}}})")
    for name in names:
        if not name or not name.isidentifier():
            raise UserError(f"{option} {template}: placeholder {{{name}}} must be a field name such as {{id}}")
    return names


def _templates(sheets: PathLike, fields: list[str], id_field: str, before: Optional[str],
               after: Optional[str]) -> dict[str, str]:
    """Check the id field and both templates against the fields; returns date -> template."""
    problems = []
    if id_field not in fields:
        problems.append(f"no id field {id_field!r} (use --id-field)")
    templates = {}
    for date, template in (("before", before), ("after", after)):
        if template is None:
            if date not in fields:
                problems.append(f"no {date!r} field: give --{date} as a template such as /ortho/{{{id_field}}}.tif")
            template = "{" + date + "}"
        else:
            unknown = [n for n in _placeholders(template, f"--{date}") if n not in fields]
            if unknown:
                problems.append(f"--{date} {template}: no field {', '.join(map(repr, unknown))}")
        templates[date] = template
    if problems:
        raise UserError(f"{sheets}: {'; '.join(problems)} (fields: {', '.join(fields) or 'none'})")
    return templates


def _text(value: Any) -> Optional[str]:
    """An attribute as text; None for null/NaN/empty. Integral floats lose their '.0'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _render(template: str, attrs: dict) -> tuple[Optional[str], Optional[str]]:
    """(path, None) or (None, why) for one sheet."""
    values = {}
    for name in _placeholders(template, ""):
        value = attrs.get(name)
        if _text(value) is None:
            return None, f"field {name!r} is empty"
        values[name] = value.item() if hasattr(value, "item") else value
    try:
        text = template.format_map(values)
    except (ValueError, TypeError) as exc:
        return None, f"{template}: {exc}"
    return (text.strip() or None), (None if text.strip() else "empty path")


def _path(text: str, base: Path) -> Path:
    if text.startswith("/vsi"):
        return Path(text)
    p = Path(os.path.expanduser(text))
    return p if p.is_absolute() else base / p


def _exists(p: Path) -> bool:
    return str(p).startswith("/vsi") or p.is_file()


def _id_problem(sheet_id: Optional[str]) -> Optional[str]:
    if sheet_id is None:
        return "empty id"
    if _BAD_ID.search(sheet_id) or sheet_id in (".", "..") or sheet_id.endswith((".", " ")):
        return f"id {sheet_id!r} cannot be a folder name (no / \\ : * ? \" < > | or trailing dot)"
    return None


def _sheet(row: _Row, sheet_id: Optional[str], templates: dict[str, str], base: Path
           ) -> tuple[Optional[SheetSpec], list[str]]:
    """The spec of one row, or the reasons it cannot run."""
    reasons = []
    problem = _id_problem(sheet_id)
    if problem:
        reasons.append(problem)
    paths = {}
    for date, template in templates.items():
        text, why = _render(template, row.attrs)
        if text is None:
            reasons.append(f"no {date} image ({why})")
            continue
        paths[date] = _path(text, base)
        if not _exists(paths[date]):
            reasons.append(f"no {date} image: {paths[date]} does not exist")
    if reasons:
        return None, reasons
    return SheetSpec(sheet_id, paths["before"], paths["after"], row.extent), []


def _duplicates(ids: list[Optional[str]]) -> dict[str, int]:
    """Case-folded id -> count, for ids seen more than once (folder names clash on Windows)."""
    counts: dict[str, int] = {}
    for sheet_id in ids:
        if sheet_id is not None:
            counts[sheet_id.casefold()] = counts.get(sheet_id.casefold(), 0) + 1
    return {k: n for k, n in counts.items() if n > 1}


def _resolve(rows: list[_Row], id_field: str, templates: dict[str, str], base: Path
             ) -> tuple[list[SheetSpec], list[SkippedSheet]]:
    ids = [_text(row.attrs.get(id_field)) for row in rows]
    dups = _duplicates(ids)
    good, bad = [], []
    for row, sheet_id in zip(rows, ids):
        spec, reasons = _sheet(row, sheet_id, templates, base)
        if sheet_id is not None and sheet_id.casefold() in dups:
            reasons.insert(0, f"duplicate id ({dups[sheet_id.casefold()]} sheets)")
        if reasons:
            bad.append(SkippedSheet(sheet_id or f"({row.where})", "; ".join(reasons), row.extent))
        else:
            good.append(spec)
    return good, bad


def _problem_message(sheets: PathLike, bad: list[SkippedSheet]) -> str:
    listed = [f"{s.id}: {s.reason}" for s in bad[:MAX_LISTED]]
    more = f" | and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
    return (f"{sheets}: {len(bad)} sheet(s) cannot run: " + " | ".join(listed) + more
            + " (fix them, or pass --skip-missing to skip them)")

