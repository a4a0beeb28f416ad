"""Synthetic scenes: what the demo, the benchmarks and the training tests rely on."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from engine.commands.synth import scene_seed
from engine.train.synth import make_scene, write_scene_pair

ROOT = Path(__file__).resolve().parents[3]


def run_engine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_same_seed_gives_the_same_scene_and_another_seed_another():
    a = make_scene(128, seed=3)
    b = make_scene(128, seed=3)
    c = make_scene(128, seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.before, c.before)


def test_scene_arrays_have_the_documented_shapes_and_values():
    before, after, label = make_scene(160, seed=1)
    assert before.shape == after.shape == (3, 160, 160)
    assert before.dtype == after.dtype == label.dtype == np.uint8
    assert label.shape == (160, 160)
    assert set(np.unique(label)) <= {0, 255}
    # an image, not a flat colour: real contrast in every band
    assert all(before[b].std() > 10 for b in range(3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_changed_pixels_are_a_few_percent(seed):
    label = make_scene(256, seed=seed).label
    assert 0.01 <= (label > 0).mean() <= 0.12


def test_no_change_requested_gives_an_empty_label():
    scene = make_scene(128, seed=5, change_fraction=(0.0, 0.0))
    assert not scene.label.any()
    assert not np.array_equal(scene.before, scene.after)  # the nuisance changes remain


def test_labelled_changes_stand_out_but_a_pixel_difference_finds_false_alarms():
    inside, outside, false_alarm = [], [], []
    for seed in range(3):
        before, after, label = make_scene(256, seed=seed)
        diff = np.abs(before.astype(int) - after.astype(int)).max(axis=0)
        changed = label > 0
        inside.append(diff[changed].mean())
        outside.append(diff[~changed].mean())
        false_alarm.append((diff[~changed] > 40).mean())
    assert np.mean(inside) > np.mean(outside) + 10
    # illumination, season, shadows, noise and misregistration: many unchanged pixels differ a lot
    assert np.mean(false_alarm) > 0.05


def test_after_image_is_misregistered_by_at_most_the_requested_shift():
    kw = dict(change_fraction=(0.0, 0.0), nuisance=0.0)
    still = make_scene(192, seed=7, misregistration=0.0, **kw)
    moved = make_scene(192, seed=7, misregistration=1.5, **kw)
    np.testing.assert_array_equal(still.before, moved.before)
    assert not np.array_equal(still.after, moved.after)
    # the shifted after matches the unshifted one within two pixels of translation
    best = min(
        np.abs(np.roll(moved.after.astype(int), (dy, dx), axis=(1, 2)) - still.after)[:, 4:-4, 4:-4].mean()
        for dy in range(-2, 3) for dx in range(-2, 3)
    )
    assert best < np.abs(moved.after.astype(int) - still.after)[:, 4:-4, 4:-4].mean() + 1e-9
    assert best < 6


def test_written_scene_is_georeferenced_in_utm_with_half_metre_pixels(tmp_path):
    p0 = write_scene_pair(tmp_path, "s0", 96, seed=0, index=0)
    p1 = write_scene_pair(tmp_path, "s1", 96, seed=1, index=1)
    for key in ("before", "after", "label"):
        with rasterio.open(p0[key]) as a, rasterio.open(p1[key]) as b:
            assert a.crs.to_epsg() == 32633
            assert a.res == (0.5, 0.5)
            assert (a.width, a.height) == (96, 96)
            assert a.bounds != b.bounds  # each scene in its own place
            assert a.count == (1 if key == "label" else 3)
    with rasterio.open(p0["label"]) as ds:
        assert set(np.unique(ds.read())) <= {0, 255}
    assert not list(tmp_path.glob("*.part"))


def test_cli_writes_scene_triplets_and_a_pairs_table(tmp_path):
    out = tmp_path / "scenes"
    res = run_engine("synth", "--out", str(out), "--scenes", "2", "--size", "96", "--seed", "3", "--workers", "2",
                     "--progress", "none")
    assert res.returncode == 0, res.stderr
    with open(out / "scenes.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    for row in rows:
        for key in ("before", "after", "labels"):
            assert (out / row[key]).is_file()
    # the files hold the documented scene of (seed, index), whatever the number of workers
    expected = make_scene(96, scene_seed(3, 1))
    with rasterio.open(out / rows[1]["before"]) as b, rasterio.open(out / rows[1]["labels"]) as lab:
        np.testing.assert_array_equal(b.read(), expected.before)
        np.testing.assert_array_equal(lab.read(1), expected.label)
    # a second run does not clobber the folder
    again = run_engine("synth", "--out", str(out), "--scenes", "1", "--size", "96", "--progress", "none")
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "not empty" in again.stderr
    assert len(list(out.glob("*.tif"))) == 6


def test_cli_dataset_layout_puts_whole_scenes_in_one_split(tmp_path):
    out = tmp_path / "ds"
    res = run_engine("synth", "--out", str(out), "--scenes", "4", "--size", "128", "--layout", "dataset",
                     "--tile-size", "64", "--progress", "none")
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "dataset.json").read_text())
    scenes_of = {}
    for split in ("train", "val", "test"):
        names = (out / split / "list" / f"{split}.txt").read_text().split()
        assert len(names) == meta["counts"][split]["tiles"]
        for name in names:
            assert (out / split / "A" / name).is_file() and (out / split / "label" / name).is_file()
        scenes_of[split] = {n.rsplit("_", 2)[0] for n in names}
    assert scenes_of["train"] and scenes_of["val"] and scenes_of["test"]
    assert not (scenes_of["train"] & scenes_of["val"] or scenes_of["train"] & scenes_of["test"]
                or scenes_of["val"] & scenes_of["test"])


@pytest.mark.parametrize("args, words", [
    (["--scenes", "0"], "--scenes"),
    (["--layout", "dataset", "--size", "128", "--tile-size", "100"], "--tile-size"),
])
def test_cli_bad_options_fail_with_one_line(tmp_path, args, words):
    res = run_engine("synth", "--out", str(tmp_path / "x"), *args)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and words in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()
