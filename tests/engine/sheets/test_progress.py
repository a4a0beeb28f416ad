"""Progress of the sheets command: ``--progress jsonl`` counts sheets and tiles up to their
totals (tiles as they go with --workers 1), ``--progress bar`` shows both on stderr, a
resumed run starts where the last one ended."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.sheets.run import run_sheets

ROOT = Path(__file__).resolve().parents[3]
TILING = ("--tile-size", "64", "--overlap", "16")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from tests.engine.detect.conftest import _checkpoint

    return _checkpoint(tmp_path_factory.mktemp("model") / "m.safetensors", None)


def _sheets(scene: Path, run: Path, model: Path, progress: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "engine", "sheets", "--sheets", scene, "--run", run, "--model", model,
            "--out-vector", run.parent / f"{run.name}.gpkg", "--workers", "1", *TILING, "--batch-size", "1",
            "--progress", progress]
    return subprocess.run(list(map(str, argv)), cwd=ROOT, capture_output=True, text=True, timeout=300)


def _counts(events: list, stage: str) -> tuple[list, set]:
    steps = [e for e in events if e["event"] == "progress" and e["stage"] == stage]
    return [e["done"] for e in steps], {e["total"] for e in steps}


def test_jsonl_counts_sheets_and_tiles_up_to_their_totals(scene, tmp_path, model):
    res = _sheets(scene, tmp_path / "run", model, "jsonl")
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    start = next(e for e in events if e["event"] == "start")
    sheets, sheets_total = _counts(events, "sheets")
    assert sheets == [0, 1, 2, 3, 4] and sheets_total == {4}
    tiles, tiles_total = _counts(events, "tiles")
    assert tiles_total == {start["tiles_sheets"]} and tiles[0] == 0 and tiles[-1] == start["tiles_sheets"]
    assert tiles == sorted(set(tiles))  # only ever up
    sheet_tiles = [e["tiles"] for e in events if e["event"] == "sheet"]
    assert sum(sheet_tiles) == start["tiles_sheets"]
    assert len(tiles) > len(sheet_tiles) + 1  # tiles as they go, not only when a sheet ends
    assert events[-1]["event"] == "done"

    # resumed: both counts start at their totals
    again = []
    run_sheets(scene, tmp_path / "run", model=model, out_vector=tmp_path / "run.gpkg", workers=1, tile_size=64,
               overlap=16, batch_size=1, on_event=again.append)
    assert _counts(again, "sheets")[0] == [4] and _counts(again, "tiles")[0] == [start["tiles_sheets"]]


def test_bar_shows_tiles_on_stderr(scene, tmp_path, model):
    res = _sheets(scene, tmp_path / "run", model, "bar")
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    total = json.loads(next((tmp_path / "run").glob("sheets/*/done.json")).read_text())  # one sheet's record
    assert total["tiles"] >= 1
    assert "tiles: 100%" in res.stderr and "sheets: 100%" in res.stderr and "4/4" in res.stderr
    assert "tile/s" in res.stderr
