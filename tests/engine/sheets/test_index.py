"""The sheet list: CSV and vector index (templates, relative paths), problems in one message."""
from __future__ import annotations

import pickle
import shutil
import subprocess

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from engine.errors import UserError
from engine.sheets.index import SheetSpec, SkippedSheet, index_crs, read_sheets
from tests.rasters import UTM33N, write_geotiff

SIZE = 16  # pixels per sheet edge
PIXEL = 1.0
X0, Y0 = 500_000.0, 5_000_000.0


def _sheet_origin(row: int, col: int) -> tuple[float, float]:
    return X0 + col * SIZE * PIXEL, Y0 - row * SIZE * PIXEL


@pytest.fixture()
def ortho(tmp_path):
    """2x2 sheets per date as GeoTIFFs: ortho/2019/r{row}c{col}.tif and ortho/2023/..."""
    for year in (2019, 2023):
        (tmp_path / "ortho" / str(year)).mkdir(parents=True)
        for row in range(2):
            for col in range(2):
                write_geotiff(tmp_path / "ortho" / str(year) / f"r{row}c{col}.tif",
                              np.full((SIZE, SIZE), year % 256, np.uint8), origin=_sheet_origin(row, col),
                              pixel_size=PIXEL)
    return tmp_path


def _grid(path, names=("r0c0", "r0c1", "r1c0", "r1c1"), **extra) -> None:
    """An agency grid: one square per sheet in UTM 33N with fields sheet, row, col (+ extra)."""
    rows = [int(n[1]) for n in names]
    cols = [int(n[3]) for n in names]
    geoms = []
    for r, c in zip(rows, cols):
        x, y = _sheet_origin(r, c)
        geoms.append(box(x, y - SIZE * PIXEL, x + SIZE * PIXEL, y))
    gpd.GeoDataFrame({"sheet": list(names), "row": rows, "col": cols, **extra}, geometry=geoms,
                     crs=UTM33N).to_file(path, layer="grid")


def test_csv_with_relative_paths(ortho, tmp_path, monkeypatch):
    (ortho / "list.csv").write_text("id,before,after\n"
                                    "A,ortho/2019/r0c0.tif,ortho/2023/r0c0.tif\n"
                                    f"B,{ortho}/ortho/2019/r0c1.tif,ortho/2023/r0c1.tif\n\n")
    monkeypatch.chdir(tmp_path.parent)  # relative to the CSV, not the current folder
    specs, skipped = read_sheets(ortho / "list.csv")
    assert skipped == []
    assert specs == [
        SheetSpec("A", ortho / "ortho/2019/r0c0.tif", ortho / "ortho/2023/r0c0.tif", None),
        SheetSpec("B", ortho / "ortho/2019/r0c1.tif", ortho / "ortho/2023/r0c1.tif", None),
    ]
    assert pickle.loads(pickle.dumps(specs)) == specs


def test_csv_semicolons_bom_and_templates(ortho):
    (ortho / "list.csv").write_text("\ufeffname;row;col\nfirst;0;0\nsecond;1;1\n", encoding="utf-8")
    specs, _ = read_sheets(ortho / "list.csv", id_field="name", before="ortho/2019/r{row}c{col}.tif",
                           after=str(ortho / "ortho/2023/r{row}c{col}.tif"))
    assert [(s.id, s.before.name, s.after) for s in specs] == [
        ("first", "r0c0.tif", ortho / "ortho/2023/r0c0.tif"), ("second", "r1c1.tif", ortho / "ortho/2023/r1c1.tif")]


def test_vector_grid_with_templates_and_format_specs(ortho):
    _grid(ortho / "grid.gpkg")
    specs, skipped = read_sheets(ortho / "grid.gpkg", id_field="sheet", before="ortho/2019/{sheet}.tif",
                                 after="ortho/2023/r{row:01d}c{col}.tif")
    assert skipped == []
    assert [s.id for s in specs] == ["r0c0", "r0c1", "r1c0", "r1c1"]
    assert specs[3].before == ortho / "ortho/2019/r1c1.tif" and specs[3].after == ortho / "ortho/2023/r1c1.tif"
    x, y = _sheet_origin(1, 1)
    assert specs[3].extent == pytest.approx((x, y - SIZE, x + SIZE, y))
    assert "32633" in index_crs(ortho / "grid.gpkg") or "UTM zone 33N" in index_crs(ortho / "grid.gpkg")
    assert index_crs(ortho / "list.csv") is None


@pytest.mark.skipif(shutil.which("gdaltindex") is None, reason="gdaltindex (gdal-bin) not installed")
def test_gdaltindex_output_with_location_field(ortho):
    before = sorted(str(p) for p in (ortho / "ortho/2019").glob("*.tif"))
    subprocess.run(["gdaltindex", str(ortho / "index.gpkg"), *before], check=True, capture_output=True)
    specs, _ = read_sheets(ortho / "index.gpkg", before="{location}", after="ortho/2023/{id}.tif")
    assert [(s.id, str(s.before), s.after) for s in specs] == [
        (p.rsplit("/", 1)[1][:-4], p, ortho / "ortho/2023" / p.rsplit("/", 1)[1]) for p in before]
    x, y = _sheet_origin(0, 1)
    assert specs[1].extent == pytest.approx((x, y - SIZE, x + SIZE, y))


def test_every_problem_in_one_message(ortho):
    (ortho / "ortho/2023/r1c1.tif").unlink()
    (ortho / "list.csv").write_text(
        "id,before,after\n"
        "A,ortho/2019/r0c0.tif,ortho/2023/r0c0.tif\n"     # fine
        "B,ortho/2019/r0c1.tif,\n"                          # no partner
        "C,ortho/2019/r1c1.tif,ortho/2023/r1c1.tif\n"     # after missing
        "d,ortho/2019/r1c0.tif,ortho/2023/r1c0.tif\n"     # duplicate (case-insensitive)
        "D,ortho/2019/r1c0.tif,ortho/2023/r1c0.tif\n"
        "a/b,ortho/2019/r0c0.tif,ortho/2023/r0c0.tif\n"   # not a folder name
        ",ortho/2019/r0c0.tif,ortho/2023/r0c0.tif\n")     # no id
    with pytest.raises(UserError) as err:
        read_sheets(ortho / "list.csv")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{ortho / 'list.csv'}: 6 sheet(s) cannot run")
    assert "B: no after image (field 'after' is empty)" in message
    assert f"C: no after image: {ortho / 'ortho/2023/r1c1.tif'} does not exist" in message
    assert "d: duplicate id (2 sheets)" in message and "D: duplicate id (2 sheets)" in message
    assert "a/b: id 'a/b' cannot be a folder name" in message
    assert "(line 8): empty id" in message
    assert "A:" not in message
    assert "--skip-missing" in message


def test_skip_missing_returns_the_reasons(ortho):
    (ortho / "ortho/2019/r0c1.tif").unlink()
    _grid(ortho / "grid.gpkg")
    specs, skipped = read_sheets(ortho / "grid.gpkg", id_field="sheet", before="ortho/2019/{sheet}.tif",
                                 after="ortho/2023/{sheet}.tif", skip_missing=True)
    assert [s.id for s in specs] == ["r0c0", "r1c0", "r1c1"]
    assert len(skipped) == 1 and isinstance(skipped[0], SkippedSheet)
    assert skipped[0].id == "r0c1"
    assert skipped[0].reason == f"no before image: {ortho / 'ortho/2019/r0c1.tif'} does not exist"
    x, y = _sheet_origin(0, 1)
    assert skipped[0].extent == pytest.approx((x, y - SIZE, x + SIZE, y))


def test_empty_placeholder_field_is_a_sheet_problem(ortho):
    _grid(ortho / "grid.gpkg", names=("r0c0", "r0c1"), year=[2019, None])
    with pytest.raises(UserError, match=r"r0c1: no before image \(field 'year' is empty\)"):
        read_sheets(ortho / "grid.gpkg", id_field="sheet", before="ortho/{year}/{sheet}.tif",
                    after="ortho/2023/{sheet}.tif")


@pytest.mark.parametrize("kwargs, expected", [
    (dict(id_field="sheet", before="ortho/{yaer}/{sheet}.tif", after="{nope}"),
     r"--before ortho/\{yaer\}/\{sheet\}.tif: no field 'yaer'; --after \{nope\}: no field 'nope' "
     r"\(fields: sheet, row, col\)"),
    (dict(id_field="name", before="{sheet}", after="{sheet}"), r"no id field 'name' \(use --id-field\)"),
    (dict(id_field="sheet"), r"no 'before' field: give --before as a template such as /ortho/\{sheet\}.tif"),
    (dict(id_field="sheet", before="{0}", after="{sheet}"), r"placeholder \{0\} must be a field name"),
    (dict(id_field="sheet", before="{sheet.__class__}", after="{sheet}"), r"must be a field name"),
    (dict(id_field="sheet", before="{sheet", after="{sheet}"), r"--before \{sheet: .*literal brace"),
])
def test_setting_mistakes_always_raise(ortho, kwargs, expected):
    _grid(ortho / "grid.gpkg")
    with pytest.raises(UserError, match=expected):
        read_sheets(ortho / "grid.gpkg", skip_missing=True, **kwargs)


def test_unreadable_or_ambiguous_files(ortho):
    with pytest.raises(UserError, match="nothing.gpkg: no such file"):
        read_sheets(ortho / "nothing.gpkg")
    (ortho / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="notes.txt: not a CSV file or a vector layer GDAL can read"):
        read_sheets(ortho / "notes.txt")
    _grid(ortho / "two.gpkg")
    gpd.GeoDataFrame({"a": [1]}, geometry=[box(0, 0, 1, 1)], crs=UTM33N).to_file(ortho / "two.gpkg", layer="other")
    with pytest.raises(UserError, match=r"two.gpkg: 2 layers \(grid, other\); name one as .*two.gpkg\|layername=grid"):
        read_sheets(ortho / "two.gpkg")
    specs, _ = read_sheets(f"{ortho / 'two.gpkg'}|layername=grid", id_field="sheet",
                           before="ortho/2019/{sheet}.tif", after="ortho/2023/{sheet}.tif")
    assert len(specs) == 4
    with pytest.raises(UserError, match="no layer 'grd'"):
        read_sheets(f"{ortho / 'two.gpkg'}|layername=grd")
    (ortho / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty.csv: empty; expected a header"):
        read_sheets(ortho / "empty.csv")


def test_subset_keeps_only_some_sheets_of_a_grid_or_a_csv(ortho):
    """QGIS's ``|subset=`` notation (a layer filter, or the plugin's selected features)."""
    _grid(ortho / "grid.gpkg")
    specs, _ = read_sheets(f"""{ortho / 'grid.gpkg'}|layername=grid|subset="sheet" IN ('r0c1', 'r1c1')""",
                           id_field="sheet", before="ortho/2019/{sheet}.tif", after="ortho/2023/{sheet}.tif")
    assert [s.id for s in specs] == ["r0c1", "r1c1"]
    (ortho / "list.csv").write_text("id;before;after\n"
                                    "A;ortho/2019/r0c0.tif;ortho/2023/r0c0.tif\n"
                                    "B;ortho/2019/r0c1.tif;ortho/2023/r0c1.tif\n")
    specs, _ = read_sheets(f"{ortho / 'list.csv'}|subset=\"id\" = 'B'")
    assert specs == [SheetSpec("B", ortho / "ortho/2019/r0c1.tif", ortho / "ortho/2023/r0c1.tif", None)]
    with pytest.raises(UserError, match="grid.gpkg: subset .* is not a valid filter"):
        read_sheets(f"{ortho / 'grid.gpkg'}|subset=nonsense ((", id_field="sheet", before="{sheet}", after="{sheet}")
