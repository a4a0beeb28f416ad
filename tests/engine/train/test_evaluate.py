"""``evaluate``: metrics over the whole split, table or JSON, colour maps, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.checkpoint import ModelInfo, save_checkpoint
from engine.model import HRMNet
from engine.train.evaluate import colour_map
from tests.engine.train.conftest import engine
from tests.engine.train.tiny_dataset import make_dataset

FINAL_HEAD = "kr_decoder.mask_generation.mask_generation.3"


def constant_model(path, logit: float):
    """A checkpoint whose final change map is sigmoid(logit) everywhere."""
    torch.manual_seed(0)
    state = HRMNet().state_dict()
    state[FINAL_HEAD + ".weight"].zero_()
    state[FINAL_HEAD + ".bias"].fill_(logit)
    save_checkpoint(path, state, ModelInfo())
    return path




def test_colour_map():
    pred = np.array([[1, 1], [0, 0]], bool)
    label = np.array([[1, 0], [1, 0]], bool)
    rgb = colour_map(pred, label)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [255, 255, 255]  # TP white
    assert rgb[0, 1].tolist() == [255, 0, 0]  # FP red
    assert rgb[1, 0].tolist() == [0, 255, 255]  # FN cyan
    assert rgb[1, 1].tolist() == [0, 0, 0]  # TN black


def test_levir_sample_json_with_hand_checked_metrics(shared_dir, tmp_path):
    # A model that calls every pixel change: TP = the label's change pixels, FP = the rest.
    root = shared_dir / "data" / "levir_sample"
    label = np.asarray(Image.open(root / "test" / "label" / "train_645_512_1024_512_1024.png")) > 0
    pos, n = int(label.sum()), label.size
    model = constant_model(tmp_path / "all.safetensors", 20.0)
    p = engine("evaluate", "--data", str(root), "--split", "test", "--model", str(model), "--json",
               "--device", "cpu", "--out", str(tmp_path / "maps"))
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert result["confusion"] == {"tp": pos, "fp": n - pos, "fn": 0, "tn": 0}
    assert result["precision"] == pytest.approx(pos / n)
    assert result["recall"] == 1.0 and result["oa"] == pytest.approx(pos / n)
    assert result["f1"] == pytest.approx(2 * pos / (2 * pos + n - pos))
    assert result["iou"] == pytest.approx(pos / n) and result["kappa"] == pytest.approx(0.0)
    rgb = np.asarray(Image.open(tmp_path / "maps" / "train_645_512_1024_512_1024.png"))
    assert rgb.shape == (512, 512, 3)
    assert np.all(rgb[label] == 255) and np.all(rgb[~label] == [255, 0, 0])  # TP white, FP red


def test_whole_split_table_and_maps(tmp_path):
    data = make_dataset(tmp_path / "data", {"test": 3}, size=64, fmt="tif")
    model = constant_model(tmp_path / "none.safetensors", -20.0)  # detects nothing
    p = engine("evaluate", "--data", str(data), "--model", str(model), "--out", str(tmp_path / "maps"),
               "--device", "cpu", "--batch-size", "2", "--progress", "none")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "3 tiles" in lines[0]
    table = {line.split()[0]: line.split()[1] for line in lines[1:7]}
    assert list(table) == ["kappa", "iou", "f1", "precision", "recall", "oa"]
    assert float(table["oa"]) == pytest.approx(1 - 3 * 16 * 16 / (3 * 64 * 64), abs=1e-4)
    assert float(table["f1"]) == 0.0
    assert "FN 768" in lines[7]  # three 16x16 squares missed
    maps = sorted(x.name for x in (tmp_path / "maps").iterdir())
    assert maps == ["t00.png", "t01.png", "t02.png"]
    rgb = np.asarray(Image.open(tmp_path / "maps" / "t00.png"))
    assert {tuple(c) for c in rgb.reshape(-1, 3)} == {(0, 0, 0), (0, 255, 255)}  # TN black, FN cyan


def test_bad_input_one_line(tmp_path, capsys):
    from engine.cli import main

    data = make_dataset(tmp_path / "data", {"test": 1}, size=64)
    model = constant_model(tmp_path / "m.safetensors", 0.0)
    p = engine("evaluate", "--data", str(data), "--split", "val", "--model", str(model), "--device", "cpu")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "split 'val' not found" in p.stderr
    assert main(["evaluate", "--data", str(data), "--model", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.safetensors: model file not found" in err


def test_existing_colour_maps_are_kept_without_overwrite(tmp_path):
    data = make_dataset(tmp_path / "data", {"test": 2}, size=64)
    model = constant_model(tmp_path / "none.safetensors", -20.0)
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "t00.png").write_bytes(b"an earlier map")
    args = ["evaluate", "--data", str(data), "--model", str(model), "--out", str(maps), "--device", "cpu",
            "--progress", "none"]
    p = engine(*args)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "t00.png: exists (use --overwrite to replace the colour maps)" in p.stderr
    assert (maps / "t00.png").read_bytes() == b"an earlier map" and sorted(x.name for x in maps.iterdir()) == ["t00.png"]
    p = engine(*args, "--overwrite")
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in maps.iterdir()) == ["t00.png", "t01.png"]
    assert np.asarray(Image.open(maps / "t00.png")).shape == (64, 64, 3)


def test_per_pair_figures_group_the_tiles_of_each_prepared_sheet(tmp_path):
    data = make_dataset(tmp_path / "data", {"test": 3}, size=64)
    for i, name in enumerate(("north_0_0", "north_0_64", "south_0_0")):  # as prepare names tiles: SHEET_ROW_COL
        for folder in ("A", "B", "label"):
            (data / "test" / folder / f"t{i:02d}.png").rename(data / "test" / folder / f"{name}.png")
    (data / "test" / "list" / "test.txt").write_text("north_0_0\nnorth_0_64\nsouth_0_0\n")
    (data / "dataset.json").write_text(json.dumps({"sources": [{"name": "north"}, {"name": "south"}]}))
    model = constant_model(tmp_path / "all.safetensors", 20.0)
    p = engine("evaluate", "--data", str(data), "--model", str(model), "--device", "cpu", "--per-pair",
               "--progress", "none")
    assert p.returncode == 0, p.stderr
    rows = {line.split()[0]: line.split() for line in p.stdout.splitlines() if line.startswith(("  north", "  south"))}
    assert rows["north"][1:3] == ["2", str(2 * 64 * 64)] and rows["south"][1:3] == ["1", str(64 * 64)]
    assert "tiling: whole dataset tiles" in p.stdout  # said plainly: no overlap blending as in detect
    j = engine("evaluate", "--data", str(data), "--model", str(model), "--device", "cpu", "--per-pair", "--json")
    pairs = json.loads(j.stdout)["pairs"]
    assert [(r["pair"], r["tiles"]) for r in pairs] == [("north", 2), ("south", 1)]
    total = sum(r["confusion"]["tp"] for r in pairs)
    assert total == json.loads(j.stdout)["confusion"]["tp"]
