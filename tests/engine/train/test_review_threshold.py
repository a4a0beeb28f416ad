"""The "look here" threshold: the measurement and the selection rule on a hand-made tile, and
``train`` storing the threshold it measured on the validation split in best.safetensors."""
from __future__ import annotations

import numpy as np
import pytest

from engine.checkpoint import ModelInfo, load_model, read_info
from engine.train.review_threshold import GRID, ThresholdStats, choose_threshold
from tests.engine.train.conftest import engine
from tests.engine.train.tiny_dataset import make_dataset


def _tile() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One 100x100 tile: a detected square with a hot outline and a missed row next to it, two
    missed changes A (score 0.45) and B (score 0.2) and a hot region C (0.25) that holds no change."""
    pred = np.zeros((100, 100), bool)
    label = np.zeros((100, 100), bool)
    review = np.zeros((100, 100), np.float32)
    pred[10:20, 10:20] = True
    review[9:21, 9:21] = 0.9  # the outline touches the change: never an area
    label[10:21, 10:20] = True  # row 20 missed, but it touches the change: not a missed change
    label[40:44, 40:44] = True  # missed change A
    review[38:46, 38:46] = 0.45
    label[70:74, 70:74] = True  # missed change B
    review[68:76, 68:76] = 0.2
    review[5:8, 60:70] = 0.25  # C: hot, nothing missed
    return pred, label, review


def test_measurement_and_rule_on_a_hand_made_tile():
    stats = ThresholdStats(grid=(0.1, 0.2, 0.3, 0.4, 0.5))
    stats.update(*_tile())
    rows = {r["threshold"]: r for r in stats.table()}
    assert rows[0.1] == {"threshold": 0.1, "areas": 3, "hits": 2, "missed_caught": 2, "flagged_px": 64 + 64 + 30,
                         "missed_px_caught": 32, "missed_changes": 2, "precision": 0.66667, "recall": 1.0, "f1": 0.8}
    assert (rows[0.2]["areas"], rows[0.2]["hits"], rows[0.2]["f1"]) == (2, 1, 0.5)  # B is not above 0.2
    assert (rows[0.3]["areas"], rows[0.3]["precision"], rows[0.3]["recall"]) == (1, 1.0, 0.5)
    assert rows[0.5]["areas"] == 0 and rows[0.5]["precision"] is None and rows[0.5]["f1"] is None
    result = stats.result(default=0.3)
    assert result["value"] == 0.1 and result["measured"] is True and "F1" in result["rule"]


def test_rule_ties_go_to_the_higher_threshold_and_nothing_measured_keeps_the_default():
    rows = [{"threshold": 0.2, "f1": 0.5}, {"threshold": 0.4, "f1": 0.5}, {"threshold": 0.45, "f1": 0.25}]
    assert choose_threshold(rows) == 0.4
    assert choose_threshold([{"threshold": 0.2, "f1": 0.0}, {"threshold": 0.3, "f1": None}]) is None
    pred, label, review = _tile()
    stats = ThresholdStats()
    stats.update(pred, pred, review)  # nothing missed
    assert stats.result(default=0.3) == {**stats.result(default=0.3), "value": 0.3, "measured": False}
    assert [r["threshold"] for r in stats.table()] == list(GRID) and GRID[0] == 0.05 and GRID[-1] == 0.5


def test_batches_and_nodata():
    pred, label, review = _tile()
    one, two = ThresholdStats(), ThresholdStats()
    one.update(pred, label, review)
    one.update(pred, label, review)
    two.update(np.stack([pred, pred]), np.stack([label, label]), np.stack([review, review]))
    assert np.array_equal(one.counts, two.counts) and one.missed == two.missed == 4
    hidden = review.copy()
    hidden[40:44, 40:44] = np.nan  # A unknown: its score cannot flag it, nor does it count as missed
    three = ThresholdStats(grid=(0.3,))
    three.update(pred, label, hidden)
    assert three.table()[0]["missed_changes"] == 1 and three.table()[0]["missed_px_caught"] == 0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), {"train": 4, "val": 2}, size=64)


def test_train_stores_the_threshold_measured_on_validation(data, tmp_path):
    from engine.runtime import select_runtime
    from engine.train.dataset import scan_split
    from engine.train.evaluate import confusion_over, eval_loader

    run = tmp_path / "run"
    p = engine("train", "--data", str(data), "--out", str(run), "--steps", "2", "--batch-size", "2", "--crop", "32",
               "--val-every", "1", "--device", "cpu", "--progress", "jsonl")
    assert p.returncode == 0, p.stderr
    info = read_info(run / "best.safetensors")
    stored = info.training["review_threshold"]
    assert info.review_threshold == stored["value"] and 0 < info.review_threshold < 1
    assert f"review threshold {stored['value']} (" in p.stdout  # logged
    # the same measurement, made again on the validation split with the saved best model
    model, _ = load_model(run / "best.safetensors")
    stats = ThresholdStats()
    confusion_over(model, eval_loader(scan_split(data, "val"), 2), select_runtime("cpu"), review=stats)
    again = stats.result(default=ModelInfo.review_threshold)
    assert again == stored and info.review_threshold == (choose_threshold(again["table"]) or 0.3)
    assert sum(r["flagged_px"] for r in stored["table"]) > 0


def test_convert_set_overrides_the_measured_threshold(data, tmp_path):
    run = tmp_path / "run"
    p = engine("train", "--data", str(data), "--out", str(run), "--steps", "1", "--batch-size", "2", "--crop", "32",
               "--device", "cpu", "--progress", "none")
    assert p.returncode == 0, p.stderr
    out = tmp_path / "set.safetensors"
    p = engine("convert", str(run / "best.safetensors"), str(out), "--set", "review_threshold=0.42")
    assert p.returncode == 0, p.stderr
    assert read_info(out).review_threshold == 0.42
    assert read_info(out).training["review_threshold"] == read_info(run / "best.safetensors").training["review_threshold"]
