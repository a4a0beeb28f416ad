"""Run one job per sheet: in this process, on a local Dask cluster, or on an existing one.

:func:`run_jobs` is the only place that knows about Dask. A job is any picklable object;
``job_fn(job)`` returns a small record (a dict of statistics, not rasters: results held by
a lost worker are recomputed). Each finished job is reported to ``on_result`` in the
calling process as it completes, so the caller can write the status layer and progress.

* ``workers=1`` (and no ``gpus``): a plain loop in this process; nothing is started.
* default: a local cluster of worker processes bound to 127.0.0.1 (Dask's ports have no
  authentication): one worker per GPU on CUDA, each seeing only its GPU through
  ``CUDA_VISIBLE_DEVICES`` (``nthreads=1``, resource ``GPU=1``); one worker on CPU.
  No dashboard unless bokeh is installed.
* ``scheduler`` (address) or ``scheduler_file``: an existing cluster (SLURM, Kubernetes);
  its workers must have the engine installed.

Tasks are Dask futures, ``pure=False``, ``retries=2``. A job that raises fails alone; a
:class:`~engine.errors.UserError` (bad or corrupt input) is not retried, other exceptions are
(twice).
A worker process that dies mid-job is restarted by its nanny and the job runs again
elsewhere; after ``distributed.scheduler.allowed-failures`` (3) losses the job fails with
``KilledWorker``.

The model is loaded once per worker process with :func:`worker_cached`.
:func:`select_shard` picks every N-th job for job arrays without Dask, and
:func:`slurm_script` writes a SLURM batch script that starts such a cluster.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

from ..errors import Cancelled, UserError, first_line

__all__ = ["run_jobs", "worker_cached", "select_shard", "parse_shard", "local_gpus", "slurm_script",
           "read_scheduler_file", "check_scheduler"]

J = TypeVar("J")
OnResult = Callable[[Any, Any, Optional[BaseException]], None]

#: Extra attempts of a job that raised an unexpected exception (not a UserError) on a cluster.
RETRIES = 2
#: How often the cancel callback is polled while jobs run (seconds).
POLL_S = 0.1
#: Seconds a closing cluster waits for its workers before they are killed.
CLOSE_TIMEOUT_S = 5
#: The same after a cancel, a failure or Ctrl-C: workers still busy are not waited for.
CANCEL_TIMEOUT_S = 1

_CACHE: dict[Any, Any] = {}
_CACHE_LOCK = threading.Lock()


def worker_cached(key: Any, factory: Callable[[], Any]) -> Any:
    """``factory()`` once per process and ``key`` (e.g. the loaded model per checkpoint and device).

    A Dask worker process runs many jobs; the first builds the value, later ones reuse it.
    In-process runs cache in the calling process the same way.
    """
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = factory()
        return _CACHE[key]


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N), 1-based: ``1/4`` .. ``4/4``. Raises UserError otherwise."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text}: expected I/N such as 1/4 (shard I of N, 1-based)")
    if not 1 <= i <= n:
        raise UserError(f"--shard {text}: expected 1 <= I <= N (shards are numbered 1..N)")
    return i, n


def select_shard(jobs: Sequence[J], i: int, n: int) -> list[J]:
    """Every ``n``-th job starting with the ``i``-th: shard ``i`` of ``n``, **1-based**.

    ``select_shard(jobs, 1, 4)`` is ``jobs[0::4]``; shards 1..n together are all jobs, each
    once, provided every shard sees the jobs in the same order (the sheet list's order).
    For a SLURM array ``--array=1-N`` use ``$SLURM_ARRAY_TASK_ID/N``; for a Kubernetes
    Indexed Job (0-based) ``$((JOB_COMPLETION_INDEX + 1))/N``.
    """
    if not (isinstance(i, int) and isinstance(n, int)) or not 1 <= i <= n:
        raise UserError(f"--shard {i}/{n}: expected 1 <= I <= N (shards are numbered 1..N)")
    return list(jobs[i - 1::n])


def local_gpus() -> list[int]:
    """Indices of the CUDA devices this process sees (empty without CUDA or torch)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return []
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def run_jobs(job_fn: Callable[[J], Any], jobs: Sequence[J], *, workers: Optional[int] = None,
             gpus: Optional[Sequence[int]] = None, scheduler: Optional[str] = None,
             scheduler_file: Optional[str] = None, on_result: OnResult,
             is_cancelled: Callable[[], bool] = lambda: False, log_file: Optional[str] = None) -> None:
    """Run ``job_fn`` on every job; call ``on_result(job, result, error)`` here as each ends.

    Args:
        job_fn: module-level function (picklable) run once per job; returns a small record.
        jobs: picklable job descriptions (e.g. :class:`~engine.sheets.index.SheetSpec`).
        workers: worker processes of a local cluster; 1 without ``gpus`` runs in-process.
            Default: one per GPU, or 1 (in a worker process) on CPU.
        gpus: CUDA device indices to use (``[]`` = CPU only); default: all visible ones.
            Worker k sees ``gpus[k % len(gpus)]`` as its only device (``cuda:0``).
        scheduler, scheduler_file: connect to an existing cluster instead (not both).
        on_result: ``error`` is None on success, else the exception (``result`` None).
        is_cancelled: polled every :data:`POLL_S` s; True cancels all jobs, closes the
            cluster and raises :class:`~engine.errors.Cancelled`.
        log_file: where Dask's own log lines go (this process's and the local workers'),
            instead of the terminal: a heartbeat that failed while the cluster closed is not
            the user's business when every job succeeded (see :func:`dask_log`).

    Raises:
        UserError: contradictory options or an unreachable scheduler.
        Cancelled: ``is_cancelled`` returned True (jobs already reported stay reported).
    """
    if scheduler and scheduler_file:
        raise UserError("--scheduler and --scheduler-file: give one of them")
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: expected 1 or more")
    if (scheduler or scheduler_file) and (workers is not None or gpus):
        raise UserError("--workers/--gpus: not with --scheduler or --scheduler-file (the cluster has its workers)")
    if not jobs:
        return
    if workers == 1 and not gpus and not (scheduler or scheduler_file):
        _run_here(job_fn, jobs, on_result, is_cancelled)
        return
    with dask_log(log_file):
        client, cluster = _connect(workers, gpus, scheduler, scheduler_file)
        timeout = CANCEL_TIMEOUT_S
        try:
            _run_futures(client, job_fn, jobs, on_result, is_cancelled)
            timeout = CLOSE_TIMEOUT_S
        finally:
            _close(client, cluster, timeout)


#: Loggers of Dask and its network layer.
DASK_LOGGERS = ("distributed", "tornado")


@contextlib.contextmanager
def dask_log(path: Optional[str]) -> Iterator[None]:
    """Send Dask's log lines to the file ``path`` (appended) while the block runs: this
    process's loggers (and its Python warnings) get a file handler instead of theirs, and worker processes started
    meanwhile configure theirs the same way (``DASK_LOGGING``, which they inherit). The
    run's own messages (events, errors) are not Dask's log. None: leave logging alone."""
    import logging

    if path is None:
        yield
        return
    fmt = "%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s"
    config = {"version": 1, "disable_existing_loggers": False, "formatters": {"plain": {"format": fmt}},
              "handlers": {"file": {"class": "logging.FileHandler", "filename": str(path), "formatter": "plain",
                                    "delay": True}},
              "loggers": {name: {"level": "WARNING", "handlers": ["file"], "propagate": False} for name in DASK_LOGGERS}}
    handler = logging.FileHandler(path, delay=True)
    handler.setFormatter(logging.Formatter(fmt))
    saved = {}
    for name in DASK_LOGGERS + ("py.warnings",):  # Python warnings meanwhile (Dask's "port in use") too
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.propagate)
        logger.handlers, logger.propagate = [handler], False
    before = os.environ.get("DASK_LOGGING")
    os.environ["DASK_LOGGING"] = repr(config)  # read by distributed when a worker process imports it
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        if before is None:
            os.environ.pop("DASK_LOGGING", None)
        else:
            os.environ["DASK_LOGGING"] = before
        for name, (handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        handler.close()


def _run_here(job_fn, jobs, on_result, is_cancelled) -> None:
    for job in jobs:
        if is_cancelled():
            raise Cancelled("cancelled")
        try:
            result = job_fn(job)
        except (Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:  # a failing job fails alone
            on_result(job, None, exc)
        else:
            on_result(job, result, None)


def _run_futures(client, job_fn, jobs, on_result, is_cancelled) -> None:
    from distributed import as_completed

    jobs = list(jobs)
    # one task per job (map submits them in one message: quick for tens of thousands of sheets)
    submitted = client.map(_no_retry_for_user_errors, [job_fn] * len(jobs), jobs, pure=False, retries=RETRIES)
    futures = dict(zip(submitted, jobs))
    pending = as_completed(list(futures), with_results=False, loop=client.loop)
    while not pending.is_empty():
        if is_cancelled():
            client.cancel(list(futures), force=True)
            raise Cancelled("cancelled")
        batch = pending.next_batch(block=False)
        if not batch:
            time.sleep(POLL_S)
            continue
        for future in batch:
            job = futures.pop(future)
            if future.status == "finished":
                result = future.result()
                if isinstance(result, _Failed):
                    on_result(job, None, result.error)
                else:
                    on_result(job, result, None)
            else:
                on_result(job, None, _future_error(future))
            future.release()


@dataclass(frozen=True)
class _Failed:
    """A job's UserError, returned instead of raised so that Dask does not retry it."""

    error: UserError


def _no_retry_for_user_errors(job_fn: Callable[[J], Any], job: J) -> Any:
    """Runs on a worker: a user mistake (bad or corrupt input) fails at once; any other
    exception is raised, so Dask retries the job (a network drive that hiccuped)."""
    try:
        return job_fn(job)
    except UserError as exc:
        return _Failed(exc)


def _future_error(future) -> BaseException:
    if future.status == "cancelled":
        return Cancelled("the job was cancelled by the cluster")
    try:
        return future.exception()
    except Exception as exc:  # e.g. the scheduler lost the task
        return exc


def _dashboard() -> Optional[str]:
    try:
        import bokeh  # noqa: F401  (the dashboard needs it)
    except ImportError:
        return None
    return "127.0.0.1:0"


def _worker_specs(workers: Optional[int], gpus: Optional[Sequence[int]]) -> dict:
    """Nanny specs: one per worker, each pinned to one GPU (round robin) or CPU only."""
    import logging

    from distributed import Nanny

    gpus = local_gpus() if gpus is None else list(gpus)
    count = workers or max(len(gpus), 1)
    memory = _total_memory() // count
    specs = {}
    for k in range(count):
        options: dict[str, Any] = {"nthreads": 1, "host": "127.0.0.1", "memory_limit": memory,
                                   "dashboard": False, "death_timeout": 60, "silence_logs": logging.ERROR}
        if gpus:
            options["env"] = {"CUDA_VISIBLE_DEVICES": str(gpus[k % len(gpus)])}
            options["resources"] = {"GPU": 1}
        specs[f"worker-{k}"] = {"cls": Nanny, "options": options}
    return specs


def _total_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def _connect(workers, gpus, scheduler, scheduler_file):
    """(client, local cluster or None)."""
    import logging

    from distributed import Client, Scheduler, SpecCluster

    if scheduler or scheduler_file:
        what = f"--scheduler {scheduler}" if scheduler else f"--scheduler-file {scheduler_file}"
        address = check_scheduler(scheduler, scheduler_file)
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise UserError(f"{what}: cannot connect to {address} ({first_line(exc)})") from None
        return client, None
    specs = _worker_specs(workers, gpus)
    with _worker_threads(_cpu_count() // len(specs)):
        cluster = SpecCluster(
            scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "port": 0,  # its HTTP port too: never 8787
                                                     "dashboard_address": _dashboard() or "127.0.0.1:0",
                                                     "dashboard": bool(_dashboard())}},
            workers=specs, silence_logs=logging.ERROR, name="hrmnet-sheets")
    client = Client(cluster, set_as_default=False)
    return client, cluster


#: Seconds to reach an existing scheduler (Dask's default is 30, and retries double it).
CONNECT_TIMEOUT_S = 10
#: Address schemes of a Dask scheduler (``HOST:PORT`` alone is tcp).
SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")


def read_scheduler_file(path: str) -> str:
    """The scheduler address in a Dask scheduler file (JSON with ``address``).

    Raises:
        UserError: no such file, or not a scheduler file (one line, at once).
    """
    import json

    what = f"--scheduler-file {path}"
    if not os.path.isfile(path):
        raise UserError(f"{what}: no such file (start the scheduler with --scheduler-file first)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{what}: not a Dask scheduler file ({first_line(exc)})") from None
    address = data.get("address") if isinstance(data, dict) else None
    if not isinstance(address, str) or not address:
        raise UserError(f"{what}: not a Dask scheduler file (no \"address\")")
    return address


def check_scheduler(scheduler: Optional[str], scheduler_file: Optional[str]) -> str:
    """The address of an existing scheduler given by ``--scheduler`` or ``--scheduler-file``,
    checked at once (a file that is not a scheduler file, an address that is not a
    scheduler's, nothing listening there): one line instead of Dask's timeouts."""
    what = f"--scheduler {scheduler}" if scheduler else f"--scheduler-file {scheduler_file}"
    address = scheduler or read_scheduler_file(str(scheduler_file))
    _probe(address, what)
    return address


def _probe(address: str, what: str) -> None:
    """Refuse an address that is not a scheduler's (an http:// dashboard address, say) and a
    tcp/tls one where nothing listens, at once instead of after Dask's timeouts."""
    import socket
    from urllib.parse import urlsplit

    scheme = address.split("://", 1)[0].lower() if "://" in address else "tcp"
    if scheme not in SCHEMES:
        raise UserError(f"{what}: not a Dask scheduler address (expected tcp://HOST:8786 or tls://HOST:PORT; "
                        f"{scheme}:// is not a scheduler's)")
    if scheme not in ("tcp", "tls"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise UserError(f"{what}: not a Dask scheduler address (expected tcp://HOST:PORT)")
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"{what}: cannot connect to {address} ({exc.strerror or first_line(exc)})") from None



#: Thread-count variables Dask sets to 1 in its workers (for numpy-in-many-tasks workloads).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def _worker_threads(threads: int) -> Iterator[None]:
    """Give each worker process its share of the cores for torch/BLAS (Dask's default is 1
    thread, which would make CPU inference several times slower). Variables the user set are
    kept. Dask writes them into this process's environment too; they are restored after."""
    import dask

    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    values = {f"distributed.nanny.pre-spawn-environ.{name}": str(max(threads, 1)) for name in THREAD_VARIABLES}
    try:
        with dask.config.set(values):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _cpu_count() -> int:
    """CPUs this process may use (its affinity where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # Windows, macOS
        return os.cpu_count() or 1


def _close(client, cluster, timeout: float) -> None:
    """Close; a worker still busy with a job after ``timeout`` s is killed by its nanny."""
    try:
        client.close(timeout=CLOSE_TIMEOUT_S)
    finally:
        if cluster is not None:
            cluster.sync(_close_nannies, list(cluster.workers.values()), timeout)
            cluster.close(timeout=CLOSE_TIMEOUT_S + timeout)


async def _close_nannies(nannies: list, timeout: float) -> None:
    import asyncio

    await asyncio.gather(*(n.close(timeout=timeout, reason="hrmnet-close") for n in nannies), return_exceptions=True)


def slurm_script(engine_args: Sequence[str], *, workers: int, run_folder: str, python: str = "python",
                 cpus_per_worker: int = 8, mem_per_worker: str = "32G", time_limit: str = "12:00:00",
                 partition: Optional[str] = None, account: Optional[str] = None,
                 job_name: str = "hrmnet-sheets") -> str:
    """A SLURM batch script: a Dask scheduler, ``workers`` GPU workers and the sheets run.

    One job of ``workers`` tasks, one GPU each (``--gpus-per-task=1``: SLURM sets
    ``CUDA_VISIBLE_DEVICES`` per task). The batch step starts the scheduler, which writes
    a scheduler file readable only by the user (``umask 077``) in ``run_folder``; ``srun``
    starts one single-threaded worker per task with the resource ``GPU=1``; then
    ``python -m engine sheets ENGINE_ARGS --scheduler-file FILE`` runs the sheets on them.
    Submit with ``sbatch script.sh``; a re-submitted script resumes the run.

    Args:
        engine_args: the ``sheets`` options (``--sheets … --run … --model … --out-vector …``).
        workers: GPU workers (= SLURM tasks = GPUs).
        run_folder: the run folder (on a file system all nodes share).
        python: the engine environment's interpreter on the compute nodes.
        cpus_per_worker, mem_per_worker: per task (tile reading and vectorizing use CPUs).
    """
    if workers < 1:
        raise UserError(f"workers {workers}: expected 1 or more")
    q = shlex.quote
    header = [f"#SBATCH --job-name={job_name}", f"#SBATCH --ntasks={workers}", "#SBATCH --gpus-per-task=1",
              f"#SBATCH --cpus-per-task={cpus_per_worker}", f"#SBATCH --mem-per-cpu={_per_cpu(mem_per_worker, cpus_per_worker)}",
              f"#SBATCH --time={time_limit}", f"#SBATCH --output={run_folder}/slurm-%j.log"]
    header += [f"#SBATCH --partition={partition}"] * bool(partition) + [f"#SBATCH --account={account}"] * bool(account)
    sched = '"$RUN/scheduler-$SLURM_JOB_ID.json"'
    body = f"""set -euo pipefail
RUN={q(run_folder)}
PY={q(python)}
mkdir -p "$RUN"
umask 077  # the scheduler file (the cluster's address) is readable only by you
"$PY" -m distributed.cli.dask_scheduler --scheduler-file {sched} --host "$(hostname)" --port 0 --no-dashboard &
SCHEDULER=$!
trap 'kill $SCHEDULER 2>/dev/null || true' EXIT
for _ in $(seq 60); do [ -f {sched} ] && break; sleep 1; done
# Dask would give each worker 1 BLAS/OpenMP thread; the model wants the task's CPUs.
export OMP_NUM_THREADS={cpus_per_worker} MKL_NUM_THREADS={cpus_per_worker} OPENBLAS_NUM_THREADS={cpus_per_worker}
srun --ntasks={workers} --gpus-per-task=1 --cpus-per-task={cpus_per_worker} --kill-on-bad-exit=0 \\
  "$PY" -m distributed.cli.dask_worker --scheduler-file {sched} --nthreads 1 --nworkers 1 \\
  --resources GPU=1 --memory-limit 0 --no-dashboard --local-directory "${{TMPDIR:-/tmp}}" &
WORKERS=$!
trap 'kill $WORKERS $SCHEDULER 2>/dev/null || true' EXIT
"$PY" -m engine sheets {' '.join(q(a) for a in engine_args)} --scheduler-file {sched}
"""
    return "#!/bin/bash\n" + "\n".join(header) + "\n\n" + body


def _per_cpu(mem: str, cpus: int) -> str:
    """``"32G"`` over 8 CPUs -> ``"4096M"`` (SLURM has no --mem-per-task)."""
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    text = mem.strip().upper().rstrip("B")
    if not text or text[-1] not in units:
        text += "M"
    try:
        mb = float(text[:-1]) * units[text[-1]]
    except ValueError:
        raise UserError(f"memory {mem}: expected a size such as 32G")
    return f"{max(int(mb // cpus), 1)}M"
