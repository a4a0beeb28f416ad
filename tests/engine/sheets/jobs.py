"""Trivial jobs for the executor tests (a module of their own: worker processes import it)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from engine.errors import UserError
from engine.sheets.execute import worker_cached

FACTORY_CALLS = 0


def _expensive() -> dict:
    global FACTORY_CALLS
    FACTORY_CALLS += 1
    return {"calls": FACTORY_CALLS, "pid": os.getpid()}


def square(x: int) -> dict:
    """x² with the process that computed it and how often its 'model' was built there."""
    model = worker_cached("model", _expensive)
    time.sleep(0.05)
    return {"value": x * x, "pid": os.getpid(), "factory_calls": model["calls"],
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "omp": os.environ.get("OMP_NUM_THREADS")}


def fail_on_three(x: int) -> dict:
    if x == 3:
        raise ValueError("sheet 3 is corrupt")
    return square(x)


def die_once(job: tuple[int, str]) -> dict:
    """Job ``x`` kills its own worker process on its first attempt (marked by a file)."""
    x, folder = job
    marker = Path(folder) / f"attempt-{x}"
    if x == 2 and not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(0.2)  # mid-job
        os.kill(os.getpid(), signal.SIGKILL)
    return square(x)


def sleepy(x: int) -> dict:
    """Quick for job 0, then long: for cancelling while jobs run."""
    time.sleep(0.05 if x == 0 else 60)
    return {"value": x, "pid": os.getpid()}


def flaky_or_corrupt(job: tuple[int, str]) -> dict:
    """Job 1: a corrupt sheet (UserError) every time; job 2: an OSError on its first attempt only.
    Each attempt leaves a file, so the test can count them."""
    x, folder = job
    attempts = len(list(Path(folder).glob(f"attempt-{x}-*")))
    (Path(folder) / f"attempt-{x}-{attempts}").write_text(str(os.getpid()))
    if x == 1:
        raise UserError("sheet_1.tif: not a raster GDAL can read")
    if x == 2 and attempts == 0:
        raise OSError("network drive hiccup")
    return square(x)
