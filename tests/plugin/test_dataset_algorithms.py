"""hrmnet:preparedataset, hrmnet:evaluate and hrmnet:train through Processing in a real QGIS 3.22."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis


def test_prepare_from_a_pair_and_labels(qgis_app, scenes, tmp_path):
    import processing

    before, after, labels = scenes[0]
    out = tmp_path / "dataset"
    result = processing.run("hrmnet:preparedataset", {
        "BEFORE": str(before), "AFTER": str(after), "LABELS": str(labels), "TILE_SIZE": 64,
        "SPLIT": "0.5,0.5,0", "OUTPUT": str(out)})
    assert result["OUTPUT"] == str(out)
    info = json.loads((out / "dataset.json").read_text())
    assert result["DATASET_JSON"] == str(out / "dataset.json")
    assert "32633" in json.dumps(info.get("crs"))
    assert list((out / "train" / "A").glob("*.tif")) or list((out / "val" / "A").glob("*.tif"))
    assert [p.name for p in tmp_path.iterdir()] == ["dataset"], "no staging folder left"


def test_prepare_needs_a_pair_or_a_sheets_table(qgis_app, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="SHEETS CSV"):
        processing.run("hrmnet:preparedataset", {"TILE_SIZE": 64, "OUTPUT": str(tmp_path / "d")})


def test_evaluate_reports_the_metrics_as_outputs(qgis_app, dataset, model_path, tmp_path):
    import processing

    maps = tmp_path / "maps"
    result = processing.run("hrmnet:evaluate", {"DATA": str(dataset), "SPLIT": 0, "MODEL": str(model_path),
                                                 "DEVICE": 1, "OUTPUT": str(maps)})
    for key in ("KAPPA", "IOU", "F1", "PRECISION", "RECALL", "OA"):
        assert isinstance(result[key], float) and -1.0 <= result[key] <= 1.0, key
    assert 0.0 <= result["OA"] <= 1.0
    assert result["OUTPUT"] == str(maps) and list(maps.glob("*.png"))
    # Running again into the same folder: refused unless the maps may be replaced.
    from qgis.core import QgsProcessingException

    params = {"DATA": str(dataset), "SPLIT": 0, "MODEL": str(model_path), "DEVICE": 1, "OUTPUT": str(maps)}
    with pytest.raises(QgsProcessingException, match="exists"):
        processing.run("hrmnet:evaluate", params)
    assert processing.run("hrmnet:evaluate", dict(params, OVERWRITE=True))["OUTPUT"] == str(maps)


def test_train_parameters_map_to_the_cli_options(qgis_app, dataset, tmp_path):
    from qgis.core import QgsApplication, QgsProcessingContext

    from hrmnet_qgis.algorithms.train import train_outputs

    alg = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:train")
    params = {"DATA": str(dataset), "OUTPUT": str(tmp_path / "run"), "STEPS": 10, "BATCH_SIZE": 2, "LR": 1e-3,
              "DEVICE": 1, "VAL_EVERY": 0, "INIT": str(tmp_path / "init.safetensors"), "RESUME": True}
    args, out = alg.engine_args(params, QgsProcessingContext())
    opts = dict(zip(args[::2], args[1::2]))
    assert out == str(tmp_path / "run")
    assert opts["--data"] == str(dataset) and opts["--out"] == out and opts["--steps"] == "10"
    assert opts["--batch-size"] == "2" and float(opts["--lr"]) == 1e-3 and opts["--device"] == "cpu"
    assert opts["--val-every"] == "0" and opts["--init"] == str(tmp_path / "init.safetensors")
    assert "--resume" in args and "--overwrite" not in args and "--crop" not in args
    assert "--backbone" not in args  # resuming: the run's own weights
    fresh = dict(params, RESUME=False, INIT=None)
    assert alg.engine_args(fresh, QgsProcessingContext())[0][-2:] == ["--backbone", "imagenet"]
    offline = dict(fresh, IMAGENET=False)
    assert "--backbone" not in alg.engine_args(offline, QgsProcessingContext())[0]
    # The done event of `engine train` → algorithm outputs.
    done = {"outputs": {"best": f"{out}/best.safetensors", "last": f"{out}/last.safetensors",
                        "metrics": f"{out}/metrics.csv"},
            "stats": {"steps": 10, "best_step": 10, "best_val": {"f1": 0.25, "iou": 0.1}}}
    outputs = train_outputs(out, done)
    assert outputs["BEST_MODEL"] == f"{out}/best.safetensors" and outputs["BEST_F1"] == 0.25


def _polygon_layer(name: str, crs: str, rects: list) -> "QgsVectorLayer":
    """A memory polygon layer in the project, one rectangle (xmin, ymin, xmax, ymax) a feature."""
    from qgis.core import QgsFeature, QgsGeometry, QgsProject, QgsRectangle, QgsVectorLayer

    layer = QgsVectorLayer(f"Polygon?crs={crs}", name, "memory")
    feats = []
    for r in rects:
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(*r)))
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    layer.updateExtents()
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_prepare_with_a_labelled_area_from_the_selected_features_of_a_project_layer(qgis_app, scenes, tmp_path):
    import processing
    from qgis.core import QgsProcessingFeatureSourceDefinition, QgsRasterLayer

    before, after, labels = scenes[0]
    ext = QgsRasterLayer(str(before), "b").extent()
    x0, y1 = ext.xMinimum(), ext.yMaximum()
    px = ext.width() / 128
    # two areas: the top-left 64x64 px quadrant (selected) and the bottom-right one (not selected)
    layer = _polygon_layer("checked", "EPSG:32633", [(x0, y1 - 64 * px, x0 + 64 * px, y1),
                                                     (x0 + 64 * px, y1 - 128 * px, x0 + 128 * px, y1 - 64 * px)])
    layer.selectByIds([1])  # memory layer feature ids start at 1
    out = tmp_path / "dataset"
    processing.run("hrmnet:preparedataset", {
        "BEFORE": str(before), "AFTER": str(after), "LABELS": str(labels), "TILE_SIZE": 64, "SPLIT": "1,0,0",
        "LABELLED_AREA": QgsProcessingFeatureSourceDefinition(layer.id(), True), "OUTPUT": str(out)})
    info = json.loads((out / "dataset.json").read_text())
    assert info["label"]["labelled"]["labelled"] == 255
    assert (out / "train" / "list" / "train.txt").read_text().split() == [f"{before.stem.replace('_before', '')}_0_0.tif"]
    assert list((out / "train" / "labelled").glob("*.tif"))


def test_prepare_parameters_for_footprints_an_extent_and_chosen_sheets(qgis_app, scenes, tmp_path):
    from qgis.core import (QgsApplication, QgsCoordinateReferenceSystem, QgsProcessingContext,
                           QgsProcessingException, QgsProject, QgsReferencedRectangle, QgsRectangle)

    before, after, _ = scenes[0]
    b = _polygon_layer("footprints 2019", "EPSG:32633", [(0, 0, 10, 10)])
    a = _polygon_layer("footprints 2023", "EPSG:32633", [(0, 0, 10, 10), (20, 20, 30, 30)])
    alg = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:preparedataset")
    area = QgsReferencedRectangle(QgsRectangle(1, 2, 3, 4), QgsCoordinateReferenceSystem("EPSG:32633"))
    params = {"BEFORE": str(before), "AFTER": str(after), "FOOTPRINTS_BEFORE": b.id(), "FOOTPRINTS_AFTER": a.id(),
              "FOOTPRINT_TOLERANCE": 0.5, "LABELLED_EXTENT": area, "VAL_SHEETS": "m1, m2", "GSD": 0.25,
              "TILE_SIZE": 64, "OUTPUT": str(tmp_path / "d")}
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())  # the layers of the project, as in the dialog
    args, _ = alg.engine_args(params, context)
    opts = dict(zip(args[::2], args[1::2]))
    assert "--labels" not in args and opts["--footprint-tolerance"] == "0.5"
    for key in ("--footprints-before", "--footprints-after"):  # memory layers saved for the engine
        assert opts[key].endswith(".gpkg") and Path(opts[key]).is_file()
    assert opts["--labelled-area"] == "1.0,2.0,3.0,4.0,EPSG:32633"
    assert opts["--val"] == "m1,m2" and opts["--gsd"] == "0.25"
    with pytest.raises(QgsProcessingException, match="both building footprint"):
        alg.engine_args(dict(params, FOOTPRINTS_AFTER=None), context)


def test_prepare_parameters_left_null_by_the_dialog_add_no_option(qgis_app, scenes, tmp_path):
    from qgis.core import QgsApplication, QgsProcessingContext
    from qgis.PyQt.QtCore import QVariant

    before, after, labels = scenes[0]
    alg = QgsApplication.processingRegistry().createAlgorithmById("hrmnet:preparedataset")
    params = {"BEFORE": str(before), "AFTER": str(after), "LABELS": str(labels), "TILE_SIZE": 64,
              "GSD": QVariant(), "LABELLED_EXTENT": QVariant(), "VAL_SHEETS": QVariant(), "OUTPUT": str(tmp_path / "d")}
    args, _ = alg.engine_args(params, QgsProcessingContext())
    assert not {"--gsd", "--labelled-area", "--val"} & set(args), args
