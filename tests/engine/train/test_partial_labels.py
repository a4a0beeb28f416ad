"""Partial labels (a ``labelled/`` mask per tile): read, augmented, trained on and scored
on the labelled pixels only."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import UserError
from engine.train.augment import TrainAugment
from engine.train.dataset import ChangeDataset, scan_split, split_target
from engine.train.metrics import Confusion
from tests.engine.train.conftest import engine
from tests.engine.train.test_evaluate import constant_model
from tests.engine.train.tiny_dataset import make_dataset


def add_labelled(root, split: str, rows: int) -> None:
    """``split/labelled/NAME.png``: the first ``rows`` rows of each tile labelled (255), the rest not (0)."""
    folder = root / split / "labelled"
    folder.mkdir()
    for label in (root / split / "label").iterdir():
        size = Image.open(label).size
        mask = np.zeros(size[::-1], np.uint8)
        mask[:rows] = 255
        Image.fromarray(mask).save(folder / (label.stem + ".png"))


def test_confusion_counts_only_the_valid_pixels():
    pred = np.array([[1, 1], [0, 0]], bool)
    label = np.array([[1, 0], [1, 0]], bool)
    valid = np.array([[1, 1], [0, 0]], bool)
    assert Confusion().update(pred, label, valid).as_dict() == {"tp": 1, "fp": 1, "fn": 0, "tn": 0}
    t = Confusion().update(torch.from_numpy(pred), torch.from_numpy(label), torch.from_numpy(valid))
    assert t.as_dict() == {"tp": 1, "fp": 1, "fn": 0, "tn": 0}


def test_a_tile_with_a_mask_gives_change_and_mask_channels_that_stay_aligned(tmp_path):
    data = make_dataset(tmp_path / "d", {"train": 2}, size=64)
    add_labelled(data, "train", 24)
    samples = scan_split(data, "train")
    assert all(s.labelled is not None for s in samples)
    x, y, _ = ChangeDataset(samples)[0]
    assert x.shape == (6, 64, 64) and y.shape == (2, 64, 64)
    assert torch.all(y[1, :24] == 1) and torch.all(y[1, 24:] == 0)
    assert torch.all(y[0][y[1] == 0] == 0)  # no change where not labelled
    # Flips, crops and resizes move the mask with the label.
    augmented = ChangeDataset(samples, TrainAugment(48))
    for seed in range(8):
        _, ya, _ = augmented[(0, seed)]
        assert ya.shape == (2, 48, 48) and torch.all(ya[0][ya[1] == 0] == 0)
    change, valid = split_target(y[None])
    assert change.shape == valid.shape == (1, 1, 64, 64)


def test_a_mask_folder_needs_every_tiles_mask(tmp_path):
    data = make_dataset(tmp_path / "d", {"train": 2}, size=64)
    add_labelled(data, "train", 24)
    next((data / "train" / "labelled").iterdir()).unlink()
    with pytest.raises(UserError, match="labelled"):
        scan_split(data, "train")


def test_evaluate_scores_the_labelled_pixels_and_greys_the_rest(tmp_path):
    data = make_dataset(tmp_path / "d", {"test": 2}, size=64)
    add_labelled(data, "test", 16)
    labels = [np.asarray(Image.open(p)) > 0 for p in sorted((data / "test" / "label").iterdir())]
    pos = sum(int(lab[:16].sum()) for lab in labels)
    model = constant_model(tmp_path / "all.safetensors", 20.0)  # calls every pixel change
    maps = tmp_path / "maps"
    p = engine("evaluate", "--data", str(data), "--model", str(model), "--json", "--device", "cpu", "--out",
               str(maps), "--per-pair")
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert result["confusion"] == {"tp": pos, "fp": 2 * 16 * 64 - pos, "fn": 0, "tn": 0}
    assert result["labelled_pixels"] == 2 * 16 * 64
    assert [r["pair"] for r in result["pairs"]] == ["t00", "t01"] and all(r["pixels"] == 1024 for r in result["pairs"])
    rgb = np.asarray(Image.open(maps / "t00.png"))
    assert np.all(rgb[16:] == 128) and not np.any(np.all(rgb[:16] == 128, axis=-1))


def test_training_on_partial_labels_runs_and_validates_on_the_labelled_pixels(tmp_path):
    data = make_dataset(tmp_path / "d", {"train": 2, "val": 1}, size=64)
    add_labelled(data, "train", 32)
    add_labelled(data, "val", 32)
    p = engine("train", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "2",
               "--crop", "64", "--device", "cpu", "--progress", "jsonl")
    assert p.returncode == 0, p.stderr
    done = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")][-1]
    assert done["event"] == "done" and 0 <= done["stats"]["best_val"]["f1"] <= 1
