"""engine.outputs, the rules every writing command follows (issue 9): an output never
replaces an input, temporaries are private and never follow a planted symlink, commits
refuse a target that appeared meanwhile, stale temporaries of dead runs are removed,
and a full disk is one line naming the user's output."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.outputs import (PREFIX, Staging, check_folder_output, check_output, commit, display, hold_folder,
                            release_folder, remove_stale, staged_file, staged_folder, write_error)
from tests.mounts import fill, small_disk

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def tree(tmp_path):
    """data/in.tif (an input), data/sub/, link -> data, and a hard link of the input."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "in.tif").write_bytes(b"input pixels")
    (tmp_path / "link").symlink_to(data, target_is_directory=True)
    os.link(data / "in.tif", tmp_path / "hard.tif")
    return tmp_path


@pytest.mark.parametrize("how", ["dotdot", "symlinked folder", "hard link", "symlinked file"])
def test_an_output_that_reaches_an_input_is_refused(tree, how):
    out = {"dotdot": tree / "data" / "sub" / ".." / "in.tif", "symlinked folder": tree / "link" / "in.tif",
           "hard link": tree / "hard.tif", "symlinked file": tree / "alias.tif"}[how]
    if how == "symlinked file":
        out.symlink_to(tree / "data" / "in.tif")
    with pytest.raises(UserError, match="the mask output would replace the input") as err:
        check_output(out, "mask", [tree / "data" / "in.tif"])
    assert str(err.value).startswith(f"{out}: ") and "\n" not in str(err.value)
    check_output(tree / "data" / "sub" / "in.tif", "mask", [tree / "data" / "in.tif"])  # another file: fine


def test_a_shapefile_output_is_refused_when_one_of_its_sidecars_is_an_input(tree):
    (tree / "data" / "labels.dbf").write_bytes(b"attributes")
    with pytest.raises(UserError, match="would replace the input .*labels.dbf"):
        check_output(tree / "link" / "labels.shp", "vector", [tree / "data" / "labels.dbf"])
    with pytest.raises(UserError, match=r"would replace the input .*labels\.(shx|dbf)$"):  # an input's sidecar
        check_output(tree / "link" / "labels.shp", "vector", [tree / "data" / "labels.SHP"])


def test_an_output_folder_that_is_or_contains_an_input_is_refused(tree):
    for out in (tree / "link", tree / "data" / "sub" / "..", tree / "link" / "in.tif"):
        with pytest.raises(UserError, match="output folder would replace the input"):
            check_folder_output(out, [tree / "data" / "in.tif"])
    assert check_folder_output(tree / "link" / "sub", [tree / "data" / "in.tif"]) == tree / "data" / "sub"


@pytest.mark.parametrize("name", ["a\nb.tif", "tab\there.tif", "bell\x07.tif"])
def test_control_characters_in_an_output_name_are_refused(tmp_path, name):
    with pytest.raises(UserError, match="control characters"):
        check_output(tmp_path / name, "mask", [])


def test_a_staging_folder_is_private_and_leaves_nothing(tmp_path):
    with Staging(tmp_path) as s:
        assert s.dir.parent == tmp_path and s.dir.name.startswith(PREFIX)
        assert stat.S_IMODE(s.dir.stat().st_mode) == 0o700
        s.path("mask.tif", shown=tmp_path / "m.tif").write_bytes(b"x")
        assert display(s.path("mask.tif")) == str(tmp_path / "m.tif")  # messages name the user's output
        with Staging(tmp_path) as other:
            assert other.dir != s.dir  # mkdtemp: never the same (predictable) name twice
    assert list(tmp_path.iterdir()) == []


def test_a_planted_symlink_at_the_target_is_replaced_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.tif"
    target.symlink_to(victim)
    with pytest.raises(UserError, match="appeared while this run was working"):
        with staged_file(target, overwrite=False) as tmp:
            tmp.write_bytes(b"result")
    with staged_file(target, overwrite=True) as tmp:
        tmp.write_bytes(b"result")
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and target.read_bytes() == b"result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "victim.txt"]


def test_a_commit_refuses_a_target_that_appeared_meanwhile_and_moves_nothing(tmp_path):
    with Staging(tmp_path) as s:
        s.path("a.tif").write_bytes(b"a")
        s.path("b.tif").write_bytes(b"b")
        (tmp_path / "b.tif").write_bytes(b"another run's")
        moves = [(s, "a.tif", tmp_path / "a.tif", tmp_path / "a.tif"), (s, "b.tif", tmp_path / "b.tif", tmp_path / "b.tif")]
        with pytest.raises(UserError, match=r"b\.tif: appeared while this run was working"):
            commit(moves, overwrite=False)
        assert not (tmp_path / "a.tif").exists() and (tmp_path / "b.tif").read_bytes() == b"another run's"
        commit(moves, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]


_HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from engine.outputs import Staging, hold_folder
s = Staging({folder!r})
hold_folder({folder!r})
print(s.dir, flush=True)
time.sleep(300)
"""


def _holder(folder: Path) -> tuple[subprocess.Popen, Path]:
    """A process holding a staging folder (and the folder lock) in ``folder`` until killed."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_HOLDER.format(root=str(ROOT), folder=str(folder)))],
                            stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_stale_staging_of_a_killed_run_is_removed_a_live_one_kept(tmp_path):
    proc, staged = _holder(tmp_path)
    try:
        (staged / "mask.tif").write_bytes(b"partial")
        others = [tmp_path / f"{PREFIX}zz", tmp_path / "mine.tif", tmp_path / f"{PREFIX}0a1b2c-1-abc"]
        others[0].mkdir()
        others[1].write_text("user file")
        others[2].symlink_to(tmp_path / "mine.tif")  # our pattern, but a symlink: never touched
        assert remove_stale(tmp_path) == [] and staged.exists()  # its process is alive and holds the lock
        with pytest.raises(UserError, match="another run is writing to this folder"):
            hold_folder(tmp_path)  # two runs never fill one run folder
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert remove_stale(tmp_path) == [staged] and not staged.exists()
    assert all(os.path.lexists(p) for p in others)
    hold_folder(tmp_path)  # the killed run's lock went with it
    release_folder(tmp_path)


def test_staged_folder_appears_in_one_step_and_refuses_one_that_appeared(tmp_path):
    out = tmp_path / "ds"
    with staged_folder(out, overwrite=False) as stage:
        (stage / "a.txt").write_text("1")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "1" and stat.S_IMODE(out.stat().st_mode) != 0o700
    with pytest.raises(UserError, match="appeared while this run was working"):
        with staged_folder(out, overwrite=False) as stage:
            (stage / "b.txt").write_text("2")
    with staged_folder(out, overwrite=True) as stage:
        (stage / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_write_errors_name_the_users_output_and_say_when_the_disk_is_full(tmp_path):
    import errno

    with Staging(tmp_path) as s:
        staged = s.path("prob.tif", shown=tmp_path / "p.tif")
        full = write_error(staged, OSError(errno.ENOSPC, "No space left on device"))
        assert str(full) == f"{tmp_path / 'p.tif'}: no space left on device"
        gdal = write_error(staged, RuntimeError("Free disk space available is 0 bytes"))
        assert str(gdal) == f"{tmp_path / 'p.tif'}: no space left on device"
        other = write_error(staged, PermissionError(errno.EACCES, "Permission denied"))
        assert str(other) == f"{tmp_path / 'p.tif'}: cannot write (Permission denied)"


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only), filled up: every write there fails with ENOSPC."""
    with small_disk(tmp_path / "disk", "64k") as mnt:
        yield fill(mnt)


def test_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(tiny_disk):
    target = tiny_disk / "model.safetensors"
    with pytest.raises(UserError) as err:
        with staged_file(target, overwrite=False) as tmp:
            tmp.write_bytes(os.urandom(256 * 1024))
    assert str(err.value) == f"{target}: no space left on device"
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def test_without_folder_descriptors_or_flock_as_on_windows_the_results_are_the_same(tmp_path, monkeypatch):
    import engine.outputs as outputs

    for name, value in (("_DIR_FDS", False), ("_RENAME_AT", False), ("_PROC_FD", False), ("fcntl", None)):
        monkeypatch.setattr(outputs, name, value)
    (tmp_path / "old.tif").write_bytes(b"old")
    with staged_file(tmp_path / "old.tif", overwrite=True) as tmp:
        assert tmp.parent.parent == tmp_path
        tmp.write_bytes(b"new")
    with pytest.raises(UserError, match="appeared while this run was working"):
        with staged_file(tmp_path / "old.tif", overwrite=False) as tmp:
            tmp.write_bytes(b"newer")
    with staged_folder(tmp_path / "ds", overwrite=False) as stage:
        (stage / "a.txt").write_text("1")
    with staged_folder(tmp_path / "ds", overwrite=True) as stage:
        (stage / "b.txt").write_text("2")
    assert (tmp_path / "old.tif").read_bytes() == b"new" and [p.name for p in (tmp_path / "ds").iterdir()] == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "old.tif"]


def test_a_full_disk_while_building_a_folder_is_one_line_and_leaves_nothing(tiny_disk):
    out = tiny_disk / "dataset"
    with pytest.raises(UserError) as err:
        with staged_folder(out, overwrite=False) as stage:
            (stage / "tile.tif").write_bytes(os.urandom(256 * 1024))
    assert str(err.value) == f"{out}: no space left on device"
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def test_an_output_set_commits_all_of_its_outputs_or_none(tmp_path):
    """Outputs of one command in two folders: a failure while writing the last one leaves
    none of them (not the first, complete one); success renames them all into place, each
    replacing an existing file only where allowed."""
    from engine.outputs import OutputSet

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "merged.txt", tmp_path / "b" / "status.txt"
    second.write_text("old status")
    with pytest.raises(UserError) as err:
        with OutputSet() as outs:
            with outs.writing(first, overwrite=False) as path:
                path.write_text("merged")
            with outs.writing(second, overwrite=True) as path:
                raise OSError(28, "No space left on device")
    assert str(err.value) == f"{second}: no space left on device"
    assert not first.exists() and second.read_text() == "old status"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "status.txt"]
    first.write_text("someone else's")
    with pytest.raises(UserError, match="appeared while this run was working"):
        with OutputSet() as outs:
            with outs.writing(second, overwrite=True) as path:
                path.write_text("new status")
            with outs.writing(first, overwrite=False) as path:
                path.write_text("merged")
            outs.commit()
    assert first.read_text() == "someone else's" and second.read_text() == "old status"
    first.unlink()
    with OutputSet() as outs:
        for target, text in ((first, "merged"), (second, "new status")):
            with outs.writing(target, overwrite=target == second) as path:
                path.write_text(text)
        outs.commit()
    assert first.read_text() == "merged" and second.read_text() == "new status"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "merged.txt", "status.txt"]
