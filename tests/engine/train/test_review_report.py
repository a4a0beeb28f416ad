"""How well the review (hard-region) score points at errors: the report's arithmetic on a
hand-made case, ``evaluate`` printing it and putting it in the JSON, and ``train`` storing it in
the best checkpoint's training summary."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.checkpoint import read_info
from engine.train.review_metrics import ReviewStats
from tests.engine.train.conftest import engine
from tests.engine.train.tiny_dataset import make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), {"train": 4, "val": 2, "test": 2}, size=64)


def test_report_on_a_hand_made_tile():
    # 100 x 100 pixels; 10 predicted 2x2 squares, one of them false; the review score is 0.9 on
    # the 50 wrong pixels (the false square + 46 missed pixels), 0.5 on the false square, 0 elsewhere.
    pred = np.zeros((100, 100), bool)
    label = np.zeros((100, 100), bool)
    review = np.zeros((100, 100), np.float32)
    for k in range(10):
        pred[10 * k:10 * k + 2, 0:2] = True
    label[:] = pred
    label[0:2, 0:2] = False  # square 0 is a false positive: 4 wrong pixels
    label[50, 4:50] = True  # 46 missed pixels
    review[label != pred] = 0.9
    stats = ReviewStats()
    stats.update(pred, label, review)
    report = stats.result()
    assert report["pixels"] == 10_000 and report["errors"] == 50
    top1 = report["top_1pct"]  # the 50 scored pixels + 50 of the 9950 tied at 0 (pro rata: no error among them)
    assert top1["fraction"] == 0.01 and top1["error_rate"] == 0.5 and top1["error_share"] == 1.0
    assert top1["rest_error_rate"] == 0.0 and top1["ratio"] is None
    assert report["top_5pct"]["error_rate"] == 0.1
    polygons = report["polygons"]
    assert polygons == {"count": 10, "false_positives": 1, "top_fraction": 0.1, "top_fp_share": 1.0,
                        "rest_fp_share": 0.0}


def test_evaluate_prints_the_review_report_and_puts_it_in_the_json(data, tmp_path):
    import torch

    from engine.checkpoint import ModelInfo, save_checkpoint
    from engine.model import HRMNet

    torch.manual_seed(0)
    model = tmp_path / "m.safetensors"
    save_checkpoint(model, HRMNet(), ModelInfo(tile_size=64, overlap=16))
    p = engine("evaluate", "--data", str(data), "--split", "test", "--model", str(model), "--json", "--device", "cpu")
    assert p.returncode == 0, p.stderr
    review = json.loads(p.stdout)["review"]
    for key in ("top_1pct", "top_5pct"):
        assert set(review[key]) == {"fraction", "score_from", "error_rate", "rest_error_rate", "ratio", "error_share"}
        assert 0 <= review[key]["error_share"] <= 1
    assert set(review["polygons"]) == {"count", "false_positives", "top_fraction", "top_fp_share", "rest_fp_share"}
    p = engine("evaluate", "--data", str(data), "--split", "test", "--model", str(model), "--device", "cpu",
               "--progress", "none")
    assert p.returncode == 0, p.stderr
    assert "top 1 % of pixels: error rate" in p.stdout and "with the highest review" in p.stdout


def test_train_stores_the_review_report_with_the_best_model(data, tmp_path):
    run = tmp_path / "run"
    p = engine("train", "--data", str(data), "--out", str(run), "--steps", "1", "--batch-size", "2", "--crop", "32",
               "--val-every", "1", "--device", "cpu", "--progress", "none")
    assert p.returncode == 0, p.stderr
    summary = read_info(run / "best.safetensors").training
    assert set(summary["val_review"]) >= {"top_1pct", "top_5pct", "polygons", "errors", "pixels"}
