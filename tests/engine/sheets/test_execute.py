"""Running jobs: in-process, on a local Dask cluster (2 worker processes), faults, cancel, shards."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading

import psutil
import pytest

from engine.errors import Cancelled, UserError
from engine.sheets.execute import parse_shard, run_jobs, select_shard, slurm_script

from . import jobs


def _collect():
    results, errors = {}, {}

    def on_result(job, result, error):
        assert threading.current_thread() is threading.main_thread()  # reported in the calling process
        if error is None:
            results[job if isinstance(job, int) else job[0]] = result
        else:
            errors[job if isinstance(job, int) else job[0]] = error

    return results, errors, on_result


def _alive_children() -> list[str]:
    """Command lines of live child processes, less multiprocessing's resource tracker."""
    alive = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(p.cmdline()):
                alive.append(" ".join(p.cmdline()))
        except psutil.NoSuchProcess:
            pass
    return alive


def test_in_process_a_failing_job_fails_alone():
    results, errors, on_result = _collect()
    run_jobs(jobs.fail_on_three, list(range(6)), workers=1, on_result=on_result)
    assert sorted(results) == [0, 1, 2, 4, 5]
    assert {r["pid"] for r in results.values()} == {os.getpid()}
    assert results[5]["value"] == 25
    assert list(errors) == [3] and str(errors[3]) == "sheet 3 is corrupt"


def test_in_process_cancel_between_jobs():
    results, errors, on_result = _collect()
    with pytest.raises(Cancelled):
        run_jobs(jobs.square, list(range(6)), workers=1, on_result=on_result, is_cancelled=lambda: len(results) >= 2)
    assert sorted(results) == [0, 1]


def test_two_workers_each_gpu_pinned_model_loaded_once_failure_alone():
    results, errors, on_result = _collect()
    run_jobs(jobs.fail_on_three, list(range(12)), workers=2, gpus=[3, 5], on_result=on_result)
    assert sorted(results) == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    assert all(results[k]["value"] == k * k for k in results)
    # ran in worker processes, each seeing one GPU as its only device
    by_pid = {}
    for r in results.values():
        by_pid.setdefault(r["pid"], set()).add(r["cuda"])
    assert os.getpid() not in by_pid and len(by_pid) == 2
    assert sorted(c for cs in by_pid.values() for c in cs) == ["3", "5"]
    assert {r["factory_calls"] for r in results.values()} == {1}  # one model per worker process
    assert list(errors) == [3] and isinstance(errors[3], ValueError) and str(errors[3]) == "sheet 3 is corrupt"
    assert _alive_children() == []  # the cluster is gone


def test_cpu_workers_share_the_cores_and_see_no_gpu_setting(monkeypatch):
    from engine.sheets import execute

    monkeypatch.setattr(execute, "_cpu_count", lambda: 8)
    for name in execute.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    results, errors, on_result = _collect()
    run_jobs(jobs.square, [1, 2], workers=2, gpus=[], on_result=on_result)
    assert errors == {} and {r["cuda"] for r in results.values()} == {os.environ.get("CUDA_VISIBLE_DEVICES")}
    assert {r["omp"] for r in results.values()} == {"4"}  # 8 cores for 2 workers (Dask alone would give 1)
    assert "OMP_NUM_THREADS" not in os.environ  # this process is left as it was


def test_a_worker_killed_mid_job_all_jobs_finish(tmp_path):
    results, errors, on_result = _collect()
    run_jobs(jobs.die_once, [(k, str(tmp_path)) for k in range(8)], workers=2, gpus=[], on_result=on_result)
    killed_pid = int((tmp_path / "attempt-2").read_text())
    assert errors == {}
    assert sorted(results) == list(range(8))
    assert results[2]["pid"] != killed_pid  # ran again in a restarted (or the other) worker
    assert not psutil.pid_exists(killed_pid) or psutil.Process(killed_pid).status() == psutil.STATUS_ZOMBIE


def test_user_errors_are_not_retried_other_errors_are(tmp_path):
    results, errors, on_result = _collect()
    run_jobs(jobs.flaky_or_corrupt, [(k, str(tmp_path)) for k in range(4)], workers=2, gpus=[], on_result=on_result)
    assert sorted(results) == [0, 2, 3] and list(errors) == [1]
    assert isinstance(errors[1], UserError) and str(errors[1]) == "sheet_1.tif: not a raster GDAL can read"
    assert len(list(tmp_path.glob("attempt-1-*"))) == 1  # a corrupt sheet fails at once
    assert len(list(tmp_path.glob("attempt-2-*"))) == 2  # a transient error is retried
    # in-process: the same job function, the same outcome per job
    results, errors, on_result = _collect()
    (tmp_path / "here").mkdir()
    run_jobs(jobs.flaky_or_corrupt, [(k, str(tmp_path / "here")) for k in range(2)], workers=1, on_result=on_result)
    assert list(results) == [0] and isinstance(errors[1], UserError)


@pytest.mark.timeout(60)
def test_cancel_stops_running_jobs_and_the_cluster():
    results, errors, on_result = _collect()
    with pytest.raises(Cancelled):
        run_jobs(jobs.sleepy, list(range(4)), workers=2, gpus=[], on_result=on_result,
                 is_cancelled=lambda: bool(results))
    assert list(results) == [0] and errors == {}
    assert _alive_children() == []  # the worker busy with a 60 s job was stopped


def test_bad_options():
    def nothing(job, result, error):
        pass

    with pytest.raises(UserError, match="give one of them"):
        run_jobs(jobs.square, [1], scheduler="tcp://127.0.0.1:1", scheduler_file="x.json", on_result=nothing)
    with pytest.raises(UserError, match="--workers 0: expected 1 or more"):
        run_jobs(jobs.square, [1], workers=0, on_result=nothing)
    with pytest.raises(UserError, match="not with --scheduler"):
        run_jobs(jobs.square, [1], workers=2, scheduler="tcp://127.0.0.1:1", on_result=nothing)
    with pytest.raises(UserError, match="nope.json: no such file"):
        run_jobs(jobs.square, [1], scheduler_file="nope.json", on_result=nothing)


def test_shards_cover_every_job_once():
    jobs_ = list("abcdefghij")
    shards = [select_shard(jobs_, i, 3) for i in (1, 2, 3)]
    assert shards == [list("adgj"), list("beh"), list("cfi")]
    assert sorted(sum(shards, [])) == jobs_
    assert select_shard(jobs_, 1, 1) == jobs_
    assert select_shard(jobs_, 12, 12) == []
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "1", "a/b", "1/0", "-1/2"):
        with pytest.raises(UserError, match=f"--shard {bad}: expected"):
            parse_shard(bad)
    with pytest.raises(UserError, match="--shard 0/3"):
        select_shard(jobs_, 0, 3)


def test_slurm_script_text_and_syntax(tmp_path):
    text = slurm_script(["--sheets", "/data/grid.gpkg", "--run", "/scratch/run 1", "--model", "m.safetensors",
                         "--out-vector", "/data/changes.gpkg"], workers=4, run_folder="/scratch/run 1",
                        python="/opt/hrmnet/bin/python", mem_per_worker="32G", cpus_per_worker=8,
                        partition="gpu", account="mapping")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for want in ("#SBATCH --ntasks=4", "#SBATCH --gpus-per-task=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem-per-cpu=4096M", "#SBATCH --partition=gpu", "#SBATCH --account=mapping",
                 "umask 077  # the scheduler file (the cluster's address) is readable only by you"):
        assert want in lines
    assert "RUN='/scratch/run 1'" in lines
    assert "--resources GPU=1" in text and "--nthreads 1" in text
    assert "export OMP_NUM_THREADS=8 MKL_NUM_THREADS=8 OPENBLAS_NUM_THREADS=8" in lines
    assert ("\"$PY\" -m engine sheets --sheets /data/grid.gpkg --run '/scratch/run 1' --model m.safetensors "
            "--out-vector /data/changes.gpkg --scheduler-file \"$RUN/scheduler-$SLURM_JOB_ID.json\"") in lines
    (tmp_path / "job.sh").write_text(text)
    subprocess.run(["bash", "-n", str(tmp_path / "job.sh")], check=True)
    with pytest.raises(UserError):
        slurm_script([], workers=0, run_folder="/r")


FAKE_SRUN = """#!/bin/bash
# Stand-in for srun: drop its options, start one copy of the command per task, each with its GPU.
n=1
while [[ $1 == --* ]]; do [[ $1 == --ntasks=* ]] && n=${1#--ntasks=}; shift; done
for ((k = 0; k < n; k++)); do CUDA_VISIBLE_DEVICES=$k "$@" & done
wait
"""

FAKE_PY = """#!/bin/bash
# Stand-in for the engine environment's python: `-m engine sheets` runs the test driver instead.
if [[ $1 == -m && $2 == engine ]]; then
  shift 3; exec {python} {driver} "$@"
fi
exec {python} "$@"
"""

DRIVER = """import json, os, sys
sys.path.insert(0, {root!r})
from engine.sheets.execute import run_jobs
from tests.engine.sheets import jobs
out = {{}}
scheduler_file = sys.argv[sys.argv.index("--scheduler-file") + 1]
out["mode"] = oct(os.stat(scheduler_file).st_mode & 0o777)
run_jobs(jobs.square, list(range(6)), scheduler_file=scheduler_file,
         on_result=lambda job, result, error: out.setdefault(job, [result, repr(error) if error else None]))
json.dump(out, open(sys.argv[sys.argv.index("--out") + 1], "w"))
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_slurm_script_runs_with_a_stand_in_srun(tmp_path):
    """The generated script, run with bash: a real Dask scheduler and 2 workers via a fake srun,
    connected through the private scheduler file (nothing is submitted to SLURM)."""
    import json

    root = str(__import__("pathlib").Path(__file__).resolve().parents[3])
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text(FAKE_SRUN)
    (tmp_path / "driver.py").write_text(DRIVER.format(root=root))
    (bin_ / "python").write_text(FAKE_PY.format(python=sys.executable, driver=tmp_path / "driver.py"))
    for f in ("srun", "python"):
        (bin_ / f).chmod(0o755)
    run = tmp_path / "run"
    script = slurm_script(["--out", str(tmp_path / "out.json")], workers=2, run_folder=str(run),
                          python=str(bin_ / "python"))
    (tmp_path / "job.sh").write_text(script)
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "SLURM_JOB_ID": "42", "PYTHONPATH": root}
    proc = subprocess.Popen(["bash", str(tmp_path / "job.sh")], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=100)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the stand-in srun's workers
    print(stderr[-3000:])
    assert proc.returncode == 0, stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out.pop("mode") == oct(0o600)  # the scheduler file is private (removed at the end)
    assert sorted(int(k) for k in out) == list(range(6))
    assert {v[0]["cuda"] for v in out.values()} <= {"0", "1"}
    assert {v[0]["omp"] for v in out.values()} == {"8"}  # the task's CPUs, not Dask's 1
    assert all(v[1] is None and v[0]["value"] == int(k) ** 2 for k, v in out.items())
