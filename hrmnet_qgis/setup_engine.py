"""Create the engine's own virtual environment ("Set up engine").

The engine needs torch, rasterio, geopandas, ... Installing them into QGIS's Python
is the classic way to break QGIS, so this creates a separate virtual environment
(``python3 -m venv``) and pip-installs the engine's requirements there. The plugin
then runs the engine with that interpreter (stored as the plugin setting).

:func:`create_engine_env` is the core: plain Python with callbacks for log lines,
progress and cancel, callable without a GUI. :class:`SetupEngineTask` (in
``dialogs/setup_dialog.py``) runs it as a QgsTask.

Pip honours its own configuration and environment (``PIP_INDEX_URL``,
``PIP_FIND_LINKS``, proxies). When a find-links folder holds a torch wheel for this
Python, that exact torch is pinned, so e.g. a CPU build on local disk is used
instead of a multi-gigabyte CUDA download.
"""
from __future__ import annotations

import os
import queue
import re
import shutil
# bandit B404: runs venv and pip with list argv, no shell
import subprocess  # nosec B404
import sys
import threading
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from .engine_python import qgis_python_candidates
from .runner import engine_env, engine_root

__all__ = [
    "REQUIREMENTS",
    "IMPORTS",
    "SetupError",
    "SetupCancelled",
    "default_env_dir",
    "venv_python",
    "find_torch_wheel",
    "requirements_for",
    "create_engine_env",
]

#: The engine's requirements (mirrors pyproject.toml's dependencies).
REQUIREMENTS = [
    "numpy<2",
    "torch>=2.1",
    "safetensors>=0.4",
    "rasterio>=1.3",
    "shapely>=2.0",
    "geopandas>=0.14",
    "pyogrio>=0.7",
    "pyproj>=3.4",
    "tqdm>=4.60",
    "pillow>=9",
    "matplotlib>=3.5",
    "scipy>=1.8",
    "dask[distributed]>=2024.8",
]
#: Modules imported to check an environment.
IMPORTS = ["numpy", "torch", "safetensors", "rasterio", "shapely", "geopandas", "pyogrio", "pyproj", "tqdm",
           "PIL", "matplotlib", "scipy"]

Log = Callable[[str], None]
Progress = Callable[[float], None]


class SetupError(Exception):
    """Setting up the environment failed; ``str(exc)`` says why in one line."""


class SetupCancelled(Exception):
    """The set-up was cancelled; the half-made environment has been removed."""


def default_env_dir(profile_dir: str) -> Path:
    """The default environment folder inside a QGIS profile folder."""
    return Path(profile_dir) / "hrmnet" / "engine-venv"


def venv_python(folder: Path) -> Path:
    """The interpreter of the virtual environment in ``folder``."""
    if os.name == "nt":
        return Path(folder) / "Scripts" / "python.exe"
    return Path(folder) / "bin" / "python"


def base_python() -> str:
    """A real Python interpreter to create the environment with (QGIS's, else python3 on PATH)."""
    for candidate in qgis_python_candidates():
        return candidate
    found = shutil.which("python3") or shutil.which("python")
    if not found:
        raise SetupError("no Python interpreter found to create the environment with (install Python 3)")
    return found


def find_torch_wheel(folders: Iterable[str], py: tuple[int, int]) -> Optional[str]:
    """Version of the newest torch wheel for CPython ``py`` in ``folders`` (e.g. ``2.13.0+cpu``)."""
    tag = f"cp{py[0]}{py[1]}"
    pattern = re.compile(r"^torch-([0-9][^-]*)-" + tag + r"-")
    best: Optional[tuple[tuple, str]] = None
    for folder in folders:
        folder = folder.strip()
        if folder.startswith("file://"):
            folder = folder[len("file://"):]
        if not folder or not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            m = pattern.match(name)
            if m and name.endswith(".whl"):
                version = m.group(1)
                key = tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.+]", version))
                if best is None or key > best[0]:
                    best = (key, version)
    return best[1] if best else None


def requirements_for(py: tuple[int, int], find_links: Sequence[str]) -> list[str]:
    """:data:`REQUIREMENTS`, with torch pinned to a wheel found in ``find_links``."""
    version = find_torch_wheel(find_links, py)
    if version is None:
        return list(REQUIREMENTS)
    return [f"torch=={version}" if r.startswith("torch") else r for r in REQUIREMENTS]


def _run(argv: list[str], log: Log, is_cancelled: Callable[[], bool], on_line: Optional[Log] = None,
         env: Optional[dict] = None, cwd: Optional[Path] = None) -> list[str]:
    """Run ``argv``, stream its output to ``log``; return the output lines or raise."""
    log("$ " + " ".join(argv))
    try:
        # bandit B603: list argv, no shell; interpreters chosen by the plugin
        proc = subprocess.Popen(  # nosec B603
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, encoding="utf-8", errors="replace", bufsize=1, env=env, cwd=cwd,
        )
    except OSError as exc:
        raise SetupError(f"{argv[0]}: cannot run ({exc.strerror or exc})") from exc
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def read() -> None:
        for line in iter(proc.stdout.readline, ""):
            lines.put(line.rstrip("\r\n"))
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    output: list[str] = []
    while True:
        if is_cancelled():
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise SetupCancelled("cancelled")
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        output.append(line)
        log(line)
        if on_line is not None:
            on_line(line)
    rc = proc.wait()
    reader.join(timeout=1)
    proc.stdout.close()
    if rc != 0:
        tail = [s for s in output if s.strip()][-1:] or [f"exit code {rc}"]
        raise SetupError(f"{Path(argv[0]).name} {' '.join(argv[1:3])} failed: {tail[0].strip()}")
    return output


class _PipProgress:
    """Maps pip's output lines to a progress fraction between ``lo`` and ``hi``."""

    EXPECTED = 45  # packages pip resolves for the engine (with dependencies), roughly

    def __init__(self, progress: Progress, lo: float, hi: float) -> None:
        self.progress, self.lo, self.hi, self.seen = progress, lo, hi, 0

    def __call__(self, line: str) -> None:
        span = self.hi - self.lo
        if line.startswith(("Collecting ", "Requirement already satisfied")):
            self.seen += 1
            self.progress(self.lo + span * 0.8 * min(self.seen / self.EXPECTED, 1.0))
        elif line.startswith("Installing collected packages"):
            self.progress(self.lo + span * 0.85)
        elif line.startswith("Successfully installed"):
            self.progress(self.hi)


def create_engine_env(
    folder: Path,
    log: Log = print,
    progress: Progress = lambda fraction: None,
    is_cancelled: Callable[[], bool] = lambda: False,
    python: Optional[str] = None,
    find_links: Optional[Sequence[str]] = None,
    extra_pip_args: Sequence[str] = (),
) -> Path:
    """Create (or complete) the engine environment in ``folder``; return its interpreter.

    Args:
        folder: the environment folder; created, or reused when it already is a
            virtual environment. Never QGIS's own Python.
        log: called with each line of output (venv, pip, checks).
        progress: called with the overall fraction done, 0..1.
        is_cancelled: polled while the steps run; True stops and removes what was made.
        python: interpreter to create the environment with (default: QGIS's Python,
            else python3 on PATH).
        find_links: folders searched for a torch wheel to pin (default: ``PIP_FIND_LINKS``).
        extra_pip_args: more ``pip install`` options (e.g. ``--index-url URL``).

    Raises:
        SetupError: a step failed (its last output line in the message); a folder this
            call created is removed again.
        SetupCancelled: ``is_cancelled`` returned True (folder removed likewise).
    """
    folder = Path(folder).expanduser().resolve()
    if folder.exists() and not (folder / "pyvenv.cfg").is_file() and any(folder.iterdir()):
        raise SetupError(f"{folder}: folder exists and is not a virtual environment; choose an empty folder")
    created = not folder.exists() or not (folder / "pyvenv.cfg").is_file()
    if find_links is None:
        find_links = os.environ.get("PIP_FIND_LINKS", "").split()
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env.pop("PYTHONPATH", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    try:
        progress(0.0)
        vpy = venv_python(folder)
        if created:
            base = python or base_python()
            log(f"Creating a virtual environment in {folder} with {base}")
            folder.parent.mkdir(parents=True, exist_ok=True)
            _run([base, "-m", "venv", str(folder)], log, is_cancelled, env=env)
        if not vpy.is_file():
            raise SetupError(f"{folder}: the virtual environment has no interpreter at {vpy}")
        progress(0.05)
        version = _run([str(vpy), "-c", "import sys; print('%d %d' % sys.version_info[:2])"], log, is_cancelled,
                       env=env)[-1].split()
        reqs = requirements_for((int(version[0]), int(version[1])), find_links)
        log("Installing the engine's requirements (this downloads several hundred MB the first time)")
        _run([str(vpy), "-m", "pip", "install", "--progress-bar", "off", *extra_pip_args, *reqs], log, is_cancelled,
             on_line=_PipProgress(progress, 0.05, 0.9), env=env)
        progress(0.9)
        log("Checking the environment")
        _run([str(vpy), "-c", "import " + ", ".join(IMPORTS) + "; print('torch', torch.__version__)"], log,
             is_cancelled, env=env)
        root = engine_root()
        _run([str(vpy), "-m", "engine", "--version"], log, is_cancelled, env=engine_env(base=env, root=root),
             cwd=root)
        progress(1.0)
        log(f"The engine environment is ready: {vpy}")
        return vpy
    except BaseException:
        if created and folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            log(f"Removed the incomplete environment {folder}")
        raise


if __name__ == "__main__":  # pragma: no cover - python -m hrmnet_qgis.setup_engine FOLDER
    print(create_engine_env(Path(sys.argv[1])))
