"""Metrics over one confusion matrix, checked against numbers worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.train.metrics import METRIC_KEYS, Confusion, scores


def test_hand_computed_scores():
    # TP 30, FP 10, FN 20, TN 40 (N = 100):
    # precision 30/40, recall 30/50, F1 2·0.75·0.6/1.35, IoU 30/60, OA 70/100,
    # pe = (40·50 + 60·50)/100² = 0.5, kappa = (0.7 − 0.5)/(1 − 0.5) = 0.4.
    s = scores(30, 10, 20, 40)
    assert s == pytest.approx({"precision": 0.75, "recall": 0.6, "f1": 2 / 3, "iou": 0.5, "oa": 0.7, "kappa": 0.4})
    assert tuple(s) == METRIC_KEYS


def test_confusion_from_arrays_numpy_and_torch():
    pred = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool)
    label = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], bool)
    c = Confusion().update(pred, label)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 4)
    t = Confusion().update(torch.tensor(pred, dtype=torch.float32), torch.tensor(label, dtype=torch.uint8))
    assert t == c
    probs = np.where(pred, 0.9, 0.2)  # probabilities: > 0.5 is change
    assert Confusion().update(probs, label) == c


def test_one_matrix_over_the_set_not_a_mean_of_tiles():
    # Tile 1: TP 1, FP 0, FN 0 (F1 1). Tile 2: TP 1, FP 3, FN 0 (F1 0.4).
    c = Confusion()
    c.update(np.array([1, 0, 0, 0]), np.array([1, 0, 0, 0]))
    c.update(np.array([1, 1, 1, 1]), np.array([1, 0, 0, 0]))
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 3, 0, 3)
    assert c.scores()["f1"] == pytest.approx(2 * 2 / (2 * 2 + 3))  # 0.571..., not (1 + 0.4)/2
    assert c + Confusion(1, 0, 0, 0) == Confusion(3, 3, 0, 3)


def test_undefined_ratios_are_zero_and_kappa_of_perfect_prediction():
    assert scores(0, 0, 0, 10) == {"kappa": 0.0, "iou": 0.0, "f1": 0.0, "precision": 0.0, "recall": 0.0, "oa": 1.0}
    assert scores(5, 0, 0, 5)["kappa"] == pytest.approx(1.0)
    assert scores(0, 5, 5, 0)["kappa"] == pytest.approx(-1.0)


def test_shapes_must_match():
    with pytest.raises(ValueError):
        Confusion().update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_large_counts_do_not_overflow():
    c = Confusion(3_000_000_000, 1_000_000_000, 1_000_000_000, 10_000_000_000)
    assert c.scores()["precision"] == pytest.approx(0.75)
