"""The runner against a stand-in engine (a tiny ``engine`` package written per test)."""
from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from hrmnet_qgis.runner import EngineCancelled, EngineError, OutputGuard, run_engine

FAKE = '''
import json, os, signal, sys, time
from pathlib import Path

def emit(**e):
    print(json.dumps(e), flush=True)

args = sys.argv[1:]
mode = args[0]
out = Path(args[args.index("--out") + 1]) if "--out" in args else None
if mode == "ok":
    emit(event="start", device="cpu", precision="fp32", tiles=3)
    print("a line that is not JSON", flush=True)
    print(json.dumps({"kappa": 0.5}), flush=True)
    for k in range(1, 4):
        emit(event="progress", done=k, total=3, stage="infer")
    emit(event="log", level="warning", message="careful")
    out.write_text("result")
    emit(event="done", outputs={"vector": str(out)}, stats={"polygons": 2})
elif mode == "usererror":
    emit(event="error", message="b.tif: rasters do not overlap")
    print("error: b.tif: rasters do not overlap", file=sys.stderr)
    sys.exit(2)
elif mode == "stderronly":
    print("error: a.tif: not a raster GDAL can read", file=sys.stderr)
    sys.exit(2)
elif mode == "crash":
    raise ValueError("boom")
elif mode == "slow":
    # Leaves a hidden temporary and a sidecar, like the real engine, until interrupted;
    # this stand-in does not roll back (the runner must clean up).
    (out.parent / ("." + out.stem + ".prob%d.tif" % os.getpid())).write_text("partial")
    (out.parent / (".hrmnet-tmp-abc123-%d-x1y2" % os.getpid())).mkdir()
    (out.parent / (".hrmnet-tmp-abc123-%d-x1y2" % os.getpid()) / "mask.tif").write_text("partial")
    out.with_suffix(".dbf").write_text("partial")
    # Another job writing beside the same output meanwhile: its files are not ours to remove.
    (out.parent / (out.stem + ".v2.tif")).write_text("other job")
    (out.parent / ("." + out.stem + ".prob1%d.tif" % os.getpid())).write_text("other job")
    (out.parent / ".hrmnet-tmp-abc123-1-z9").mkdir()
    emit(event="start", device="cpu", precision="fp32")
    for k in range(1, 1000):
        emit(event="progress", done=k, total=1000)
        time.sleep(0.05)
'''


@pytest.fixture()
def fake_root(tmp_path) -> Path:
    root = tmp_path / "root"
    (root / "engine").mkdir(parents=True)
    (root / "engine" / "__init__.py").write_text("")
    (root / "engine" / "__main__.py").write_text(textwrap.dedent(FAKE))
    return root


def run(root, mode, *extra, **kw):
    return run_engine(mode, list(extra), python=sys.executable, root=root, **kw)


def test_events_reach_the_handler_and_the_done_event_is_returned(fake_root, tmp_path):
    events = []
    out = tmp_path / "out.gpkg"
    result = run(fake_root, "ok", "--out", str(out), on_event=events.append)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds.count("progress") == 3 and kinds[-1] == "done"
    assert {"event": "log", "level": "info", "message": "a line that is not JSON"} in events
    assert result.done["stats"] == {"polygons": 2} and result.start["device"] == "cpu"
    assert result.extra == [{"kappa": 0.5}]  # JSON that is not an event is kept aside
    assert out.read_text() == "result"


def test_user_error_is_the_engines_one_line_message(fake_root):
    with pytest.raises(EngineError) as exc:
        run(fake_root, "usererror")
    assert str(exc.value) == "b.tif: rasters do not overlap" and exc.value.returncode == 2
    with pytest.raises(EngineError, match=r"^a\.tif: not a raster GDAL can read$"):
        run(fake_root, "stderronly")


def test_a_crash_names_the_exception_not_the_traceback(fake_root):
    with pytest.raises(EngineError) as exc:
        run(fake_root, "crash")
    assert str(exc.value) == "the engine crashed: ValueError: boom"
    assert any("Traceback" in line for line in exc.value.stderr)


def test_cancel_stops_the_engine_and_removes_what_it_left(fake_root, tmp_path):
    out = tmp_path / "out.shp"
    (tmp_path / "unrelated.shp").write_text("keep")
    (tmp_path / "outline.tif").write_text("keep")  # starts with "out" but is not out.*
    seen = []
    started = time.monotonic()
    with pytest.raises(EngineCancelled):
        run(fake_root, "slow", "--out", str(out), cleanup=[str(out)], stop_grace_s=5,
            on_event=seen.append, is_cancelled=lambda: len(seen) >= 3)
    assert time.monotonic() - started < 60
    assert sorted(p.name for p in tmp_path.iterdir() if "1" not in p.name and "v2" not in p.name) == [
        "outline.tif", "root", "unrelated.shp"]
    others = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".out.prob1", ".hrmnet", "out.v2")))
    assert len(others) == 3, "another job's files beside the output are kept"


def test_guard_keeps_outputs_that_existed_before(tmp_path):
    old = tmp_path / "out.tif"
    old.write_text("old result")
    guard = OutputGuard([str(old), str(tmp_path / "new.tif")], pid=77)
    (tmp_path / ".out.mask77.tif").write_text("tmp")
    (tmp_path / "new.tif").write_text("partial")
    (tmp_path / "new.tif.aux.xml").write_text("partial")
    assert sorted(p.name for p in guard.clean()) == [".out.mask77.tif", "new.tif", "new.tif.aux.xml"]
    assert old.read_text() == "old result"


def test_guard_removes_only_what_this_run_created(tmp_path):
    """Issue 9: new files named like an output (out.v2.tif, another process's temporaries) may
    be another job's; only the targets, their sidecars and this run's temporaries go."""
    guard = OutputGuard([str(tmp_path / "out.shp"), str(tmp_path / "dataset")], pid=4321)
    mine = ["out.shp", "out.dbf", "out.shx", "out.prj", "out.cpg", ".out.vec4321.shp", ".dataset.part-4321",
            ".hrmnet-tmp-0a1b2c-4321-k3j4"]
    others = ["out.v2.shp", "out_old.dbf", ".out.vec14321.shp", ".dataset.part-43210", ".hrmnet-tmp-0a1b2c-432-aa",
              "dataset.zip", ".out.shp.lock"]
    for name in mine + others:
        (tmp_path / name).write_text("x")
    assert sorted(p.name for p in guard.clean()) == sorted(mine)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)
    assert OutputGuard([str(tmp_path / "x.tif")]).leftovers() == []  # no pid: temporaries are never guessed


def test_a_missing_interpreter_is_a_clear_error(fake_root, tmp_path):
    with pytest.raises(EngineError, match="cannot start the engine's Python"):
        run_engine("ok", [], python=str(tmp_path / "no-python"), root=fake_root)
