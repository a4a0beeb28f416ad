"""Output-file helpers the detect pipeline uses for atomic output and cleanup."""
from __future__ import annotations

import numpy as np
import pyogrio
import pytest

from engine.errors import UserError
from engine.vector import (check_vector_path, move_vector, polygonize_to_file, remove_vector, temporary_vector_path,
                           vector_sidecars)
from tests.rasters import write_geotiff


def test_check_vector_path_names_the_file_and_the_formats(tmp_path):
    for ext in (".shp", ".gpkg", ".fgb", ".geojson", ".GPKG"):
        check_vector_path(tmp_path / f"out{ext}")
    with pytest.raises(UserError) as err:
        check_vector_path("dir/changes.xyz")
    assert str(err.value) == "dir/changes.xyz: unsupported vector format '.xyz' (use .shp, .gpkg, .fgb, .geojson)"
    with pytest.raises(UserError, match="unsupported vector format ''"):
        check_vector_path("changes")


def test_vector_sidecars(tmp_path):
    names = [p.name for p in vector_sidecars(tmp_path / "a.shp")]
    assert names == ["a.shp", "a.shx", "a.dbf", "a.prj", "a.cpg"]
    assert [p.name for p in vector_sidecars(tmp_path / "a.fgb")] == ["a.fgb"]
    assert vector_sidecars(tmp_path / "a.gpkg")[0].name == "a.gpkg"
    assert [p.name for p in vector_sidecars(tmp_path / "A.SHP")][1] == "A.SHX"


def _shapefile(tmp_path, name: str, blobs: int) -> None:
    mask = np.zeros((20, 40), np.uint8)
    mask[5:8, 2:2 + 4 * blobs:4] = 1
    write_geotiff(tmp_path / f"{name}.tif", mask)
    polygonize_to_file(tmp_path / f"{name}.tif", None, tmp_path / f"{name}.shp")


def test_move_vector_replaces_a_shapefile_with_all_its_sidecars(tmp_path):
    _shapefile(tmp_path, "old", 1)
    _shapefile(tmp_path, "new", 3)
    (tmp_path / "old.qix").write_text("x")  # unrelated file: left alone
    move_vector(tmp_path / "new.shp", tmp_path / "old.shp")
    assert not any(p.exists() for p in vector_sidecars(tmp_path / "new.shp"))
    assert len(pyogrio.read_dataframe(tmp_path / "old.shp")) == 3
    assert all(p.exists() for p in vector_sidecars(tmp_path / "old.shp"))
    remove_vector(tmp_path / "old.shp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.tif", "old.qix", "old.tif"]
    remove_vector(tmp_path / "old.shp")  # nothing there: no error


def test_move_vector_refuses_a_change_of_format(tmp_path):
    with pytest.raises(ValueError):
        move_vector(tmp_path / "a.shp", tmp_path / "a.gpkg")


@pytest.mark.parametrize("ext", [".shp", ".gpkg", ".fgb", ".geojson"])
def test_write_to_a_temporary_path_then_move_into_place(tmp_path, ext):
    mask = np.zeros((20, 20), np.uint8)
    mask[2:6, 2:6] = 1
    write_geotiff(tmp_path / "mask.tif", mask)
    final = tmp_path / f"changes{ext}"
    tmp = temporary_vector_path(final)
    assert tmp.parent == final.parent and tmp.suffix == ext and tmp != final
    polygonize_to_file(tmp_path / "mask.tif", None, tmp)
    move_vector(tmp, final)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["mask.tif"] + [p.name for p in vector_sidecars(final)
                                                                               if p.exists()])
    frame = pyogrio.read_dataframe(final)
    assert len(frame) == 1 and frame.area_m2[0] == pytest.approx(4.0)
    if ext == ".shp":
        assert pyogrio.list_layers(final)[0][0] == "changes"


@pytest.mark.parametrize("ext", [".fgb", ".geojson"])
def test_staged_formats_convert_without_the_arrow_write_api(tmp_path, ext, monkeypatch):
    import engine.vector.io as vio

    monkeypatch.setattr(vio, "_has_arrow_write", lambda: False)  # pyogrio < 0.8 or GDAL < 3.8
    mask = np.zeros((20, 20), np.uint8)
    mask[2:6, 2:6] = 1
    mask[10:18, 10:12] = 1
    write_geotiff(tmp_path / "mask.tif", mask)
    stats = polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / f"out{ext}")
    frame = pyogrio.read_dataframe(tmp_path / f"out{ext}")
    assert stats["polygons"] == 2 and sorted(frame.area_m2) == pytest.approx([4.0, 4.0])
    assert sorted(frame.id) == [1, 2] and pyogrio.read_info(tmp_path / f"out{ext}")["crs"] == "EPSG:32633"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", f"out{ext}"]
