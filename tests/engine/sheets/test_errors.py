"""The sheets command's one-line errors and warnings of issue 18: everything checked before
any sheet is computed (output folders writable, review outputs from a model that gives the
score, an ONNX graph that takes and gives what HRMNet does), the model-fit warnings detect
prints, a bad scheduler address or file at once, Dask's log noise kept in the run folder."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.sheets.run import run_sheets
from tests import mounts
from tests.cli_errors import one_line_error
from tests.mounts import fill, read_only

from .standins import BlurDifference, sheets_cli

ROOT = Path(__file__).resolve().parents[3]
TILING = {"tile_size": 64, "overlap": 16}
DEMO_ONNX = ROOT / "engine" / "demo" / "hrmnet_demo.onnx"


def _nothing_computed(run: Path) -> bool:
    return not run.exists() or not list(run.glob("sheets/*/done.json"))


# ----------------------------------------------------------------------------- the model


def _foreign_graph_with_hrmnet_metadata(path: Path, review: bool = True) -> Path:
    """A graph carrying the demo export's metadata but taking two 3-channel inputs and giving
    a rank-3 output (or, with ``review=False``, HRMNet's contract without the hard output)."""
    import onnx
    from onnx import TensorProto, helper

    meta = {p.key: p.value for p in onnx.load(str(DEMO_ONNX), load_external_data=False).metadata_props}
    dims = ["batch", 3, "h", "w"]
    if review:
        nodes = [helper.make_node("Sub", ["a", "b"], ["d"]), helper.make_node("ReduceMean", ["d"], ["change"], keepdims=0)]
        inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in ("a", "b")]
        outputs = [helper.make_tensor_value_info("change", TensorProto.FLOAT, ["batch", "h", "w"])]
    else:
        nodes = [helper.make_node("ReduceMean", ["input"], ["change"], keepdims=1, axes=[1])]
        inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 6, "h", "w"])]
        outputs = [helper.make_tensor_value_info("change", TensorProto.FLOAT, ["batch", 1, "h", "w"])]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=[helper.make_opsetid("", 13)])
    helper.set_model_props(model, meta)
    onnx.save(model, str(path))
    return path


@pytest.mark.skipif(not DEMO_ONNX.exists(), reason="no ONNX demo model")
def test_an_onnx_graph_that_is_not_hrmnet_is_one_line_in_sheets_and_detect(scene, tmp_path):
    pytest.importorskip("onnx")
    bad = _foreign_graph_with_hrmnet_metadata(tmp_path / "impostor.onnx")
    run = tmp_path / "run"
    res = sheets_cli("--sheets", scene, "--run", run, "--model", bad, "--out-vector", tmp_path / "m.gpkg", "--workers", "1")
    one_line_error(res, str(bad), "not an HRMNet graph", "takes 2 inputs")
    assert not run.exists() and not (tmp_path / "m.gpkg").exists()
    res = sheets_cli("--before", scene.parent / "before_r0c0.tif", "--after", scene.parent / "after_r0c0.tif", "--model", bad,
               "--out-vector", tmp_path / "d.gpkg", command="detect")
    one_line_error(res, str(bad), "not an HRMNet graph")
    assert not (tmp_path / "d.gpkg").exists()


@pytest.mark.skipif(not DEMO_ONNX.exists(), reason="no ONNX demo model")
def test_out_review_with_a_model_without_the_review_score_is_refused_up_front(scene, tmp_path):
    pytest.importorskip("onnx")
    plain = _foreign_graph_with_hrmnet_metadata(tmp_path / "plain.onnx", review=False)
    run = tmp_path / "run"
    res = sheets_cli("--sheets", scene, "--run", run, "--model", plain, "--out-vector", tmp_path / "m.gpkg",
               "--out-review", tmp_path / "r.vrt", "--workers", "1")
    one_line_error(res, str(plain), "gives no review (hard-region) score")
    assert not run.exists()

    class NoReview(BlurDifference):
        gives_review = False

    with pytest.raises(UserError, match="predictor: gives no review"):
        run_sheets(scene, run, predictor=NoReview(), out_vector=tmp_path / "m.gpkg",
                   out_review_areas=tmp_path / "areas.gpkg", **TILING)
    assert not run.exists()


def test_sheets_print_the_demonstration_model_and_gsd_warnings_detect_prints(scene, tmp_path):
    from engine.checkpoint import ModelInfo

    info = ModelInfo(gsd=2.0, training={"purpose": "demonstration on synthetic scenes"})
    events = []
    res = run_sheets(scene, tmp_path / "run", predictor=BlurDifference(), model_info=info,
                     out_vector=tmp_path / "m.gpkg", workers=1, on_event=events.append, **TILING)
    assert res.exit_code == 0
    warnings = [e["message"] for e in events if e["event"] == "log" and e["level"] == "warning"]
    assert any("predictor: this is a demonstration model" in w for w in warnings), warnings
    assert any(w.startswith(str(scene.parent / "before_r0c0.tif")) and "0.5 m/pixel is 4x finer" in w
               for w in warnings), warnings
    assert len(warnings) == 2  # once for the run, not once per sheet


# ----------------------------------------------------------------------------- outputs


@pytest.fixture()
def unwritable(tmp_path):
    """A folder this user cannot write in: chmod, or for root a read-only bind mount."""
    folder = tmp_path / "locked"
    folder.mkdir()
    with read_only(folder):
        yield folder


def test_an_unwritable_output_folder_is_found_before_any_sheet(scene, tmp_path, unwritable):
    run = tmp_path / "run"
    for role in ("out_vector", "out_mask"):
        outputs = {"out_vector": tmp_path / "m.gpkg", role: unwritable / ("m.gpkg" if role == "out_vector" else "m.vrt")}
        with pytest.raises(UserError, match=f"{unwritable}.* is not writable"):
            run_sheets(scene, run, predictor=BlurDifference(), workers=1, **outputs, **TILING)
        assert _nothing_computed(run)


# ----------------------------------------------------------------------------- an existing cluster


def test_a_bad_scheduler_file_or_address_is_one_line(scene, tmp_path):
    import socket

    garbage = tmp_path / "garbage.json"
    garbage.write_text("this is { not json")
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"type": "Scheduler"}')
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    cases = [(["--scheduler-file", garbage], [f"--scheduler-file {garbage}: not a Dask scheduler file"]),
             (["--scheduler-file", wrong], ['no "address"']),
             (["--scheduler", "http://127.0.0.1:8787/status"], ["not a Dask scheduler address", "http://"]),
             (["--scheduler", f"tcp://127.0.0.1:{closed}"], [f"--scheduler tcp://127.0.0.1:{closed}: cannot connect"])]
    for args, fragments in cases:
        run = tmp_path / "run"
        with pytest.raises(UserError) as err:
            run_sheets(scene, run, predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg",
                       **{args[0][2:].replace("-", "_"): str(args[1])}, **TILING)
        assert all(f in str(err.value) for f in fragments) and "\n" not in str(err.value), str(err.value)
        assert not run.exists()
    res = sheets_cli("--sheets", scene, "--run", tmp_path / "run", "--model", DEMO_ONNX, "--out-vector", tmp_path / "m.gpkg",
               "--scheduler-file", garbage, "--progress", "none")
    one_line_error(res, *cases[0][1])


_NOISY_RUN = """
import sys
sys.path.insert(0, {root!r})
from tests.engine.sheets.standins import Noisy
from engine.sheets.run import run_sheets
res = run_sheets({csv!r}, {run!r}, predictor=Noisy(), out_vector={out!r}, workers=2, tile_size=64, overlap=16)
print(res.exit_code)
"""


def test_dask_log_noise_of_a_run_that_succeeded_stays_in_the_run_folder(scene, tmp_path):
    import contextlib
    import socket

    run = tmp_path / "run"
    code = _NOISY_RUN.format(root=str(ROOT), csv=str(scene), run=str(run), out=str(tmp_path / "m.gpkg"))
    with socket.socket() as busy:  # Dask's default HTTP port taken (another cluster): no "port in use" noise
        with contextlib.suppress(OSError):
            busy.bind(("127.0.0.1", 8787))
            busy.listen()
        res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "0", res.stderr
    assert "hrmnet-test" not in res.stderr and "Traceback" not in res.stderr and "8787" not in res.stderr, res.stderr
    log = (run / "dask.log").read_text()
    assert "hrmnet-test: Failed to communicate with scheduler during heartbeat" in log
    assert "dask.log" in __import__("json").loads((run / "run.json").read_text())["manifest"]["files"]


# ----------------------------------------------------------------------------- damaged sheets


@pytest.mark.parametrize("victim", ["before_r0c0.tif", "after_r1c1.tif"])
def test_a_sheet_truncated_to_300_bytes_fails_alone_named_itself(scene, tmp_path, victim):
    bad = scene.parent / victim
    bad.write_bytes(bad.read_bytes()[:300])
    sid = victim.split("_")[1][:-4]
    events = []
    res = run_sheets(scene, tmp_path / "run", predictor=BlurDifference(), out_vector=tmp_path / "m.gpkg", workers=1,
                     on_event=events.append, **TILING)
    assert res.exit_code == 3 and res.status[sid] == "failed"
    assert all(status == "done" for other, status in res.status.items() if other != sid)
    warning = next(e["message"] for e in events if e["event"] == "log" and e["message"].startswith(f"sheet {sid}: "))
    assert str(bad) in warning and ".vrt" not in warning and "without its pixels" in warning
    import pyogrio

    status = pyogrio.read_dataframe(tmp_path / "run" / "status.gpkg").set_index("id")
    assert status.loc[sid, "message"].startswith(str(bad)) and ".vrt" not in status.loc[sid, "message"]
    assert (tmp_path / "m.gpkg").exists()


# ----------------------------------------------------------------------------- a full disk


@pytest.fixture()
def small_disk(tmp_path):
    """make(free_bytes): a 256 KiB tmpfs (root only) filled up but ``free_bytes`` (again
    after the disk got used: the filler grows)."""
    with mounts.small_disk(tmp_path / "disk", "256k") as mnt:
        yield lambda free: fill(mnt, free)


def test_a_full_disk_for_the_merged_layer_is_one_line_and_leaves_nothing(scene, tmp_path, small_disk):
    disk = small_disk(0)
    out = disk / "merged.gpkg"
    with pytest.raises(UserError) as err:
        run_sheets(scene, tmp_path / "run", predictor=BlurDifference(), out_vector=out, workers=1, **TILING)
    assert str(err.value) == f"{out}: no space left on device"
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_a_full_disk_in_the_run_folder_stops_the_run_in_one_line(scene, tmp_path, small_disk):
    disk = small_disk(24 * 1024)  # room for run.json and the mosaics, not for a sheet's results
    run, out = disk / "run", tmp_path / "merged.gpkg"
    with pytest.raises(UserError) as err:
        run_sheets(scene, run, predictor=BlurDifference(), out_vector=out, workers=1, **TILING)
    assert str(err.value) == f"{run}: no space left on device"
    assert not out.exists() and not list(run.glob("sheets/*")) and not list(run.rglob(".hrmnet-tmp-*"))
    res = sheets_cli("--sheets", scene, "--run", run, "--model", DEMO_ONNX, "--out-vector", out, "--workers", "2",
               "--tile-size", "64", "--overlap", "16", "--progress", "none", "--restart")  # on Dask workers
    one_line_error(res, f"{run}: no space left on device", skip_warnings=True)
    assert not out.exists() and not list(run.glob("sheets/*")) and not list(run.rglob(".hrmnet-tmp-*"))


def test_a_full_disk_for_the_status_layer_leaves_no_output_of_the_command(scene, tmp_path, small_disk):
    """All or nothing across the command's outputs: the merged layer (on a healthy disk) is
    not left behind when the status layer cannot be written in the full run folder."""
    run, out = small_disk(256 * 1024) / "run", tmp_path / "merged.gpkg"
    options = ["--run", run, "--model", DEMO_ONNX, "--tile-size", "64", "--overlap", "16", "--progress", "none"]
    shard = sheets_cli("--sheets", scene, *options, "--shard", "1/1", "--workers", "1")  # the sheets, no merge
    assert shard.returncode == 0, shard.stderr
    assert len(list(run.glob("sheets/*/done.json"))) == 4 and not (run / "status.gpkg").exists()
    small_disk(0)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    res = sheets_cli("--sheets", scene, *options, "--out-vector", out, "--merge-only")
    one_line_error(res, f"{run / 'status.gpkg'}: no space left on device", skip_warnings=True)
    assert not list(tmp_path.glob("merged*")) and not list(tmp_path.glob(".hrmnet-tmp-*"))
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # no status, outputs.json, staging
