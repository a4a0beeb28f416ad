"""``--restart`` removes only what the run created, as its manifest in run.json lists it
(issue 18); a user's files in the run folder stay; a folder that is not a run is refused in
one line; a run folder that cannot be written is one line before any work."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.sheets.run import run_sheets
from tests import mounts
from tests.cli_errors import one_line_error

from .standins import BlurDifference, sheets_cli

ROOT = Path(__file__).resolve().parents[3]
TILING = {"tile_size": 64, "overlap": 16}


def _files(folder: Path) -> set:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_restart_keeps_a_users_files_and_removes_only_the_manifest(scene, tmp_path):
    run = tmp_path / "run"
    kw = dict(predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", workers=1, **TILING)
    run_sheets(scene, run, **kw)
    record = json.loads((run / "run.json").read_text())
    manifest = record["manifest"]
    assert "run.json" in manifest["files"] and "sheets/r0c0" in manifest["sheet_folders"]
    assert all(f"mosaic/{Path(m).name}" in manifest["files"] for m in record["mosaics"])
    mine = {"mosaic/m.txt": "my notes", "sheets/r0c0/notes.txt": "checked", "sheets/mine.txt": "mine",
            "failed/why.txt": "x", "notes.txt": "top"}
    for rel, text in mine.items():
        (run / rel).parent.mkdir(exist_ok=True)
        (run / rel).write_text(text)
    old = _files(run) - set(mine)

    events = []
    res = run_sheets(scene, run, restart=True, on_event=events.append, **kw)
    assert res.exit_code == 0
    assert next(e for e in events if e["event"] == "start")["todo"] == 4  # started over
    for rel, text in mine.items():
        assert (run / rel).read_text() == text, rel
    assert {f for f in old if f.startswith("sheets/")} <= _files(run)  # computed again

    # after a restart that leaves the user's files, the run resumes as any other
    res = run_sheets(scene, run, on_event=events.append, **kw)
    assert res.exit_code == 0 and (run / "mosaic" / "m.txt").exists()


def test_a_foreign_run_json_is_not_a_run_and_nothing_is_touched(scene, tmp_path, model_path):
    run = tmp_path / "run"
    (run / "sheets").mkdir(parents=True)
    (run / "run.json").write_text('{"name": "my training run", "epochs": 3}')
    (run / "sheets" / "mine.txt").write_text("mine")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for restart in (True, False):
        with pytest.raises(UserError, match="not a sheets run record"):
            run_sheets(scene, run, predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", restart=restart,
                       **TILING)
    res = sheets_cli("--sheets", scene, "--run", run, "--model", model_path, "--out-vector", tmp_path / "m.gpkg",
               "--restart")
    one_line_error(res, str(run / "run.json"), "not a sheets run record")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "m.gpkg").exists()


def test_restart_in_a_folder_holding_no_run_is_refused(scene, tmp_path):
    data = tmp_path / "data"
    (data / "mosaic").mkdir(parents=True)
    (data / "mosaic" / "m.txt").write_text("mine")
    (data / "list.txt").write_text("mine")
    with pytest.raises(UserError, match="holds no sheets run"):
        run_sheets(scene, data, predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", restart=True, **TILING)
    assert _files(data) == {"mosaic/m.txt", "list.txt"}


def test_restart_never_removes_an_input_kept_in_the_run_folder(scene, tmp_path):
    run = tmp_path / "run"
    kw = dict(predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", workers=1, **TILING)
    run_sheets(scene, run, **kw)
    moved = run / "mosaic" / "after_r1c1.tif"  # the user keeps a sheet raster in mosaic/
    (scene.parent / "after_r1c1.tif").rename(moved)
    scene.write_text(scene.read_text().replace("after_r1c1.tif", str(moved)))
    res = run_sheets(scene, run, restart=True, **kw)
    assert res.exit_code == 0 and moved.exists()
    with pytest.raises(UserError, match="--restart would delete the input"):  # an input where the run writes
        listed = run / "sheets" / "r0c0" / "prob.tif"
        scene.write_text(scene.read_text().replace("before_r0c0.tif", str(listed)))
        run_sheets(scene, run, restart=True, **kw)
    assert listed.exists() and (run / "run.json").exists()


@pytest.fixture()
def model_path(tmp_path) -> Path:
    from tests.engine.detect.conftest import _checkpoint

    return _checkpoint(tmp_path / "model.safetensors", None)


@pytest.fixture()
def read_only():
    """make(folder): ``folder`` read-only for this user until the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda folder: stack.enter_context(mounts.read_only(folder))


def test_a_read_only_run_folder_is_one_line_before_any_work(scene, tmp_path, model_path, read_only):
    run = tmp_path / "run"
    res = sheets_cli("--sheets", scene, "--run", run, "--model", model_path, "--out-vector", tmp_path / "m.gpkg",
               "--workers", "1", "--tile-size", "64", "--overlap", "16", "--progress", "none")
    assert res.returncode == 0, res.stderr
    (tmp_path / "m.gpkg").unlink()
    (run / "sheets" / "r1c1" / "done.json").unlink()  # one sheet to compute
    read_only(run)
    res = sheets_cli("--sheets", scene, "--run", run, "--model", model_path, "--out-vector", tmp_path / "m.gpkg",
               "--workers", "1", "--tile-size", "64", "--overlap", "16", "--progress", "none")
    one_line_error(res, str(run), "not writable")
    assert not (tmp_path / "m.gpkg").exists()
