"""polygonize_to_file on generated GeoTIFF masks with real CRSs."""
from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import shapely
from pyproj import CRS, Geod
from rasterio.transform import from_origin
from scipy import ndimage

from engine.errors import Cancelled, UserError
from engine.events import Events
from engine.vector import SUPPORTED_VECTOR_EXTENSIONS, polygonize_to_file
from tests.rasters import UTM33N, write_geotiff

ORIGIN = (500_000.0, 5_000_000.0)  # top-left corner, UTM 33N
PIX = 0.5  # metres


def _mask(rows: int, cols: int) -> np.ndarray:
    return np.zeros((rows, cols), np.uint8)


def _read(path):
    frame = pyogrio.read_dataframe(path)
    return frame.sort_values("id").reset_index(drop=True)


def _recorder():
    events: list[dict] = []
    return Events(events.append), events


def test_square_across_a_strip_seam_is_one_polygon_with_exact_area_and_place(tmp_path):
    mask = _mask(300, 200)
    mask[90:190, 40:140] = 1  # rows 90..189 cross the seam at row 128
    write_geotiff(tmp_path / "mask.tif", mask)
    stats = polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "out.gpkg", window_rows=128)
    frame = _read(tmp_path / "out.gpkg")
    assert len(frame) == 1 and stats["polygons"] == 1
    x0, y0 = ORIGIN[0] + 40 * PIX, ORIGIN[1] - 190 * PIX
    expected = shapely.box(x0, y0, x0 + 100 * PIX, y0 + 100 * PIX)
    geom = frame.geometry[0]
    assert shapely.normalize(geom).equals_exact(shapely.normalize(expected), 1e-9)
    assert frame.area_m2[0] == pytest.approx(2500.0, abs=1e-9)
    assert stats["area_m2"] == pytest.approx(2500.0, abs=1e-9) and stats["area_units"] == "m2"
    assert list(frame.id) == [1]
    assert CRS.from_user_input(frame.crs) == CRS.from_user_input(UTM33N)


def test_ring_across_several_seams_keeps_its_hole(tmp_path):
    mask = _mask(200, 200)
    mask[20:180, 20:180] = 1
    mask[60:140, 60:140] = 0
    write_geotiff(tmp_path / "mask.tif", mask)
    polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "out.shp", window_rows=32)
    frame = _read(tmp_path / "out.shp")
    assert len(frame) == 1
    geom = frame.geometry[0]
    assert geom.geom_type == "Polygon" and geom.is_valid and len(geom.interiors) == 1
    assert frame.area_m2[0] == pytest.approx((160 ** 2 - 80 ** 2) * PIX ** 2)
    assert shapely.Polygon(geom.interiors[0]).area == pytest.approx(80 ** 2 * PIX ** 2)


def test_u_shape_whose_arms_join_in_a_later_strip_is_one_polygon(tmp_path):
    mask = _mask(256, 100)
    mask[10:200, 10:20] = 1  # left arm
    mask[10:200, 80:90] = 1  # right arm
    mask[200:210, 10:90] = 1  # the bottom joins them, four strips later
    write_geotiff(tmp_path / "mask.tif", mask)
    polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "out.fgb", window_rows=40)
    frame = _read(tmp_path / "out.fgb")
    assert len(frame) == 1
    assert frame.area_m2[0] == pytest.approx(mask.sum() * PIX ** 2)
    assert frame.geometry[0].is_valid and len(frame.geometry[0].interiors) == 0


def test_min_area_drops_small_blobs(tmp_path):
    mask = _mask(200, 200)
    for i in range(10):
        for j in range(10):
            mask[5 + 15 * i:5 + 15 * i + 2, 5 + 15 * j:5 + 15 * j + 2] = 1  # 100 blobs of 1 m²
    mask[160:180, 10:30] = 1  # 100 m²
    mask[150:165, 150:170] = 1  # 75 m²
    write_geotiff(tmp_path / "mask.tif", mask)
    stats = polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "all.gpkg", window_rows=64)
    assert stats["polygons"] == 102
    stats = polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "big.gpkg", min_area_m2=50, window_rows=64)
    frame = _read(tmp_path / "big.gpkg")
    assert stats["polygons"] == 2 and stats["dropped_small"] == 100 and list(frame.id) == [1, 2]
    assert sorted(frame.area_m2) == pytest.approx([75.0, 100.0])
    stats = polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "one.gpkg", min_area_m2=80, window_rows=64)
    assert stats["polygons"] == 1 and stats["area_m2"] == pytest.approx(100.0)


def test_geographic_crs_area_in_square_metres_within_one_percent(tmp_path):
    deg = 1e-5  # about 1.1 m at 45° N
    transform = from_origin(15.0, 45.01, deg, deg)
    mask = _mask(400, 400)
    mask[100:300, 50:350] = 1
    write_geotiff(tmp_path / "mask.tif", mask, crs="EPSG:4326", transform=transform)
    stats = polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "out.gpkg", window_rows=64)
    frame = _read(tmp_path / "out.gpkg")
    lon0, lat1 = transform @ (50, 100)
    lon1, lat0 = transform @ (350, 300)
    geodesic, _ = Geod(ellps="WGS84").geometry_area_perimeter(shapely.box(lon0, lat0, lon1, lat1))
    assert abs(geodesic) > 50_000
    assert frame.area_m2[0] == pytest.approx(abs(geodesic), rel=0.01)
    assert stats["area_m2"] == pytest.approx(abs(geodesic), rel=0.01)
    assert CRS.from_user_input(frame.crs).is_geographic
    assert frame.geometry[0].bounds == pytest.approx((lon0, lat0, lon1, lat1))
    # min_area in m² applies to geographic rasters too
    stats = polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "none.gpkg",
                               min_area_m2=abs(geodesic) * 1.02, window_rows=64)
    assert stats["polygons"] == 0


def _staircase() -> np.ndarray:
    """A triangle with a one-pixel staircase hypotenuse (many vertices)."""
    mask = _mask(120, 120)
    for r in range(10, 110):
        mask[r, 10:10 + (r - 10) + 1] = 1
    return mask


def test_simplify_in_metres_reduces_vertices_and_keeps_shape(tmp_path):
    write_geotiff(tmp_path / "mask.tif", _staircase())
    polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "raw.gpkg", window_rows=32)
    polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "simple.gpkg", simplify_m=1.0, window_rows=32)
    raw, simple = _read(tmp_path / "raw.gpkg").geometry[0], _read(tmp_path / "simple.gpkg").geometry[0]
    assert len(raw.exterior.coords) > 150
    assert len(simple.exterior.coords) <= 6
    assert simple.is_valid
    assert simple.hausdorff_distance(raw) <= 1.0 + 1e-9
    assert _read(tmp_path / "simple.gpkg").area_m2[0] == pytest.approx(simple.area)
    # a tolerance below half a pixel diagonal changes nothing but the seam vertices
    polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "tiny.gpkg", simplify_m=0.1, window_rows=32)
    assert _read(tmp_path / "tiny.gpkg").geometry[0].equals(raw)


def test_simplify_on_a_geographic_crs_uses_metres(tmp_path):
    deg = 1e-5
    write_geotiff(tmp_path / "mask.tif", _staircase(), crs="EPSG:4326", transform=from_origin(15.0, 45.0, deg, deg))
    polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "raw.gpkg")
    polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "simple.gpkg", simplify_m=2.0)
    raw, simple = _read(tmp_path / "raw.gpkg"), _read(tmp_path / "simple.gpkg")
    assert len(simple.geometry[0].exterior.coords) <= 6 < len(raw.geometry[0].exterior.coords)
    assert simple.geometry[0].is_valid
    assert simple.area_m2[0] == pytest.approx(raw.area_m2[0], rel=0.03)


@pytest.mark.parametrize("ext", SUPPORTED_VECTOR_EXTENSIONS)
def test_no_change_gives_a_valid_empty_layer(tmp_path, ext):
    write_geotiff(tmp_path / "mask.tif", _mask(64, 64))
    out = tmp_path / f"out{ext}"
    stats = polygonize_to_file(tmp_path / "mask.tif", None, out, window_rows=16)
    assert stats["polygons"] == 0 and stats["area_m2"] == 0
    info = pyogrio.read_info(out)
    assert info["features"] in (0, -1)  # FlatGeobuf without features does not know its count
    assert len(pyogrio.read_dataframe(out)) == 0
    assert CRS.from_user_input(info["crs"]) == CRS.from_user_input(UTM33N)
    if ext != ".geojson":  # GeoJSON has no schema without features
        assert list(info["fields"]) == ["id", "area_m2", "mean_prob", "max_prob"]
        assert info["geometry_type"] == "Polygon"
    # (tests/engine/vector/test_interop.py opens these in the system GDAL and QGIS)


def test_probability_statistics_uint8_and_float32(tmp_path):
    mask = _mask(100, 100)
    mask[10:50, 10:30] = 1  # crosses the seam at row 32
    mask[70:80, 70:80] = 1
    mask[0:3, 90:100] = 255  # nodata: no change
    p8 = np.full(mask.shape, 3, np.uint8)
    p8[10:50, 10:30] = np.arange(40 * 20).reshape(40, 20) % 200 + 50
    p8[20, 20] = 255  # unknown probability inside the polygon
    p8[70:80, 70:80] = 254
    write_geotiff(tmp_path / "mask.tif", mask, nodata=255)
    write_geotiff(tmp_path / "p8.tif", p8, nodata=255)
    pf = np.where(p8 == 255, -1, p8 / 254.0).astype(np.float32)
    write_geotiff(tmp_path / "pf.tif", pf, nodata=-1)
    block = p8[10:50, 10:30].astype(float)
    valid = block[block != 255] / 254.0
    for prob in ("p8.tif", "pf.tif"):
        polygonize_to_file(tmp_path / "mask.tif", tmp_path / prob, tmp_path / f"{prob}.gpkg", window_rows=32)
        frame = _read(tmp_path / f"{prob}.gpkg").sort_values("area_m2").reset_index(drop=True)
        assert len(frame) == 2
        assert frame.mean_prob[0] == pytest.approx(1.0) and frame.max_prob[0] == pytest.approx(1.0)
        assert frame.mean_prob[1] == pytest.approx(valid.mean(), abs=1e-6)
        assert frame.max_prob[1] == pytest.approx(valid.max(), abs=1e-6)
    polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "noprob.shp", window_rows=32)
    frame = _read(tmp_path / "noprob.shp")
    assert frame.mean_prob.isna().all() and frame.max_prob.isna().all()


def test_strip_size_does_not_change_the_result(tmp_path):
    rng = np.random.default_rng(7)  # smooth blobs of all sizes, a third of the scene, crossing seams
    noise = ndimage.zoom(rng.normal(size=(257, 257)).astype(np.float32), 8, order=1)[:2048, :2048]
    mask = (noise > 0.5).astype(np.uint8)
    prob = np.where(mask == 1, 200, 20).astype(np.uint8)
    write_geotiff(tmp_path / "mask.tif", mask)
    write_geotiff(tmp_path / "prob.tif", prob)
    small = polygonize_to_file(tmp_path / "mask.tif", tmp_path / "prob.tif", tmp_path / "s.gpkg", window_rows=256)
    whole = polygonize_to_file(tmp_path / "mask.tif", tmp_path / "prob.tif", tmp_path / "w.gpkg", window_rows=4096)
    assert small["polygons"] == whole["polygons"] == ndimage.label(mask)[1]
    assert small["area_m2"] == pytest.approx(mask.sum() * PIX ** 2)
    assert whole["area_m2"] == pytest.approx(mask.sum() * PIX ** 2)

    def canonical(path):
        frame = pyogrio.read_dataframe(path)
        geoms = shapely.normalize(np.asarray(frame.geometry.values, dtype=object))
        keys = [g.wkb for g in geoms]
        order = np.argsort(keys)
        return [keys[i] for i in order], frame.area_m2.to_numpy()[order], frame.mean_prob.to_numpy()[order]

    ks, as_, ms = canonical(tmp_path / "s.gpkg")
    kw, aw, mw = canonical(tmp_path / "w.gpkg")
    assert ks == kw
    np.testing.assert_allclose(as_, aw)
    np.testing.assert_allclose(ms, mw)
    assert sorted(pyogrio.read_dataframe(tmp_path / "s.gpkg").id) == list(range(1, small["polygons"] + 1))


def test_raster_without_crs_works_in_pixel_space(tmp_path):
    mask = _mask(50, 60)
    mask[10:20, 5:25] = 1
    write_geotiff(tmp_path / "mask.tif", mask, crs=None)
    events, seen = _recorder()
    stats = polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "out.gpkg", events=events, window_rows=16)
    frame = _read(tmp_path / "out.gpkg")
    assert stats == {"polygons": 1, "area_m2": 200.0, "area_units": "pixel", "dropped_small": 0}
    assert frame.area_m2[0] == 200.0 and frame.crs is None
    assert frame.geometry[0].bounds == (5.0, 10.0, 25.0, 20.0)
    assert any(e["event"] == "log" and e["level"] == "warning" and "pixel" in e["message"] for e in seen)
    events, seen = _recorder()
    polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "out.geojson", events=events)
    assert any(e["event"] == "log" and "WGS 84" in e["message"] for e in seen)
    assert pyogrio.read_dataframe(tmp_path / "out.geojson").geometry[0].bounds == (5.0, 10.0, 25.0, 20.0)


def test_progress_one_step_a_strip(tmp_path):
    write_geotiff(tmp_path / "mask.tif", _mask(100, 10))
    events, seen = _recorder()
    polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "out.gpkg", events=events, window_rows=30)
    progress = [(e["done"], e["total"], e["stage"]) for e in seen if e["event"] == "progress"]
    assert progress == [(1, 4, "vectorize"), (2, 4, "vectorize"), (3, 4, "vectorize"), (4, 4, "vectorize")]


@pytest.mark.parametrize("ext", [".shp", ".fgb"])
def test_cancel_leaves_nothing_behind(tmp_path, ext):
    mask = _mask(100, 100)
    mask[::7, ::7] = 1
    write_geotiff(tmp_path / "mask.tif", mask)
    calls = []
    events = Events(None, lambda: calls.append(1) or len(calls) > 2)
    with pytest.raises(Cancelled):
        polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / f"out{ext}", events=events, window_rows=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]


def test_bad_inputs_are_one_line_user_errors(tmp_path):
    mask = _mask(40, 40)
    write_geotiff(tmp_path / "mask.tif", mask)
    with pytest.raises(UserError, match=r"out\.xyz: unsupported vector format '\.xyz' \(use \.shp, \.gpkg, \.fgb, "
                                        r"\.geojson\)"):
        polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "out.xyz")
    with pytest.raises(UserError, match="missing.tif: file not found"):
        polygonize_to_file(tmp_path / "missing.tif", None, tmp_path / "out.gpkg")
    (tmp_path / "text.tif").write_text("not a raster")
    with pytest.raises(UserError, match="text.tif: not a raster GDAL can read"):
        polygonize_to_file(tmp_path / "text.tif", None, tmp_path / "out.gpkg")
    write_geotiff(tmp_path / "other.tif", np.zeros((40, 41), np.uint8))
    with pytest.raises(UserError, match="other.tif: size 41x40 differs"):
        polygonize_to_file(tmp_path / "mask.tif", tmp_path / "other.tif", tmp_path / "out.gpkg")
    write_geotiff(tmp_path / "moved.tif", np.zeros((40, 40), np.uint8), origin=(500_100.0, 5_000_000.0))
    with pytest.raises(UserError, match="moved.tif: georeferencing differs"):
        polygonize_to_file(tmp_path / "mask.tif", tmp_path / "moved.tif", tmp_path / "out.gpkg")
    write_geotiff(tmp_path / "p16.tif", np.zeros((40, 40), np.uint16))
    with pytest.raises(UserError, match="p16.tif: probability raster must be uint8"):
        polygonize_to_file(tmp_path / "mask.tif", tmp_path / "p16.tif", tmp_path / "out.gpkg")
    for ext in (".gpkg", ".geojson"):
        with pytest.raises(UserError, match=f"nowhere/out{ext}: cannot write"):
            polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "nowhere" / f"out{ext}")
    with pytest.raises(UserError, match="--min-area"):
        polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "out.gpkg", min_area_m2=-1)
    assert not (tmp_path / "out.gpkg").exists()


def test_memory_follows_the_strip_not_the_scene(tmp_path):
    import tracemalloc

    rng = np.random.default_rng(3)
    mask = np.zeros((2048, 2048), np.uint8)
    for r, c in rng.integers(0, 2000, size=(400, 2)):
        mask[r:r + 40, c:c + 30] = 1
    write_geotiff(tmp_path / "mask.tif", mask)
    write_geotiff(tmp_path / "prob.tif", np.where(mask == 1, 200, 5).astype(np.uint8), nodata=255)
    scene_bytes = mask.size * 4  # one float32 or int32 array of the whole scene: 16 MiB
    del mask
    peaks = {}
    for rows in (128, 4096):
        tracemalloc.start()
        polygonize_to_file(tmp_path / "mask.tif", tmp_path / "prob.tif", tmp_path / f"out{rows}.gpkg",
                           window_rows=rows)
        peaks[rows] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[4096] > scene_bytes  # the control: one strip = whole scene
    assert peaks[128] < scene_bytes / 2


def test_a_truncated_mask_is_a_user_error_and_leaves_nothing(tmp_path):
    import rasterio

    mask = (np.random.default_rng(0).random((1024, 512)) > 0.5).astype(np.uint8)
    profile = dict(driver="GTiff", width=512, height=1024, count=1, dtype="uint8", crs=UTM33N,
                   transform=from_origin(*ORIGIN, PIX, PIX), tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate")
    with rasterio.open(tmp_path / "full.tif", "w", **profile) as dst:
        dst.write(mask, 1)
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[:len(data) // 2])
    with pytest.raises(UserError, match=r"cut.tif: read failed at rows \d+\.\.\d+"):
        polygonize_to_file(tmp_path / "cut.tif", None, tmp_path / "out.shp", window_rows=256)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tif", "full.tif"]


def test_web_mercator_areas_are_true_ground_areas(tmp_path):
    # At 60° N a Web Mercator metre is half a ground metre: planar areas would be 4x too big.
    x0, y0 = 1_669_792.0, 8_399_737.0  # about 15° E, 60° N
    transform = from_origin(x0, y0, 1.0, 1.0)
    mask = _mask(300, 300)
    mask[50:250, 50:250] = 1
    write_geotiff(tmp_path / "mask.tif", mask, crs="EPSG:3857", transform=transform)
    polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "out.gpkg", window_rows=64)
    frame = _read(tmp_path / "out.gpkg")
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    lonlat = shapely.transform(frame.geometry[0], lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
    geodesic = abs(Geod(ellps="WGS84").geometry_area_perimeter(lonlat)[0])
    assert geodesic == pytest.approx(200 * 200 / 4, rel=0.02)
    assert frame.area_m2[0] == pytest.approx(geodesic, rel=0.01)
    assert CRS.from_user_input(frame.crs).to_epsg() == 3857


def test_us_feet_crs_areas_are_in_square_metres(tmp_path):
    mask = _mask(200, 200)
    mask[20:120, 30:130] = 1  # 100 x 100 pixels of 2 US survey feet
    write_geotiff(tmp_path / "mask.tif", mask, crs="EPSG:2263", origin=(980_000.0, 200_000.0), pixel_size=2.0)
    stats = polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "out.gpkg", min_area_m2=3000, window_rows=64)
    frame = _read(tmp_path / "out.gpkg")
    ft = 1200 / 3937  # metres per US survey foot
    assert stats["polygons"] == 1  # 200 x 200 ft = 3716 m², kept at min_area 3000 m²
    assert frame.area_m2[0] == pytest.approx((200 * ft) ** 2, rel=1e-9)


def test_wide_rasters_get_fewer_rows_per_strip(tmp_path, monkeypatch):
    import engine.vector.polygonize as polygonize
    import engine.vector.stream as stream

    monkeypatch.setattr(polygonize, "MAX_STRIP_PIXELS", 1000)
    monkeypatch.setattr(stream, "MAX_STRIP_PIXELS", 1000)
    mask = _mask(95, 100)
    mask[5:90, 40:60] = 1
    write_geotiff(tmp_path / "mask.tif", mask)
    events, seen = _recorder()
    stats = polygonize_to_file(tmp_path / "mask.tif", None, tmp_path / "out.gpkg", events=events, window_rows=1024)
    totals = {e["total"] for e in seen if e["event"] == "progress"}
    assert totals == {10}  # 10 rows of 100 pixels a strip
    assert stats["polygons"] == 1 and stats["area_m2"] == pytest.approx(85 * 20 * PIX ** 2)


def test_strip_rows_rule():
    from engine.vector.polygonize import MAX_STRIP_PIXELS, strip_rows

    assert strip_rows(1024, 4096, 512) == 1024  # as asked
    assert strip_rows(100, 4096, 512) == 100  # as asked, even inside a block row
    assert strip_rows(1024, 16384, 512) == 512  # capped at 256 rows, read one whole tile row
    assert strip_rows(1024, 16384, 1) == MAX_STRIP_PIXELS // 16384  # striped: the cap
    assert strip_rows(1024, 10 ** 6, 512) == MAX_STRIP_PIXELS // 10 ** 6  # a tile row too big
