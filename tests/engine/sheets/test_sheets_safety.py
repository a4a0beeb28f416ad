"""The sheets command keeps issue 9's promises: outputs never replace an input (sheet
rasters, the sheet index and its sidecars, the model), temporaries are private and
exclusive, stale ones are removed only when their owner is gone, a damaged sheet is named
in one line, and it refuses contradictions (--shard with outputs, --gpus with --device cpu)
and an unloadable model before any sheet runs."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pyogrio
import pytest

from engine.errors import UserError
from engine.outputs import HOST, PREFIX
from engine.sheets.run import run_sheets

from .standins import BlurDifference, ORIGIN, PIXEL, blob_scene, cut, sheets_cli

ROOT = Path(__file__).resolve().parents[3]
TILING = {"tile_size": 64, "overlap": 16}


# ----------------------------------------------------------------------------- inputs never replaced


def test_a_merged_output_reaching_a_sheet_raster_through_dotdot_or_a_symlink_is_refused(scene, tmp_path):
    from engine.sheets.mosaic import probe_rasters, write_mosaic

    # one sheet's before is itself a VRT: an output .vrt could name it
    tif = scene.parent / "before_r0c0.tif"
    rasters, _ = probe_rasters([("r0c0", str(tif))])
    write_mosaic(rasters, scene.parent / "before_r0c0.vrt", "before")
    scene.write_text(scene.read_text().replace("before_r0c0.tif", "before_r0c0.vrt"))
    (tmp_path / "link").symlink_to(scene.parent)
    victim = scene.parent / "before_r0c0.vrt"
    text = victim.read_text()
    for out in (tmp_path / "x" / ".." / "in" / "before_r0c0.vrt", tmp_path / "link" / "before_r0c0.vrt"):
        (tmp_path / "x").mkdir(exist_ok=True)
        with pytest.raises(UserError, match="would replace the input"):
            run_sheets(scene, tmp_path / "run", predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg",
                       out_mask=out, overwrite=True, workers=1, **TILING)
    assert victim.read_text() == text and not (tmp_path / "run").exists()


def test_the_merged_layer_never_replaces_the_sheet_index_or_its_sidecars(scene, tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    ids = ["r0c0", "r0c1", "r1c0", "r1c1"]
    grid = tmp_path / "idx" / "grid.shp"
    grid.parent.mkdir()
    gpd.GeoDataFrame({"id": ids}, geometry=[box(0, 0, 1, 1)] * 4, crs="EPSG:32633").to_file(grid)
    dbf = grid.with_suffix(".dbf").read_bytes()
    (tmp_path / "alias").symlink_to(grid.parent)
    kw = dict(predictor=BlurDifference(), before=str(scene.parent / "before_{id}.tif"),
              after=str(scene.parent / "after_{id}.tif"), overwrite=True, workers=1, **TILING)
    for out in (tmp_path / "alias" / "grid.shp", tmp_path / "alias" / "grid.SHP"):
        with pytest.raises(UserError, match="would replace the input"):
            run_sheets(grid, tmp_path / "run", out_vector=out, **kw)
    assert grid.with_suffix(".dbf").read_bytes() == dbf


def test_an_output_reaching_the_model_is_refused_on_the_command_line(scene, tmp_path):
    from tests.engine.detect.conftest import _checkpoint

    model = _checkpoint(tmp_path / "model.vrt", None)  # any name works for a checkpoint
    data = model.read_bytes()
    (tmp_path / "sub").mkdir()
    res = sheets_cli("--sheets", scene, "--run", tmp_path / "run", "--model", model, "--out-vector", tmp_path / "m.gpkg",
               "--out-probability", tmp_path / "sub" / ".." / "model.vrt", "--overwrite")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "would replace the input" in res.stderr and str(model) in res.stderr
    assert model.read_bytes() == data and not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- temporaries


def test_planted_symlinks_at_predictable_names_are_never_followed(scene, tmp_path):
    run, victim = tmp_path / "run", tmp_path / "victim.txt"
    kw = dict(predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", out_mask=tmp_path / "m.vrt", workers=1,
              **TILING)
    run_sheets(scene, run, **kw)
    victim.write_text("precious")
    pid = os.getpid()
    planted = [run / f".status.{pid}.gpkg", run / f".run.json.{pid}", run / "sheets" / f".r0c0.tmp-{pid}-0",
               tmp_path / f".m.vrt.{pid}"]
    for p in planted:
        p.symlink_to(victim)
    (run / "sheets" / "r0c0" / "done.json").unlink()  # that sheet is computed again
    res = run_sheets(scene, run, overwrite=True, **kw)
    assert res.exit_code == 0 and victim.read_text() == "precious"
    assert all(p.is_symlink() for p in planted)
    assert not [p for p in run.rglob(f"{PREFIX}*")] and not list(tmp_path.glob(f"{PREFIX}*"))


_HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from engine.outputs import Staging
s = Staging({folder!r})
print(s.dir, flush=True)
time.sleep(120)
"""


def test_stale_staging_folders_are_removed_only_when_their_owner_is_gone(scene, tmp_path):
    run = tmp_path / "run"
    kw = dict(predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", workers=1, **TILING)
    run_sheets(scene, run, **kw)
    sheets = run / "sheets"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = sheets / f"{PREFIX}{HOST}-{int(dead.stdout)}-killed"
    (stale / "partial").mkdir(parents=True)
    live = subprocess.Popen([sys.executable, "-c", _HOLD.format(root=str(ROOT), folder=str(sheets))],
                            stdout=subprocess.PIPE, text=True)
    try:
        held = Path(live.stdout.readline().strip())
        res = run_sheets(scene, run, **kw)  # a resumed run (nothing to compute) cleans up
        assert res.exit_code == 0
        assert not stale.exists()  # its process died (kill -9): removed
        assert held.is_dir()  # a live run's (another shard, say): kept
    finally:
        live.kill()
        live.wait()


# ----------------------------------------------------------------------------- read errors


def test_a_damaged_sheet_read_through_the_mosaic_is_named_not_the_vrt(tmp_path):
    from tests.rasters import damaged_geotiff

    before, after = blob_scene(150, 170)
    csv = cut(before, after, tmp_path / "in", [50, 97], [60, 111])
    bad = damaged_geotiff(tmp_path / "in" / "after_r1c1.tif", after[:, 50:97, 60:111], block=16,
                          origin=(ORIGIN[0] + 60 * PIXEL, ORIGIN[1] - 50 * PIXEL), pixel_size=PIXEL)
    events = []
    res = run_sheets(csv, tmp_path / "run", predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", workers=1,
                     on_event=events.append, **TILING)
    assert res.exit_code == 3 and res.status["r1c1"] == "failed"
    status = pyogrio.read_dataframe(tmp_path / "run" / "status.gpkg").set_index("id")
    message = status.loc["r1c1", "message"]
    assert message.startswith(f"{bad}: cannot read") and "truncated or damaged" in message and ".vrt" not in message
    warning = next(e["message"] for e in events if e["event"] == "log" and "sheet r1c1" in e["message"])
    assert str(bad) in warning and ".vrt" not in warning and "\n" not in warning
    for sid in status.index[status["status"] == "failed"]:  # neighbours whose halo needs it: the same file
        assert str(bad) in status.loc[sid, "message"]


def test_a_damaged_16bit_sheet_read_while_planning_the_radiometry_is_named(tmp_path):
    from tests.rasters import damaged_geotiff

    before, after = blob_scene(100, 110)
    before, after = before.astype("uint16") * 40, after.astype("uint16") * 40  # percentiles are sampled
    csv = cut(before, after, tmp_path / "in", [50], [60])
    bad = damaged_geotiff(tmp_path / "in" / "before_r1c1.tif", before[:, 50:, 60:], block=16,
                          origin=(ORIGIN[0] + 60 * PIXEL, ORIGIN[1] - 50 * PIXEL), pixel_size=PIXEL)
    with pytest.raises(UserError) as err:
        run_sheets(csv, tmp_path / "run", predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", workers=1,
                   **TILING)
    message = str(err.value)
    assert message.startswith(f"{bad}: cannot read cols ") and ".vrt" not in message and "\n" not in message
    assert not (tmp_path / "m.gpkg").exists()


# ----------------------------------------------------------------------------- execution options


def test_device_cpu_pins_no_worker_to_a_gpu(scene, tmp_path, monkeypatch):
    import engine.sheets.execute as execute

    seen = {}

    class Stop(Exception):
        pass

    def fake_run_jobs(job_fn, jobs, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(execute, "local_gpus", lambda: [0, 1])
    monkeypatch.setattr(execute, "run_jobs", fake_run_jobs)
    with pytest.raises(Stop):
        run_sheets(scene, tmp_path / "run", predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg",
                   device="cpu", **TILING)
    assert seen["gpus"] == []
    with pytest.raises(UserError, match="--gpus 0: not with --device cpu"):
        run_sheets(scene, tmp_path / "run2", predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg",
                   device="cpu", gpus=[0], **TILING)


def test_shard_with_outputs_is_refused_in_one_line(scene, tmp_path):
    with pytest.raises(UserError, match="written by --merge-only"):
        run_sheets(scene, tmp_path / "run", predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", shard=(1, 2),
                   **TILING)
    assert not (tmp_path / "run").exists()


def test_shards_starting_at_the_same_moment_agree_on_one_run_record(scene, tmp_path, monkeypatch):
    import time

    import engine.sheets.plan as plan

    run, barrier, results, errors = tmp_path / "run", threading.Barrier(4), {}, []
    write_mosaic = plan.write_mosaic

    def slow_write_mosaic(*args, **kw):  # widens the moment between mosaic/ and run.json
        grid = write_mosaic(*args, **kw)
        time.sleep(0.3)
        return grid

    monkeypatch.setattr(plan, "write_mosaic", slow_write_mosaic)

    def shard(i: int) -> None:
        barrier.wait()
        time.sleep(0.1 * i)  # each sees the others' mosaic/ but no run.json yet
        try:
            results[i] = run_sheets(scene, run, predictor=BlurDifference(), shard=(i, 4), **TILING)
        except Exception as exc:  # pragma: no cover - the failure shown by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=shard, args=(i,)) for i in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(r.exit_code == 0 for r in results.values()) and len(results) == 4
    res = run_sheets(scene, run, predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", merge_only=True, **TILING)
    assert res.stats["done"] == 4 and not list(run.glob(f"{PREFIX}*"))


def test_run_record_creation_has_one_winner_and_other_settings_lose(tmp_path):
    from engine.sheets.run import _create_once

    barrier, wins = threading.Barrier(8), []

    def create(i: int) -> None:
        barrier.wait()
        wins.append((i, _create_once(tmp_path / "run.json", f'{{"writer": {i}}}')))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in wins if won]
    assert len(winners) == 1 and (tmp_path / "run.json").read_text() == f'{{"writer": {winners[0]}}}'
    assert not list(tmp_path.glob(f"{PREFIX}*"))


def test_shards_with_other_settings_on_the_same_run_folder_are_refused(scene, tmp_path):
    run = tmp_path / "run"
    run_sheets(scene, run, predictor=BlurDifference(), shard=(1, 2), **TILING)
    with pytest.raises(UserError, match="other settings"):
        run_sheets(scene, run, predictor=BlurDifference(), shard=(2, 2), threshold=0.3, **TILING)


# ----------------------------------------------------------------------------- the model


def test_a_checkpoint_that_is_not_hrmnet_fails_once_up_front(scene, tmp_path):
    import torch
    from safetensors.torch import save_file

    bad = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3)}, str(bad))
    res = sheets_cli("--sheets", scene, "--run", tmp_path / "run", "--model", bad, "--out-vector", tmp_path / "m.gpkg",
               "--workers", "1")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "not an HRMNet checkpoint" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_model_that_fails_to_load_in_the_worker_stops_the_run_at_the_first_sheet(scene, tmp_path, monkeypatch):
    import engine.core.predictors

    calls = []

    def broken(*args, **kw):
        calls.append(1)
        raise UserError("m.safetensors: corrupt or truncated safetensors file (bad tensor data)")

    monkeypatch.setattr(engine.core.predictors, "load_engine", broken)
    with pytest.raises(UserError, match="m.safetensors: corrupt"):
        run_sheets(scene, tmp_path / "run", predictor=BlurDifference(gain=1.25), out_vector=tmp_path / "m.gpkg",
                   workers=1, **TILING)
    assert len(calls) == 1
    assert not list((tmp_path / "run").glob("failed/*")) and not list((tmp_path / "run" / "sheets").iterdir())
    assert not (tmp_path / "m.gpkg").exists()


# ----------------------------------------------------------------------------- empty layer


@pytest.mark.parametrize("name", ["none.gpkg", "none.fgb"])
def test_an_empty_merged_layer_is_named_after_its_file(scene, tmp_path, name):
    res = run_sheets(scene, tmp_path / "run", predictor=BlurDifference(gain=0.0), out_vector=tmp_path / name,
                     workers=1, **TILING)
    assert res.exit_code == 0 and res.stats["polygons"] == 0
    assert [layer for layer, _ in pyogrio.list_layers(tmp_path / name)] == ["none"]


# ----------------------------------------------------------------------------- SLURM script


def test_print_slurm_script_runs_the_same_command_on_its_own_cluster(tmp_path):
    import shlex

    res = sheets_cli("--sheets", "/data/grid.gpkg", "--id-field", "sheet", "--before", "/ortho/2019/{sheet}.tif",
               "--after", "/ortho/2023/{sheet}.tif", "--model", "/models/best.safetensors", "--run", "/scratch/my run",
               "--out-vector", "/data/changes.shp", "--min-area", "20", "--bands-before", "3,2,1", "--device", "cuda",
               "--print-slurm-script", "--slurm-workers", "4", "--slurm-partition", "gpu",
               "--slurm-python", "/opt/hrmnet/bin/python")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    script = res.stdout
    assert script.startswith("#!/bin/bash\n") and "#SBATCH --ntasks=4" in script and "#SBATCH --partition=gpu" in script
    (tmp_path / "s.sh").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "s.sh")]).returncode == 0
    line = next(ln for ln in script.splitlines() if " -m engine sheets " in ln)
    argv = shlex.split(line.replace('"$RUN/scheduler-$SLURM_JOB_ID.json"', "SCHED"))
    assert argv[:4] == ["$PY", "-m", "engine", "sheets"] and argv[-2:] == ["--scheduler-file", "SCHED"]
    opts = dict(zip(argv[4:-2:2], argv[5:-2:2]))
    assert opts == {"--sheets": "/data/grid.gpkg", "--run": "/scratch/my run", "--model": "/models/best.safetensors",
                    "--id-field": "sheet", "--before": "/ortho/2019/{sheet}.tif", "--after": "/ortho/2023/{sheet}.tif",
                    "--out-vector": "/data/changes.shp", "--bands-before": "3,2,1", "--device": "cuda",
                    "--min-area": "20.0"}
    assert "PY=/opt/hrmnet/bin/python" in script and "RUN='/scratch/my run'" in script
    res = sheets_cli("--sheets", "s.csv", "--run", "r", "--model", "m", "--shard", "1/2", "--print-slurm-script")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: --shard: not with --print-slurm-script (the script starts its own Dask cluster)"]


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_on_two_dask_workers_is_one_line_exit_2(scene, tmp_path):
    from tests.engine.detect.conftest import _checkpoint

    model = _checkpoint(tmp_path / "m.safetensors", None)
    run = tmp_path / "run"
    res = sheets_cli("--sheets", scene, "--run", run, "--model", model, "--out-vector", tmp_path / "m.gpkg",
               "--workers", "2", "--device", "cuda", "--progress", "none", "--tile-size", "64", "--overlap", "16")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == ["error: --device cuda: CUDA is not available on this machine "
                                               "(use --device cpu or auto)"]
    assert not list(run.glob("failed/*")) and not (tmp_path / "m.gpkg").exists()


# ----------------------------------------------------------------------------- the run folder


def test_restart_never_deletes_a_folder_that_holds_no_run(scene, tmp_path):
    data = tmp_path / "data"
    (data / "sheets").mkdir(parents=True)
    (data / "sheets" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds no sheets run"):
        run_sheets(scene, data, predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", restart=True, **TILING)
    assert (data / "sheets" / "notes.txt").read_text() == "mine"

    # an input kept in the run folder: see test_restart.py


def test_a_run_folder_holding_only_the_sheet_list_is_a_new_run(scene, tmp_path):
    """As the QGIS algorithm does with a layer that is not a file: the list saved into the run folder."""
    run = tmp_path / "run"
    run.mkdir()
    listed = run / "sheets-from-qgis.csv"
    listed.write_text(scene.read_text().replace("before_", f"{scene.parent}/before_").replace("after_", f"{scene.parent}/after_"))
    res = run_sheets(listed, run, predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", workers=1, **TILING)
    assert res.exit_code == 0 and listed.exists()
    res = run_sheets(listed, run, predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", restart=True, workers=1,
                     **TILING)
    assert res.exit_code == 0 and listed.exists()
