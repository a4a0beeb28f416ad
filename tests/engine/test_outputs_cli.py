"""Issue 9 through the real CLI: every writing command keeps the user's files safe.

Inputs are never replaced (``..``, symlinked folders, even with --overwrite); temporaries
never follow planted symlinks; a full disk, odd names, a killed run and two concurrent
runs each end in one line (or a working result) and leave nothing behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyogrio
import pytest
import rasterio

from engine.outputs import PREFIX
from tests.cli_errors import one_line_error
from tests.engine.detect.conftest import ROOT, changed_pair, checkpoints, jsonl, run_cli  # noqa: F401 (fixture)
from tests.engine.test_outputs import tiny_disk  # noqa: F401 (fixture)


def _engine(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture()
def scene(tmp_path):
    """(before, after, out folder, a symlink to the inputs' folder)."""
    data = tmp_path / "data"
    data.mkdir()
    before, after = changed_pair(data, size=(40, 50), square=(5, 5, 10, 10))
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "link").symlink_to(data, target_is_directory=True)
    return before, after, out, tmp_path / "link"


@pytest.mark.parametrize("how", ["dotdot", "symlinked folder"])
def test_detect_never_replaces_an_input_even_with_overwrite(scene, checkpoints, how):
    before, after, out, link = scene
    target = out / ".." / "data" / "before.tif" if how == "dotdot" else link / "after.tif"
    kept = {p: p.read_bytes() for p in (before, after)}
    res = run_cli("--before", before, "--after", after, "--model", checkpoints["none"], "--out-mask", target,
                  "--overwrite", "--progress", "jsonl")
    one_line_error(res, str(target), "the mask output would replace the input")
    assert [e["event"] for e in jsonl(res.stdout)] == ["error"]  # refused before any work
    assert {p: p.read_bytes() for p in (before, after)} == kept and list(out.iterdir()) == []


def test_detect_never_replaces_its_model(scene, checkpoints, tmp_path):
    before, after, out, _ = scene
    model = tmp_path / "weights.tif"  # a name a probability output could take
    model.write_bytes(Path(checkpoints["none"]).read_bytes())
    kept = model.read_bytes()
    res = run_cli("--before", before, "--after", after, "--model", model, "--out-probability", model,
                  "--overwrite", "--progress", "none")
    one_line_error(res, str(model), "would replace the input")
    assert model.read_bytes() == kept and list(out.iterdir()) == []


def test_a_model_that_fails_to_load_leaves_no_staging_in_a_long_lived_process(scene, tmp_path):
    """detect() from Python, called again and again (a notebook, a service): a failure before
    any temporary exists ends the run's staging too."""
    from engine import outputs
    from engine.detect import detect
    from engine.errors import UserError

    before, after, out, _ = scene
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    for _ in range(2):
        with pytest.raises(UserError, match="junk.safetensors"):
            detect(before, after, model=junk, out_vector=out / "c.gpkg", out_probability=out / "p.tif")
        assert list(out.iterdir()) == [] and not getattr(outputs._RUN, "stagings", None)


def test_detect_never_writes_through_planted_symlinks(scene, checkpoints):
    """Someone who can write to the output folder plants symlinks at the temporary names
    of the next PIDs (the old naming) and at the output itself."""
    before, after, out, _ = scene
    victim = before.parent / "victim.txt"
    victim.write_text("precious")
    pid = os.getpid()
    planted = [out / f".p.{tag}{p}.tif" for p in range(pid, pid + 400) for tag in ("prob", "mask")]
    planted += [out / f".p.tif.probe{p}" for p in range(pid, pid + 400)] + [out / "p.tif"]
    for link in planted:
        link.symlink_to(victim)
    res = run_cli("--before", before, "--after", after, "--model", checkpoints["none"], "--out-probability",
                  out / "p.tif", "--overwrite", "--progress", "none")
    assert res.returncode == 0, res.stderr
    assert victim.read_text() == "precious"
    assert not (out / "p.tif").is_symlink() and rasterio.open(out / "p.tif").width == 50
    assert all(p.is_symlink() for p in planted[:-1])
    assert not [p for p in out.iterdir() if p.name.startswith(PREFIX)]


def test_detect_on_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(scene, checkpoints, tiny_disk):
    before, after, _, _ = scene
    for flag, name in (("--out-mask", "m.tif"), ("--out-vector", "v.shp")):
        res = run_cli("--before", before, "--after", after, "--model", checkpoints["random"], flag, tiny_disk / name,
                      "--progress", "none")
        assert one_line_error(res) == f"error: {tiny_disk / name}: no space left on device"
        assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def test_detect_odd_output_names_work(scene, checkpoints):
    before, after, out, _ = scene
    folder = out / "a;b !c 'd\" ü€"
    folder.mkdir()
    vec, mask, shp = folder / "x;y!.gpkg", folder / "m;$(rm -rf x).tif", folder / "s;t.shp"
    res = run_cli("--before", before, "--after", after, "--model", checkpoints["all"], "--out-vector", vec,
                  "--out-mask", mask, "--progress", "none")
    assert res.returncode == 0, res.stderr
    assert _features(vec, out.parent / "read1") == 1 and rasterio.open(mask).read(1).max() == 1
    res = run_cli("--before", before, "--after", after, "--model", checkpoints["all"], "--out-vector", shp,
                  "--progress", "none")
    assert res.returncode == 0, res.stderr
    assert _features(shp, out.parent / "read2") == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [vec.name, mask.name] + [f"s;t.{e}" for e in ("shp", "shx", "dbf", "prj", "cpg")])


def _features(path: Path, scratch: Path) -> int:
    """Features in a vector file whose name pyogrio cannot take (";" and "!" mean URL
    parameters and archives to it): read from a copy under a plain name."""
    import shutil

    from engine.vector.io import vector_sidecars

    scratch.mkdir(exist_ok=True)
    for src, dst in zip(vector_sidecars(path), vector_sidecars(scratch / f"plain{path.suffix}")):
        if src.exists():
            shutil.copy(src, dst)
    return len(pyogrio.read_dataframe(scratch / f"plain{path.suffix}"))


@pytest.mark.parametrize("name", ["new\nline.gpkg", "tab\t.tif"])
def test_detect_refuses_control_characters_before_any_work(scene, checkpoints, name):
    before, after, out, _ = scene
    flag = "--out-vector" if name.endswith(".gpkg") else "--out-mask"
    res = run_cli("--before", before, "--after", after, "--model", checkpoints["none"], flag, out / name,
                  "--progress", "jsonl")
    one_line_error(res, "control characters")
    assert [e["event"] for e in jsonl(res.stdout)] == ["error"] and list(out.iterdir()) == []


_STUCK = """
import sys, time
sys.path.insert(0, {root!r})
from engine.core.predictors import DifferencePredictor
from engine.detect import detect

class Stuck(DifferencePredictor):
    def __call__(self, batch):
        print("busy", flush=True)
        time.sleep(600)

detect({before!r}, {after!r}, predictor=Stuck(), out_vector={vec!r}, out_probability={prob!r})
"""


def test_a_run_killed_with_kill_9_leaves_temporaries_that_the_next_run_removes(scene, checkpoints):
    before, after, out, _ = scene
    vec, prob = out / "v.gpkg", out / "p.tif"
    code = textwrap.dedent(_STUCK.format(root=str(ROOT), before=str(before), after=str(after), vec=str(vec),
                                         prob=str(prob)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "busy"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stale = [p for p in out.iterdir() if p.name.startswith(PREFIX)]
    assert len(stale) == 1 and any(stale[0].iterdir())
    res = run_cli("--before", before, "--after", after, "--model", checkpoints["none"], "--out-vector", vec,
                  "--out-probability", prob, "--progress", "none")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["p.tif", "v.gpkg"]


def test_two_runs_writing_the_same_outputs_do_not_both_succeed(scene, checkpoints, tmp_path):
    """Run A (here) is working when run B (the CLI) writes the same outputs: A must not
    silently replace B's result."""
    from engine.core.predictors import DifferencePredictor
    from engine.detect import detect
    from engine.errors import UserError

    before, after, out, _ = scene
    (tmp_path / "other").mkdir()
    other_before, other_after = changed_pair(tmp_path / "other", size=(60, 70), square=(5, 5, 10, 10))
    mask = out / "m.tif"
    results = []

    class Meanwhile(DifferencePredictor):
        def __call__(self, batch):
            if not results:
                results.append(run_cli("--before", other_before, "--after", other_after, "--model",
                                       checkpoints["none"], "--out-mask", mask, "--progress", "none"))
            return super().__call__(batch)

    with pytest.raises(UserError, match="appeared while this run was working"):
        detect(before, after, predictor=Meanwhile(), out_mask=mask)
    assert results[0].returncode == 0, results[0].stderr
    assert rasterio.open(mask).width == 70  # B's result, untouched
    assert sorted(p.name for p in out.iterdir()) == ["m.tif"]


def test_convert_never_replaces_its_input(scene, checkpoints, tmp_path):
    model = tmp_path / "data" / "model.safetensors"
    model.write_bytes(checkpoints["none"].read_bytes())
    res = _engine("convert", model, tmp_path / "link" / "model.safetensors", "--overwrite")
    one_line_error(res, "the converted output would replace the input")
    assert model.read_bytes() == checkpoints["none"].read_bytes()


def test_prepare_refuses_an_output_folder_holding_an_input_through_a_symlink(scene, tmp_path):
    before, after, _, link = scene
    res = _engine("prepare", "--before", before, "--after", after, "--labels", before, "--out", link, "--overwrite",
                  "--progress", "none")
    one_line_error(res, str(link), "would replace the input")
    assert before.exists() and after.exists()


def test_train_refuses_a_run_folder_whose_files_would_replace_init(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.safetensors").write_bytes(b"weights to start from")
    alias = tmp_path / "alias"
    alias.symlink_to(run, target_is_directory=True)
    res = _engine("train", "--data", tmp_path / "data", "--out", run, "--init", alias / "last.safetensors",
                  "--overwrite", "--progress", "none")
    one_line_error(res, "would replace the input")
    assert (run / "last.safetensors").read_bytes() == b"weights to start from"


def test_evaluate_refuses_colour_maps_that_would_replace_png_labels(tmp_path, checkpoints):
    from tests.engine.train.tiny_dataset import make_dataset

    data = make_dataset(tmp_path / "ds", {"test": 2}, size=64)
    labels = data / "test" / "label"
    kept = {p: p.read_bytes() for p in labels.iterdir()}
    res = _engine("evaluate", "--data", data, "--split", "test", "--model", checkpoints["none"], "--out", labels,
                  "--progress", "jsonl")
    one_line_error(res, "the colour map output would replace the input")
    assert [e["event"] for e in jsonl(res.stdout)] == ["error"]  # before the model loaded
    assert {p: p.read_bytes() for p in labels.iterdir()} == kept


def _pixel_space_log(tmp_path: Path, name: str) -> tuple[Path, list[str]]:
    """detect (stand-in model) on a pair without georeference into ``tmp_path/name``: the
    output and the log messages."""
    from engine.core.predictors import DifferencePredictor
    from engine.detect import detect
    from tests.rasters import textured, write_geotiff

    before = write_geotiff(tmp_path / "b.tif", textured(40, 50), crs=None)
    after = write_geotiff(tmp_path / "a.tif", textured(40, 50, seed=1), crs=None)
    events: list[dict] = []
    vec = tmp_path / name
    detect(before, after, predictor=DifferencePredictor(), out_vector=vec, on_event=events.append)
    return vec, [e["message"] for e in events if e["event"] == "log"]


def test_warnings_and_errors_name_the_users_output_never_a_temporary(tmp_path):
    """Pixel-space rasters into GeoJSON: the vectorizer's warnings are about the user's
    output (the polygons come from a temporary mask and go to a temporary file)."""
    vec, messages = _pixel_space_log(tmp_path, "changes.geojson")
    assert any(m.startswith(f"{vec}: GeoJSON cannot say 'no CRS'") for m in messages), messages
    assert not [m for m in messages if PREFIX in m or "/proc/" in m or ".tmp" in m], messages


def test_detect_on_rasters_without_georeference_blames_the_inputs_not_its_output(tmp_path):
    vec, messages = _pixel_space_log(tmp_path, "changes.gpkg")
    assert f"{vec}: polygons in pixel coordinates (column, row), because the input rasters have no georeference; " \
           "area_m2, --min-area and --simplify are in pixels" in messages, messages
    assert not [m for m in messages if "mask" in m.split(":")[0]], messages

def test_demo_refuses_outputs_that_would_replace_its_model(tmp_path, checkpoints):
    out = tmp_path / "demo"
    out.mkdir()
    model = out / "mask.tif"  # a checkpoint under an output's name
    model.write_bytes(checkpoints["none"].read_bytes())
    res = _engine("demo", "--out", tmp_path / "link-free" / ".." / "demo", "--model", model, "--progress", "none")
    one_line_error(res, "the mask output would replace the input")
    assert model.read_bytes() == checkpoints["none"].read_bytes() and sorted(p.name for p in out.iterdir()) == ["mask.tif"]
