"""hrmnet:detectchangessheets in a real QGIS 3.22, against a stand-in ``sheets`` engine command.

The stand-in reads the sheet list with the real engine code (engine.sheets.index, in its own
process), so selected features, layer filters, CSV files and layers that are not files are
checked as the engine sees them; it writes a status layer and a merged layer like the real
command, exits 3 when told some sheets failed, and waits when told to, for Cancel.
"""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from .conftest import QGIS_PROCESS, headless_env

pytestmark = pytest.mark.qgis

FAKE_SHEETS = r'''
import json, os, sys, time
from pathlib import Path

args = sys.argv[1:]
Path(os.environ["FAKE_ARGS"]).write_text(json.dumps(args))


def opt(name):
    return args[args.index(name) + 1] if name in args else None


def emit(**event):
    print(json.dumps(event), flush=True)


from engine.errors import UserError
from engine.sheets.index import read_sheets

try:
    specs, skipped = read_sheets(opt("--sheets"), opt("--id-field"), opt("--before"), opt("--after"),
                                 "--skip-missing" in args)
except UserError as exc:
    emit(event="error", message=str(exc))
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
mode = os.environ.get("FAKE_MODE", "ok")
run = Path(opt("--run"))
emit(event="start", device="cpu", precision="fp32", sheets=len(specs))
emit(event="progress", done=0, total=len(specs), stage="sheets")
emit(event="progress", done=0, total=4 * len(specs), stage="tiles")
for k, spec in enumerate(specs):
    (run / "sheets" / spec.id).mkdir(parents=True, exist_ok=True)
    (run / "sheets" / spec.id / "done.json").write_text("{}")
    emit(event="sheet", id=spec.id, status="done", seconds=0.25, polygons=1, message="")
    emit(event="progress", done=k + 1, total=len(specs), stage="sheets")
    emit(event="progress", done=4 * (k + 1), total=4 * len(specs), stage="tiles")
    if mode == "slow":
        time.sleep(120)
import geopandas as gpd
from shapely.geometry import box

failed = 1 if mode == "partial" else 0
ids = [s.id for s in specs]
geoms = [box(*s.extent) if s.extent else box(500000 + 10 * k, 5000000, 500010 + 10 * k, 5000010)
         for k, s in enumerate(specs)]
status = ["failed" if k < failed else "done" for k in range(len(ids))]
gpd.GeoDataFrame({"id": ids, "status": status, "message": [""] * len(ids)}, geometry=geoms,
                 crs="EPSG:32633").to_file(run / "status.gpkg", layer="status")
done = [k for k in range(len(ids)) if status[k] == "done"]
gpd.GeoDataFrame({"id": list(range(1, len(done) + 1)), "area_m2": [1.0] * len(done), "sheet": [ids[k] for k in done]},
                 geometry=[geoms[k].buffer(-1) for k in done], crs="EPSG:32633").to_file(opt("--out-vector"))
emit(event="done", outputs={"vector": opt("--out-vector")}, stats={"sheets": len(ids), "failed": failed})
sys.exit(3 if failed else 0)
'''

WRAPPER = """#!/bin/bash
# The engine's Python, except that `-m engine sheets` runs the stand-in.
if [[ "$1" == "-m" && "$2" == "engine" && "$3" == "sheets" ]]; then
  shift 3; exec {python} {fake} "$@"
fi
exec {python} "$@"
"""


@pytest.fixture()
def fake_engine(tmp_path, monkeypatch):
    """HRMNET_PYTHON -> a wrapper running the stand-in; returns a function giving the last argv."""
    folder = tmp_path / "fake"
    folder.mkdir()
    (folder / "fake_sheets.py").write_text(FAKE_SHEETS)
    wrapper = folder / "python"
    wrapper.write_text(WRAPPER.format(python=sys.executable, fake=folder / "fake_sheets.py"))
    wrapper.chmod(0o755)
    monkeypatch.setenv("HRMNET_PYTHON", str(wrapper))
    monkeypatch.setenv("FAKE_ARGS", str(folder / "args.json"))
    monkeypatch.setenv("FAKE_MODE", "ok")

    def last_args() -> dict:
        args = json.loads((folder / "args.json").read_text())
        return {"argv": args, **{a: b for a, b in zip(args, args[1:]) if a.startswith("--")}}

    return last_args


def _alg():
    from qgis.core import QgsApplication

    return QgsApplication.processingRegistry().createAlgorithmById("hrmnet:detectchangessheets")


def _grid(scenes, path: Path) -> Path:
    """A sheet index GeoPackage in UTM 33N: one square per scene with fields sheet, before, after."""
    from qgis.core import (QgsCoordinateTransformContext, QgsFeature, QgsGeometry, QgsRectangle, QgsVectorFileWriter,
                           QgsVectorLayer)

    mem = QgsVectorLayer("Polygon?crs=EPSG:32633&field=sheet:string&field=before:string&field=after:string",
                         "grid", "memory")
    features = []
    for k, (before, after, _) in enumerate(scenes):
        f = QgsFeature(mem.fields())
        f.setAttributes([f"S{k}", str(before), str(after)])
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(500000 + 64 * k, 5000000, 500064 + 64 * k, 5000064)))
        features.append(f)
    mem.dataProvider().addFeatures(features)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", "grid"
    error = QgsVectorFileWriter.writeAsVectorFormatV2(mem, str(path), QgsCoordinateTransformContext(), options)
    assert error[0] == QgsVectorFileWriter.NoError, error
    return path


class Feedback:
    """A QgsProcessingFeedback that keeps the warnings and errors (made lazily: QGIS must run first)."""

    def __new__(cls):
        from qgis.core import QgsProcessingFeedback

        class _Feedback(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.warnings, self.errors, self.infos = [], [], []

            def pushWarning(self, text):  # noqa: N802
                self.warnings.append(text)

            def pushInfo(self, text):  # noqa: N802
                self.infos.append(text)

            def reportError(self, text, fatalError=False):  # noqa: N802, N803
                self.errors.append(text)

        return _Feedback()


def _context(layer=None):
    from qgis.core import QgsProcessingContext, QgsProject

    project = QgsProject.instance()
    project.clear()
    if layer is not None:
        project.addMapLayer(layer)
    context = QgsProcessingContext()
    context.setProject(project)
    return context


def _params(tmp_path, **extra) -> dict:
    params = {"MODEL": str(tmp_path / "m.safetensors"), "RUN_FOLDER": str(tmp_path / "run"),
              "OUTPUT_POLYGONS": str(tmp_path / "changes.gpkg"), "DEVICE": 1}
    params.update(extra)
    return params


def test_selected_features_only_reach_the_engine_and_outputs_load_styled(qgis_app, fake_engine, scenes, tmp_path):
    from processing.gui.Postprocessing import handleAlgorithmResults
    from qgis.core import (QgsCategorizedSymbolRenderer, QgsProcessingFeatureSourceDefinition,
                           QgsProcessingOutputLayerDefinition, QgsProject, QgsVectorLayer)

    grid = QgsVectorLayer(f"{_grid(scenes, tmp_path / 'grid.gpkg')}|layername=grid", "grid", "ogr")
    assert grid.isValid()
    context = _context(grid)
    grid.selectByExpression("\"sheet\" IN ('S0', 'S2')")
    params = _params(tmp_path, SHEETS=QgsProcessingFeatureSourceDefinition(grid.id(), True), ID_FIELD="sheet",
                     OUTPUT_POLYGONS=QgsProcessingOutputLayerDefinition(str(tmp_path / "changes.gpkg"),
                                                                        QgsProject.instance()))
    feedback = Feedback()
    percents = []
    feedback.progressChanged.connect(percents.append)
    results, ok = _alg().run(params, context, feedback)
    assert ok, feedback.errors
    assert percents == sorted(percents) and percents[-1] == pytest.approx(100.0)  # one bar, over the tiles
    assert any(line.startswith("sheets: 2/2 sheets (100 %)") for line in feedback.infos)
    args = fake_engine()
    assert args["--sheets"] == f"{tmp_path / 'grid.gpkg'}|layername=grid|subset=\"sheet\" IN ('S0', 'S2')"
    assert args["--id-field"] == "sheet" and args["--run"] == str(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run" / "sheets").iterdir()) == ["S0", "S2"]
    assert results["OUTPUT_STATUS"] == str(tmp_path / "run" / "status.gpkg") and results["FAILED"] == 0
    assert "sheet S2: done in 0.2 s, 1 polygon(s)" in feedback.infos

    handleAlgorithmResults(_alg(), context, feedback, showResults=False, parameters=params)
    layers = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    assert "run: sheet status" in layers and "changes" in layers  # the polygons: named after their file
    status = layers["run: sheet status"]
    assert isinstance(status.renderer(), QgsCategorizedSymbolRenderer)
    assert status.renderer().classAttribute() == "status"
    assert {c.value() for c in status.renderer().categories()} >= {"done", "failed", "skipped", "pending"}
    assert layers["changes"].featureCount() == 2


def test_a_layer_filter_and_templates_relative_to_the_index(qgis_app, fake_engine, scenes, tmp_path):
    from qgis.core import QgsVectorLayer

    path = _grid(scenes, tmp_path / "grid.gpkg")
    # the templates point at the scenes relative to the index's folder
    rel = Path(*[".."] * len(tmp_path.parts[1:])) / scenes[0][0].parent.relative_to("/")
    grid = QgsVectorLayer(f"{path}|layername=grid", "grid", "ogr")
    grid.setSubsetString("\"sheet\" <> 'S1'")
    context = _context(grid)
    params = _params(tmp_path, SHEETS=grid.id(), ID_FIELD="sheet", BEFORE=f"{rel}/{scenes[0][0].name}",
                     AFTER="{after}", WORKERS=2)
    feedback = Feedback()
    results, ok = _alg().run(params, context, feedback)
    assert ok, feedback.errors
    args = fake_engine()
    assert args["--sheets"].endswith("|subset=\"sheet\" <> 'S1'")
    assert args["--before"] == f"{rel}/{scenes[0][0].name}" and args["--after"] == "{after}"
    assert args["--workers"] == "2" and "--scheduler" not in args
    assert sorted(p.name for p in (tmp_path / "run" / "sheets").iterdir()) == ["S0", "S2"]


def test_a_csv_sheet_list_file_and_a_memory_layer(qgis_app, fake_engine, scenes, tmp_path):
    from qgis.core import QgsFeature, QgsVectorLayer

    csv_path = tmp_path / "list.csv"
    csv_path.write_text("id,before,after\n" + "".join(f"A{k},{b},{a}\n" for k, (b, a, _) in enumerate(scenes)))
    results, ok = _alg().run(_params(tmp_path, SHEETS_FILE=str(csv_path)), _context(), None)
    assert ok, results
    assert fake_engine()["--sheets"] == str(csv_path)
    assert sorted(p.name for p in (tmp_path / "run" / "sheets").iterdir()) == ["A0", "A1", "A2"]

    # A layer that is not a file: saved into the run folder (selected features only), then run.
    mem = QgsVectorLayer("None?field=id:string&field=before:string&field=after:string", "list", "memory")
    rows = []
    for k, (before, after, _) in enumerate(scenes):
        f = QgsFeature(mem.fields())
        f.setAttributes([f"M{k}", str(before), str(after)])
        rows.append(f)
    mem.dataProvider().addFeatures(rows)
    context = _context(mem)
    mem.selectByExpression("\"id\" = 'M1'")
    from qgis.core import QgsProcessingFeatureSourceDefinition

    run2 = tmp_path / "run2"
    results, ok = _alg().run(_params(tmp_path, SHEETS=QgsProcessingFeatureSourceDefinition(mem.id(), True),
                                     RUN_FOLDER=str(run2)), context, None)
    assert ok, results
    assert fake_engine()["--sheets"] == str(run2 / "sheets-from-qgis.gpkg")
    assert [p.name for p in (run2 / "sheets").iterdir()] == ["M1"]


def test_a_csv_layer_with_selected_rows(qgis_app, fake_engine, scenes, tmp_path):
    """A CSV added as a delimited-text layer (no geometry), two rows selected."""
    from qgis.core import QgsProcessingFeatureSourceDefinition, QgsVectorLayer

    (tmp_path / "list.csv").write_text("id;before;after\n" + "".join(
        f"C{k};{b};{a}\n" for k, (b, a, _) in enumerate(scenes)))
    layer = QgsVectorLayer(f"file://{tmp_path / 'list.csv'}?type=csv&delimiter=;&geomType=none", "list",
                           "delimitedtext")
    assert layer.isValid() and layer.featureCount() == 3
    context = _context(layer)
    layer.selectByExpression("\"id\" <> 'C1'")
    feedback = Feedback()
    results, ok = _alg().run(_params(tmp_path, SHEETS=QgsProcessingFeatureSourceDefinition(layer.id(), True)),
                             context, feedback)
    assert ok, feedback.errors
    assert fake_engine()["--sheets"] == f"{tmp_path / 'list.csv'}|subset=\"id\" IN ('C0', 'C2')"
    assert sorted(p.name for p in (tmp_path / "run" / "sheets").iterdir()) == ["C0", "C2"]
    # a filter on the layer (a QGIS expression): the rows it keeps are saved to the run folder
    layer.setSubsetString("\"id\" = 'C1'")
    results, ok = _alg().run(_params(tmp_path, SHEETS=layer.id(), RUN_FOLDER=str(tmp_path / "run2")), context,
                             feedback)
    assert ok, feedback.errors
    assert fake_engine()["--sheets"] == str(tmp_path / "run2" / "sheets-from-qgis.gpkg")
    assert [p.name for p in (tmp_path / "run2" / "sheets").iterdir()] == ["C1"]


def test_some_sheets_failed_is_a_result_with_a_warning(qgis_app, fake_engine, scenes, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "partial")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("id,before,after\n" + "".join(f"A{k},{b},{a}\n" for k, (b, a, _) in enumerate(scenes)))
    feedback = Feedback()
    results, ok = _alg().run(_params(tmp_path, SHEETS_FILE=str(csv_path)), _context(), feedback)
    assert ok, results
    assert results["FAILED"] == 1
    assert (tmp_path / "changes.gpkg").is_file()  # kept: the other sheets' polygons
    assert any("Some sheets failed" in w for w in feedback.warnings)


def test_cancel_keeps_the_run_folder_for_resuming(qgis_app, fake_engine, scenes, tmp_path, monkeypatch):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    monkeypatch.setenv("FAKE_MODE", "slow")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("id,before,after\n" + "".join(f"A{k},{b},{a}\n" for k, (b, a, _) in enumerate(scenes)))
    feedback = QgsProcessingFeedback()
    done_marker = tmp_path / "run" / "sheets" / "A0" / "done.json"

    def cancel_when_a_sheet_is_done():
        for _ in range(600):
            if done_marker.exists():
                break
            threading.Event().wait(0.1)
        feedback.cancel()

    threading.Thread(target=cancel_when_a_sheet_is_done, daemon=True).start()
    alg = _alg()
    params = _params(tmp_path, SHEETS_FILE=str(csv_path))
    context = _context()
    assert alg.prepareAlgorithm(params, context, feedback)
    with pytest.raises(QgsProcessingException, match="finished sheets are kept in the run folder; run again"):
        alg.processAlgorithm(params, context, feedback)
    assert done_marker.is_file()  # the finished sheet is still there
    assert not (tmp_path / "changes.gpkg").exists()


@pytest.mark.parametrize("extra, message", [
    ({}, '"Sheets": choose a sheet index layer or a sheet list file'),  # the labels on screen
    ({"SHEETS_FILE": "/nope/list.csv"}, "/nope/list.csv: no such file"),
    ({"SHEETS_FILE": "LIST", "WORKERS": 2, "SCHEDULER": "tcp://10.0.0.5:8786"},
     '"Worker processes" and "Dask scheduler: address"'),
    ({"SHEETS_FILE": "LIST", "OUTPUT_POLYGONS": "/tmp/x.kml"}, r"x\.kml: unsupported vector format"),
])
def test_parameter_mistakes_in_one_line(qgis_app, tmp_path, extra, message):
    (tmp_path / "list.csv").write_text("id,before,after\n")
    extra = {k: (str(tmp_path / "list.csv") if v == "LIST" else v) for k, v in extra.items()}
    ok, text = _alg().checkParameterValues(_params(tmp_path, **extra), _context())
    assert not ok
    import re

    assert re.search(message, text), text


def test_scheduler_address_or_file_and_advanced_options(qgis_app, tmp_path):
    from qgis.core import QgsProcessingContext

    (tmp_path / "list.csv").write_text("id,before,after\n")
    (tmp_path / "scheduler.json").write_text("{}")
    base = _params(tmp_path, SHEETS_FILE=str(tmp_path / "list.csv"), THRESHOLD=0.4, MIN_AREA=20, SIMPLIFY=0.5,
                   SKIP_MISSING=True, RESTART=True, BANDS_BEFORE="3, 2, 1", TILE_SIZE=256, OVERLAP=64,
                   BATCH_SIZE=4, DEVICE=2, PRECISION=2)
    args, outputs, export = _alg().engine_args({**base, "SCHEDULER": "tcp://10.0.0.5:8786"}, QgsProcessingContext())
    opts = dict(zip(args, args[1:]))
    assert opts["--scheduler"] == "tcp://10.0.0.5:8786" and not export
    assert opts["--threshold"] == "0.4" and float(opts["--min-area"]) == 20 and float(opts["--simplify"]) == 0.5
    assert opts["--bands-before"] == "3,2,1" and "--bands-after" not in args
    assert opts["--tile-size"] == "256" and opts["--overlap"] == "64" and opts["--batch-size"] == "4"
    assert opts["--device"] == "cuda" and opts["--precision"] == "bf16"
    assert "--skip-missing" in args and "--restart" in args and "--overwrite" in args
    assert outputs == {"OUTPUT_POLYGONS": str(tmp_path / "changes.gpkg"), "RUN_FOLDER": str(tmp_path / "run")}
    args, _, _ = _alg().engine_args({**base, "SCHEDULER": str(tmp_path / "scheduler.json")}, QgsProcessingContext())
    assert dict(zip(args, args[1:]))["--scheduler-file"] == str(tmp_path / "scheduler.json")


@pytest.mark.slow
def test_qgis_process_runs_sheets_from_a_csv(built_plugin, fake_engine, scenes, tmp_path):
    import os
    import subprocess

    csv_path = tmp_path / "list.csv"
    csv_path.write_text("id,before,after\n" + "".join(f"A{k},{b},{a}\n" for k, (b, a, _) in enumerate(scenes)))
    env = headless_env(built_plugin)
    enabled = subprocess.run([QGIS_PROCESS, "plugins", "enable", "hrmnet_qgis"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    run = subprocess.run([QGIS_PROCESS, "run", "hrmnet:detectchangessheets", "--json", "--",
                          "SHEETS_FILE=list.csv", "MODEL=m.safetensors", "RUN_FOLDER=run", "OUTPUT_POLYGONS=out.shp"],
                         env={**env, "HRMNET_PYTHON": os.environ["HRMNET_PYTHON"]}, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads(run.stdout[run.stdout.index("{"):])["results"]
    assert os.path.samefile(result["OUTPUT_STATUS"], tmp_path / "run" / "status.gpkg")
    assert (tmp_path / "out.shp").is_file() and (tmp_path / "out.dbf").is_file()
    assert fake_engine()["--sheets"] == str(csv_path)


REAL_CLI = Path(__file__).resolve().parents[2] / "engine" / "commands" / "sheets.py"


def _cut_into_sheets(scene, folder: Path) -> Path:
    """The scene's before and after cut into 2x2 sheets of 64 px (gdal_translate), and a
    gdaltindex sheet index of the before sheets (field ``location``); returns the index."""
    import subprocess

    for date, raster in (("before", scene[0]), ("after", scene[1])):
        (folder / date).mkdir(parents=True)
        for row in range(2):
            for col in range(2):
                subprocess.run(["gdal_translate", "-q", "-srcwin", str(64 * col), str(64 * row), "64", "64",
                                str(raster), str(folder / date / f"r{row}c{col}.tif")], check=True)
    index = folder / "index.gpkg"
    # relative locations (before/r0c0.tif): resolved against the index's folder
    subprocess.run(["gdaltindex", str(index), *sorted(f"before/{p.name}" for p in (folder / "before").glob("*.tif"))],
                   check=True, cwd=folder, capture_output=True)
    return index


@pytest.mark.slow
@pytest.mark.skipif(not REAL_CLI.is_file(), reason="python -m engine sheets is not there yet")
def test_real_engine_on_selected_sheets_then_resume(qgis_app, scenes, model_path, threshold, tmp_path):
    """The real `sheets` command with the model: three of four sheets selected, a gdaltindex index
    with the after images found by template; a second run resumes (nothing computed again)."""
    from qgis.core import QgsProcessingFeatureSourceDefinition, QgsVectorLayer

    index = _cut_into_sheets(scenes[0], tmp_path / "ortho")
    grid = QgsVectorLayer(str(index), "index", "ogr")
    assert grid.isValid() and grid.featureCount() == 4
    context = _context(grid)
    grid.selectByExpression("\"location\" NOT LIKE '%r1c1.tif'")
    params = _params(tmp_path, SHEETS=QgsProcessingFeatureSourceDefinition(grid.id(), True), BEFORE="{location}",
                     AFTER="after/{id}.tif", MODEL=str(model_path), THRESHOLD=threshold, TILE_SIZE=64, OVERLAP=16,
                     WORKERS=1)
    feedback = Feedback()
    results, ok = _alg().run(params, context, feedback)
    assert ok, feedback.errors
    status = QgsVectorLayer(results["OUTPUT_STATUS"], "status", "ogr")
    assert sorted((f["id"], f["status"]) for f in status.getFeatures()) == [
        ("r0c0", "done"), ("r0c1", "done"), ("r1c0", "done")]
    polygons = QgsVectorLayer(results["OUTPUT_POLYGONS"], "changes", "ogr")
    assert polygons.isValid() and "sheet" in polygons.fields().names()
    assert {f["sheet"] for f in polygons.getFeatures()} <= {"r0c0", "r0c1", "r1c0"}
    assert results["FAILED"] == 0

    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "sheets").rglob("*") if p.is_file()}
    feedback = Feedback()
    results, ok = _alg().run(params, context, feedback)
    assert ok, feedback.errors
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "sheets").rglob("*") if p.is_file()} == stamp


def _marked_processes(mark: str) -> list:
    """Live processes whose environment carries ``HRMNET_TEST_MARK=mark`` (this test's engine and workers)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("HRMNET_TEST_MARK") == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(" ".join(proc.cmdline())[:200])
        except (psutil.Error, OSError):
            pass
    return found


@pytest.mark.slow
@pytest.mark.skipif(not REAL_CLI.is_file(), reason="python -m engine sheets is not there yet")
def test_real_engine_cancel_on_two_dask_workers_leaves_a_resumable_run(qgis_app, model_path, threshold, tmp_path,
                                                                       monkeypatch):
    """Cancel while 2 Dask worker processes compute 16 sheets: the engine and its workers are gone,
    the finished sheets stay, the status layer says which are not computed yet."""
    import subprocess
    import uuid

    from qgis.core import QgsProcessingException, QgsVectorLayer

    from .conftest import engine

    mark = uuid.uuid4().hex
    monkeypatch.setenv("HRMNET_TEST_MARK", mark)
    engine("synth", "--out", str(tmp_path / "scene"), "--scenes", "1", "--size", "512", "--progress", "none")
    rows = ["id,before,after"]
    for date in ("before", "after"):
        (tmp_path / date).mkdir()
        for r in range(4):
            for c in range(4):
                subprocess.run(["gdal_translate", "-q", "-srcwin", str(128 * c), str(128 * r), "128", "128",
                                str(tmp_path / "scene" / f"scene_000_{date}.tif"), str(tmp_path / date / f"{r}{c}.tif")],
                               check=True)
    rows += [f"s{r}{c},before/{r}{c}.tif,after/{r}{c}.tif" for r in range(4) for c in range(4)]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")

    feedback = Feedback()
    sheets = tmp_path / "run" / "sheets"

    def cancel_after_the_first_sheet():
        for _ in range(1800):
            if sheets.is_dir() and any(sheets.glob("*/done.json")):
                break
            threading.Event().wait(0.1)
        feedback.cancel()

    threading.Thread(target=cancel_after_the_first_sheet, daemon=True).start()
    alg, context = _alg(), _context()
    params = _params(tmp_path, SHEETS_FILE=str(tmp_path / "list.csv"), MODEL=str(model_path), THRESHOLD=threshold,
                     TILE_SIZE=64, OVERLAP=16, WORKERS=2)
    assert alg.prepareAlgorithm(params, context, feedback)
    with pytest.raises(QgsProcessingException, match="finished sheets are kept in the run folder"):
        alg.processAlgorithm(params, context, feedback)
    done = sorted(p.parent.name for p in sheets.glob("*/done.json"))
    assert 1 <= len(done) < 16
    assert _marked_processes(mark) == []  # no engine or Dask worker left behind
    status = {f["id"]: f["status"] for f in QgsVectorLayer(str(tmp_path / "run" / "status.gpkg"), "s", "ogr").getFeatures()}
    # a sheet finished on disk whose result was still on its way may show as pending until the next run
    assert set(k for k, v in status.items() if v == "done") <= set(done)
    assert len(status) == 16 and set(status.values()) <= {"done", "pending"}
    assert not (tmp_path / "changes.gpkg").exists()
