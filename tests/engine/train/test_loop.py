"""Training runs: the run folder, exact resume after a cancel, initial weights, bad input."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from engine.checkpoint import load_model, read_info, save_checkpoint, ModelInfo
from engine.errors import Cancelled, UserError
from engine.events import Events
from engine.model import HRMNet
from engine.train.loop import CSV_COLUMNS, TrainConfig, train
from tests.conftest import ROOT
from tests.engine.train.conftest import engine
from tests.engine.train.tiny_dataset import make_dataset

TINY = dict(batch_size=2, crop=32, device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), {"train": 4, "val": 2}, size=64)




def test_cli_writes_the_run_folder(data, tmp_path):
    run = tmp_path / "run"
    p = engine("train", "--data", str(data), "--out", str(run), "--steps", "2", "--batch-size", "2", "--crop", "32",
               "--val-every", "1", "--device", "cpu", "--progress", "jsonl", "--workers", "1")
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["done"] for e in progress] == [1, 2] and all("loss" in e and "lr" in e for e in progress)
    vals = [e for e in events if e["event"] == "log" and "val" in e]
    assert [e["step"] for e in vals] == [1, 2] and set(vals[0]["val"]) >= {"f1", "iou", "kappa"}
    done = events[-1]
    for name in ("best", "last", "state", "metrics", "curves"):
        assert (run / done["outputs"][name].rsplit("/", 1)[-1]).is_file()
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert float(rows[0]["lr"]) == pytest.approx(0.1 * 5e-4)  # first step of the warm-up
    assert all(r["val_f1"] != "" and float(r["loss"]) > 0 for r in rows)

    model, info = load_model(run / "best.safetensors")  # our format, loads as an HRMNet
    t = info.training
    assert t["steps"] == 2 and t["step"] in (1, 2) and t["batch_size"] == 2 and t["crop"] == 32
    assert t["best_step"] == t["step"] and set(t["val"]) == {"kappa", "iou", "f1", "precision", "recall", "oa"}
    assert t["device"] == "cpu" and t["precision"] == "fp32" and "engine train" in t["command"]
    assert info.tile_size == 32
    last = read_info(run / "last.safetensors").training
    assert last["step"] == 2 and last["seconds"] > 0


@pytest.mark.slow
def test_resume_after_cancel_continues_exactly(data, tmp_path):
    cfg = dict(data=str(data), steps=3, val_every=0, **TINY)
    train(TrainConfig(out=str(tmp_path / "once"), **cfg))

    checks = [0]

    def cancel_before_step_2() -> bool:
        checks[0] += 1
        return checks[0] > 1

    with pytest.raises(Cancelled):
        train(TrainConfig(out=str(tmp_path / "twice"), **cfg), Events(None, cancel_before_step_2))
    state = torch.load(tmp_path / "twice" / "state.pt", weights_only=True)
    assert state["run"]["step"] == 1
    train(TrainConfig(out=str(tmp_path / "twice"), resume=True, device="cpu"))

    once, twice = load_file(tmp_path / "once" / "last.safetensors"), load_file(tmp_path / "twice" / "last.safetensors")
    assert once.keys() == twice.keys()
    for k in once:
        torch.testing.assert_close(twice[k], once[k], rtol=0, atol=1e-6)
    assert (tmp_path / "once" / "metrics.csv").read_text() == (tmp_path / "twice" / "metrics.csv").read_text()


def _timm_backbone(seed: int) -> dict:
    torch.manual_seed(seed)
    state = {k: v for k, v in HRMNet().encoder.context_encoder.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # ignored classifier
    return state


@pytest.mark.parametrize("kind", ["init", "backbone"])
def test_initial_weights(data, tmp_path, kind):
    torch.manual_seed(123)
    source = HRMNet()
    if kind == "init":
        path = tmp_path / "init.safetensors"
        save_checkpoint(path, source, ModelInfo())
        expected = {k: v for k, v in source.state_dict().items() if k.startswith("kr_decoder.fusion_conv.0")}
    else:
        path = tmp_path / "resnet18d.pth"
        torch.save(_timm_backbone(7), path)
        expected = {"encoder.context_encoder." + k: v for k, v in _timm_backbone(7).items() if k.startswith("layer4.1.conv2")}
    train(TrainConfig(data=str(data), out=str(tmp_path / "run"), steps=1, **{kind: str(path)}, **TINY))
    trained = load_file(tmp_path / "run" / "last.safetensors")
    for k, v in expected.items():
        # One AdamW step moves each weight by about lr·0.1 = 5e-5; a fresh init would differ by far more.
        assert (trained[k] - v).abs().max().item() < 1e-3, k
    assert read_info(tmp_path / "run" / "last.safetensors").training[kind] == str(path)


def test_existing_run_folder_needs_resume_or_overwrite(data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    p = engine("train", "--data", str(data), "--out", str(run), "--steps", "1", "--device", "cpu")
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "--resume" in p.stderr and "--overwrite" in p.stderr
    assert sorted(x.name for x in run.iterdir()) == ["notes.txt"]



def test_resume_needs_a_saved_state(tmp_path, capsys):
    from engine.cli import main

    assert main(["train", "--out", str(tmp_path), "--resume", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no state.pt to resume from" in err and err.count("\n") == 1


@pytest.mark.parametrize("broken, expected", [
    ("no_train", "split 'train' not found"),
    ("no_list", "train.txt: list file not found"),
    ("empty", "empty dataset"),
])
def test_bad_dataset_fails_before_writing(tmp_path, broken, expected):
    data = make_dataset(tmp_path / "data", {"train": 1, "val": 1}, size=64)
    if broken == "no_train":
        import shutil

        shutil.rmtree(data / "train")
    elif broken == "no_list":
        (data / "train" / "list" / "train.txt").unlink()
    else:
        (data / "train" / "list" / "train.txt").write_text("")
    with pytest.raises(UserError, match=expected):
        train(TrainConfig(data=str(data), out=str(tmp_path / "run"), steps=1, **TINY))
    assert not (tmp_path / "run").exists()


def test_bad_options():
    with pytest.raises(UserError, match="--batch-size 3: must be a multiple"):
        from engine.train.loop import _check_config

        _check_config(TrainConfig(data="d", steps=1, batch_size=3, lr=1e-3, crop=64, val_every=0, seed=0), world=2)


@pytest.mark.slow
def test_interrupt_stops_after_the_step_with_a_resumable_state(data, tmp_path):
    """The plugin and Ctrl-C stop a run with SIGINT: exit 130, state.pt at the last whole step."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "train", "--data", str(data), "--out", str(run), "--steps", "500",
         "--batch-size", "2", "--crop", "32", "--val-every", "0", "--device", "cpu", "--progress", "jsonl"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if json.loads(line)["event"] == "progress":
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.stdout.read()
        rc = proc.wait(timeout=120)
    finally:
        proc.kill()
    assert rc == 130
    assert proc.stderr.read().strip() == "cancelled"
    assert json.loads(rest.strip().splitlines()[-1]) == {"event": "error", "message": "cancelled"}
    state = torch.load(run / "state.pt", weights_only=True)
    assert 1 <= state["run"]["step"] < 500
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == state["run"]["step"]


def test_the_seconds_per_step_shown_is_the_recent_rate_not_the_slow_first_step():
    from engine.train.loop import RecentRate

    rate = RecentRate(window=3)
    assert rate.value == 0.0
    rate.add(3.8)  # the first step also starts the loader
    assert rate.value == 3.8
    for dt in (2.5, 2.5, 2.4, 2.6):
        rate.add(dt)
    assert rate.value == pytest.approx(2.5)  # the last three steps; the first no longer counts
