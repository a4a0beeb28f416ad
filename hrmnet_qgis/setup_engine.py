"""Create the engine's own virtual environment ("Set up engine").

The engine needs torch, rasterio, geopandas, ... Installing them into QGIS's Python
is the classic way to break QGIS, so this creates a separate virtual environment
(``python3 -m venv``) and pip-installs the engine's requirements there. The plugin
then runs the engine with that interpreter (stored as the plugin setting).

:func:`create_engine_env` is the core: plain Python with callbacks for log lines,
progress and cancel, callable without a GUI. :class:`SetupEngineTask` (in
``dialogs/setup_dialog.py``) runs it as a QgsTask.

What is installed: the full lock of the set (``engine/locks/full.txt``, made by ``make locks``
from pyproject.toml's dependencies and constraints.txt: every package ``==`` with its hashes,
``pip install --require-hashes``), and the PyTorch build this computer can use
(:func:`choose_torch_build`) at the lock's torch version: with an NVIDIA GPU the CUDA
build its driver supports, from PyTorch's own package index for that build
(``https://download.pytorch.org/whl/cuXYZ``), else the CPU build (macOS: PyPI's
torch). The choice and its download size are shown before installing and can be
overridden.

Two kinds of engine are offered (:data:`ENGINE_KINDS`): "Detection and training" (the above,
with PyTorch) and "Detection only" (the light engine: ``engine/locks/light.txt``, the lock of
engine/light-requirements.txt, onnxruntime instead of torch; it runs detection with exported
``.onnx`` models). The environment is made with QGIS's own Python (:func:`base_python`).
Its onnxruntime build is picked like PyTorch's (:func:`choose_onnxruntime`): onnxruntime-gpu
for an NVIDIA GPU whose driver runs PyPI's build, onnxruntime-directml on Windows, else
onnxruntime.

Pip honours its own configuration and environment (``PIP_INDEX_URL``,
``PIP_FIND_LINKS``, proxies). When a find-links folder holds a torch wheel for this
Python, that exact torch is pinned, so e.g. a CPU build on local disk is used
instead of a multi-gigabyte CUDA download; when ``PIP_INDEX_URL`` is set, the
automatic choice adds no index of its own.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
# bandit B404: runs venv and pip with list argv, no shell
import subprocess  # nosec B404
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence

from . import engine_requirements
from .engine_python import qgis_python_candidates
from .runner import engine_env, engine_root

__all__ = [
    "SetupError",
    "SetupCancelled",
    "GpuInfo",
    "TorchBuild",
    "OnnxRuntimeBuild",
    "ENGINE_KINDS",
    "FULL",
    "LIGHT",
    "choose_onnxruntime",
    "onnxruntime_options",
    "light_requirements_and_pins",
    "TORCH_CUDA_BUILDS",
    "default_env_dir",
    "venv_python",
    "find_torch_wheel",
    "engine_requirements_and_pins",
    "requirements_for",
    "detect_gpu",
    "choose_torch_build",
    "torch_build_options",
    "describe_engine_python",
    "doctor_summary",
    "run_doctor",
    "InstallPlan",
    "install_plan",
    "lock_of",
    "create_engine_env",
]

#: PyTorch's CUDA builds offered, newest first: (name, CUDA version), each on its own index
#: ``https://download.pytorch.org/whl/<name>``. The CUDA variants PyTorch publishes for the pinned
#: torch (2.9 to 2.12 ship cu126, cu128 and cu130; older torch: cu118/cu121/cu124, pick by hand).
TORCH_CUDA_BUILDS: list[tuple[str, tuple[int, int]]] = [("cu130", (13, 0)), ("cu128", (12, 8)), ("cu126", (12, 6))]
#: Older builds, offered as overrides for an older torch pin.
OLDER_CUDA_BUILDS: list[tuple[str, tuple[int, int]]] = [("cu124", (12, 4)), ("cu121", (12, 1)), ("cu118", (11, 8))]
PYTORCH_INDEX = "https://download.pytorch.org/whl/{build}"
#: Lowest Linux driver of each CUDA toolkit (NVIDIA's CUDA Toolkit release notes, "CUDA Toolkit and
#: Corresponding Driver Versions"); used when nvidia-smi does not print the driver's "CUDA Version".
DRIVER_FOR_CUDA: list[tuple[tuple[int, int], tuple[int, ...]]] = [
    ((13, 0), (580, 65, 6)), ((12, 9), (575, 51, 3)), ((12, 8), (570, 26)), ((12, 6), (560, 28, 3)),
    ((12, 4), (550, 54, 14)), ((12, 1), (530, 30, 2)), ((11, 8), (520, 61, 5)),
]
#: Minor-version compatibility: any CUDA <major>.x build runs on a driver of at least this branch.
MIN_DRIVER_FOR_MAJOR = {13: (580,), 12: (525, 60, 13), 11: (450, 80, 2)}
#: What "Set up engine" needs in all (torch and every other package), shown before installing.
SIZE_CPU = "about 1.6 GB on disk, 0.38 GB to download (measured, CPU build)"
SIZE_CUDA = "several GB: about 3 GB to download and 5-6 GB on disk (PyTorch with NVIDIA's CUDA libraries)"
SIZE_DEFAULT = "about 1.5 GB"
#: Measured from the locks on Linux, Python 3.11, CPU builds: the environment's size on disk and the sum of
#: the wheels pip downloads (full: 0.19 GB from the lock plus the 0.19 GB CPU torch wheel).
SIZE_LIGHT = "about 0.72 GB on disk, 0.18 GB to download (measured; onnxruntime, no torch)"
SIZE_LIGHT_DIRECTML = "about 0.72 GB on disk (onnxruntime-directml's wheel is 24 MB, about the size of onnxruntime's)"
SIZE_LIGHT_CUDA = ("the light set (about 0.72 GB on disk, measured) plus about 1.5 GB to download for onnxruntime-gpu "
                   "with NVIDIA's CUDA 13 and cuDNN 9 libraries (PyPI's Linux wheel sizes; not measured installed)")
#: The two kinds of engine "Set up engine" offers: (kind, what the user sees).
FULL, LIGHT = "full", "light"
ENGINE_KINDS: list[tuple[str, str]] = [
    (LIGHT, "Detection only (light, ~0.72 GB measured: onnxruntime, no torch; .onnx models)"),
    (FULL, "Detection and training (PyTorch, ~1.6 GB CPU / several GB CUDA)"),
]
#: PyPI's onnxruntime-gpu is built for CUDA 13 (its [cuda,cudnn] extras bring CUDA 13 and cuDNN 9).
ONNX_GPU_CUDA = (13, 0)

Log = Callable[[str], None]
Progress = Callable[[float], None]


class SetupError(Exception):
    """Setting up the environment failed; ``str(exc)`` says why in one line."""


class SetupCancelled(Exception):
    """The set-up was cancelled; the half-made environment has been removed."""


def default_env_dir(profile_dir: str, kind: str = FULL) -> Path:
    """The default environment folder inside a QGIS profile folder (``engine-venv``, light: ``engine-venv-light``)."""
    return Path(profile_dir) / "hrmnet" / ("engine-venv-light" if kind == LIGHT else "engine-venv")


def venv_python(folder: Path) -> Path:
    """The interpreter of the virtual environment in ``folder``."""
    if os.name == "nt":
        return Path(folder) / "Scripts" / "python.exe"
    return Path(folder) / "bin" / "python"


def base_python() -> str:
    """The interpreter to create the environment with: QGIS's own Python, else a Python of the same
    version on PATH (``python3.X``); so the engine runs the Python version QGIS runs."""
    for candidate in qgis_python_candidates():
        return candidate
    v = sys.version_info
    for name in (f"python{v.major}.{v.minor}", "python3", "python"):
        found = shutil.which(name)
        if found and _python_version(found) == (v.major, v.minor):
            return found
    raise SetupError(f"no Python {v.major}.{v.minor} (QGIS's version) found to create the environment with; "
                     "choose its interpreter with 'Use an existing Python…'")


def _python_version(python: str) -> Optional[tuple[int, int]]:
    try:
        # list argv, no shell: an interpreter found on PATH
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],  # nosec B603
                             capture_output=True, text=True, timeout=60, check=False).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


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


def engine_requirements_and_pins(root: Optional[Path] = None) -> tuple[list[str], list[str]]:
    """(requirements, constraints) of the engine: pyproject.toml's dependencies and constraints.txt's
    pins, as the plugin carries them (see :mod:`.engine_requirements`)."""
    try:
        return engine_requirements.load(Path(root or engine_root()))
    except (OSError, ValueError, KeyError) as exc:
        raise SetupError(f"cannot read the engine's requirements: {exc}") from exc


def light_requirements_and_pins(root: Optional[Path] = None) -> tuple[list[str], list[str]]:
    """(requirements, constraints) of the light engine: engine/light-requirements.txt with the
    full engine's pins, as the plugin carries them (see :func:`.engine_requirements.load_light`)."""
    try:
        return engine_requirements.load_light(Path(root or engine_root()))
    except (OSError, ValueError, KeyError) as exc:
        raise SetupError(f"cannot read the light engine's requirements: {exc}") from exc


def requirements_for(py: tuple[int, int], find_links: Sequence[str],
                     requirements: Optional[Sequence[str]] = None) -> list[str]:
    """``requirements`` (default: the engine's), with torch pinned to a wheel found in ``find_links``."""
    reqs = list(requirements if requirements is not None else engine_requirements_and_pins()[0])
    version = find_torch_wheel(find_links, py)
    if version is None:
        return reqs
    return [f"torch=={version}" if engine_requirements.requirement_name(r) == "torch" else r for r in reqs]


# --------------------------------------------------------------------------- which PyTorch build


@dataclass(frozen=True)
class GpuInfo:
    """An NVIDIA GPU as ``nvidia-smi`` reports it.

    Attributes:
        name: e.g. ``NVIDIA GeForce RTX 4070``.
        driver: driver version, e.g. ``570.86.10``.
        cuda: highest CUDA version the driver supports (``nvidia-smi``'s "CUDA Version"), e.g.
            ``(12, 8)``; None when it did not say.
        memory_mib: memory of the first GPU, MiB (None when unknown).
    """

    name: str
    driver: str
    cuda: Optional[tuple[int, int]] = None
    memory_mib: Optional[int] = None


@dataclass(frozen=True)
class TorchBuild:
    """The PyTorch build to install.

    Attributes:
        build: ``cpu``, a CUDA build (``cu128``), ``default`` (PyPI's torch: macOS), ``local``
            (the wheel in PIP_FIND_LINKS) or ``pip`` (pip as configured, no index added).
        index_url: PyTorch's package index for the build (added with ``--extra-index-url``), or None.
        label: one line for the user, e.g. ``CUDA 12.8 build (GPU: NVIDIA ..., driver 570.86)``.
        size: what the set-up downloads with this build.
        reason: why it was chosen.
    """

    build: str
    index_url: Optional[str]
    label: str
    size: str
    reason: str = ""

    def pip_args(self) -> list[str]:
        return ["--extra-index-url", self.index_url] if self.index_url else []


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def parse_nvidia_smi(query_output: str, header_output: str = "") -> Optional[GpuInfo]:
    """GPU from ``nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader,nounits``
    (first line) and the plain ``nvidia-smi`` table (its "CUDA Version: X.Y"); None when no GPU is listed."""
    rows = [line.split(",") for line in query_output.splitlines() if line.strip()]
    if not rows or len(rows[0]) < 2 or not _version(rows[0][1]):
        return None
    name, driver = rows[0][0].strip(), rows[0][1].strip()
    memory = int(rows[0][2].strip()) if len(rows[0]) > 2 and rows[0][2].strip().isdigit() else None
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", header_output)
    return GpuInfo(name, driver, (int(m.group(1)), int(m.group(2))) if m else None, memory)


def detect_gpu(run: Callable[..., "subprocess.CompletedProcess"] = subprocess.run,
               which: Callable[[str], Optional[str]] = shutil.which,
               platform: str = sys.platform) -> tuple[Optional[GpuInfo], str]:
    """(the NVIDIA GPU or None, a note on what was found) by running ``nvidia-smi`` (none on macOS)."""
    if platform == "darwin":
        return None, "macOS: no NVIDIA GPU support in PyTorch"
    exe = which("nvidia-smi")
    if exe is None and platform.startswith("win"):
        candidate = Path(os.environ.get("ProgramW6432", r"C:\Program Files")) / "NVIDIA Corporation" / "NVSMI" / "nvidia-smi.exe"
        exe = str(candidate) if candidate.is_file() else None
    if exe is None:
        return None, "no NVIDIA GPU found (no nvidia-smi)"
    try:
        # list argv, no shell; nvidia-smi found on PATH
        query = run([exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=20, check=False)
        header = run([exe], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"nvidia-smi failed ({exc}): no usable NVIDIA GPU"
    if query.returncode != 0:
        why = ((query.stderr or "") + (query.stdout or "")).strip().splitlines()[:1] or [f"exit code {query.returncode}"]
        return None, f"nvidia-smi failed ({why[0][:160]}): no usable NVIDIA GPU (check the driver)"
    gpu = parse_nvidia_smi(query.stdout, header.stdout if header.returncode == 0 else "")
    if gpu is None:
        return None, "nvidia-smi lists no GPU"
    return gpu, f"NVIDIA GPU: {gpu.name}, driver {gpu.driver}" + (
        f" (CUDA {gpu.cuda[0]}.{gpu.cuda[1]})" if gpu.cuda else "")


def driver_cuda(gpu: GpuInfo) -> Optional[tuple[int, int]]:
    """Highest CUDA version ``gpu``'s driver supports: nvidia-smi's word, else NVIDIA's driver table."""
    if gpu.cuda:
        return gpu.cuda
    driver = _version(gpu.driver)
    for cuda, minimum in DRIVER_FOR_CUDA:
        if driver >= minimum:
            return cuda
    return None


def _cuda_build(build: str, cuda: tuple[int, int], gpu: GpuInfo, reason: str) -> TorchBuild:
    label = f"CUDA {cuda[0]}.{cuda[1]} build ({build}) for {gpu.name}, driver {gpu.driver}"
    return TorchBuild(build, PYTORCH_INDEX.format(build=build), label, SIZE_CUDA, reason)


def choose_torch_build(gpu: Optional[GpuInfo], note: str = "", platform: str = sys.platform,
                       environ: Optional[Mapping[str, str]] = None, local_wheel: Optional[str] = None,
                       builds: Sequence[tuple[str, tuple[int, int]]] = tuple(TORCH_CUDA_BUILDS)) -> TorchBuild:
    """The PyTorch build to install (pure: everything it looks at comes in).

    Order: a torch wheel in PIP_FIND_LINKS; pip as configured when PIP_INDEX_URL is set; macOS:
    PyPI's torch; an NVIDIA GPU: the newest of ``builds`` whose CUDA version the driver supports
    (else the oldest of the driver's CUDA major, by minor-version compatibility); else the CPU build.
    """
    env = os.environ if environ is None else environ
    if local_wheel:
        return TorchBuild("local", None, f"torch {local_wheel} from PIP_FIND_LINKS", SIZE_CPU if "cpu" in local_wheel
                          else SIZE_CUDA, "a torch wheel is on local disk (PIP_FIND_LINKS)")
    if env.get("PIP_INDEX_URL"):
        return TorchBuild("pip", None, "torch from your package index (PIP_INDEX_URL)", SIZE_CUDA,
                          "PIP_INDEX_URL is set: pip installs from it as configured; choose a build to add "
                          "PyTorch's own index")
    if platform == "darwin":
        return TorchBuild("default", None, "PyPI's torch for macOS (Apple GPU through MPS where available)",
                          SIZE_DEFAULT, note)
    cpu = TorchBuild("cpu", PYTORCH_INDEX.format(build="cpu"), "CPU build", SIZE_CPU, note or "no NVIDIA GPU")
    if gpu is None:
        return cpu
    cuda = driver_cuda(gpu)
    if cuda is None:
        return TorchBuild(cpu.build, cpu.index_url, cpu.label, cpu.size,
                          f"{gpu.name}: driver {gpu.driver} is too old for PyTorch's CUDA builds; install a newer "
                          "NVIDIA driver and run Set up engine once more")
    for build, version in builds:
        if version <= cuda:
            return _cuda_build(build, version, gpu, f"the driver supports CUDA {cuda[0]}.{cuda[1]}")
    same_major = [(b, v) for b, v in builds if v[0] == cuda[0]]
    if same_major and _version(gpu.driver) >= MIN_DRIVER_FOR_MAJOR.get(cuda[0], (10**6,)):
        build, version = same_major[-1]
        return _cuda_build(build, version, gpu, f"the driver supports CUDA {cuda[0]}.{cuda[1]}; CUDA "
                           f"{version[0]}.{version[1]} runs on it by minor-version compatibility (a newer "
                           "driver is better)")
    return TorchBuild(cpu.build, cpu.index_url, cpu.label, cpu.size,
                      f"{gpu.name}: driver {gpu.driver} (CUDA {cuda[0]}.{cuda[1]}) is too old for PyTorch's CUDA "
                      f"builds; install a newer NVIDIA driver and run Set up engine once more")


@dataclass(frozen=True)
class OnnxRuntimeBuild:
    """The onnxruntime build of the light engine.

    Attributes:
        build: ``cpu``, ``cuda`` or ``directml``.
        package: what pip installs instead of ``onnxruntime`` (e.g. ``onnxruntime-gpu[cuda,cudnn]``).
        label: one line for the user.
        size: what the set-up downloads with this build.
        reason: why it was chosen.
    """

    build: str
    package: str
    label: str
    size: str
    reason: str = ""


def onnxruntime_options(platform: str = sys.platform) -> list[OnnxRuntimeBuild]:
    """Every onnxruntime build the user may pick: CPU, NVIDIA CUDA (not on macOS), DirectML (Windows)."""
    options = [OnnxRuntimeBuild("cpu", "onnxruntime", "onnxruntime (CPU)", SIZE_LIGHT, "chosen by hand")]
    if platform != "darwin":
        options.append(OnnxRuntimeBuild("cuda", "onnxruntime-gpu[cuda,cudnn]", "onnxruntime-gpu (NVIDIA, CUDA 13)",
                                        SIZE_LIGHT_CUDA, "chosen by hand"))
    if platform.startswith("win"):
        options.append(OnnxRuntimeBuild("directml", "onnxruntime-directml", "onnxruntime-directml (any DirectX 12 GPU)",
                                        SIZE_LIGHT_DIRECTML, "chosen by hand"))
    return options


def choose_onnxruntime(gpu: Optional[GpuInfo], note: str = "", platform: str = sys.platform) -> OnnxRuntimeBuild:
    """The light engine's onnxruntime (pure): onnxruntime-gpu for an NVIDIA GPU whose driver supports
    CUDA 13 (PyPI's build), else onnxruntime-directml on Windows, else the CPU onnxruntime."""
    by = {o.build: o for o in onnxruntime_options(platform)}
    fallback = by.get("directml") or by["cpu"]
    if gpu is not None:
        cuda = driver_cuda(gpu)
        if cuda is not None and cuda >= ONNX_GPU_CUDA:
            return OnnxRuntimeBuild("cuda", by["cuda"].package, f"onnxruntime-gpu for {gpu.name}, driver {gpu.driver}",
                                    SIZE_LIGHT_CUDA, f"the driver supports CUDA {cuda[0]}.{cuda[1]}")
        have = f"CUDA {cuda[0]}.{cuda[1]}" if cuda else "an unknown CUDA version"
        note = (f"{gpu.name}: driver {gpu.driver} ({have}) is too old for PyPI's onnxruntime-gpu (CUDA 13, driver "
                "580 or newer); install a newer NVIDIA driver, or choose Detection and training (PyTorch's CUDA builds)")
    elif not note:
        note = "no NVIDIA GPU"
    if fallback.build == "directml":
        note = "Windows: DirectML runs on any DirectX 12 GPU" + (f" ({note})" if note else "")
    return OnnxRuntimeBuild(fallback.build, fallback.package, fallback.label, fallback.size, note)


def torch_build_options(gpu: Optional[GpuInfo] = None, platform: str = sys.platform) -> list[TorchBuild]:
    """Every build the user may pick instead of the automatic choice."""
    options = [TorchBuild("cpu", PYTORCH_INDEX.format(build="cpu"), "CPU build", SIZE_CPU, "chosen by hand")]
    if platform != "darwin":
        for build, version in [*TORCH_CUDA_BUILDS, *OLDER_CUDA_BUILDS]:
            label = f"CUDA {version[0]}.{version[1]} build ({build})"
            options.append(TorchBuild(build, PYTORCH_INDEX.format(build=build), label, SIZE_CUDA, "chosen by hand"))
    options.append(TorchBuild("pip", None, "torch as pip is configured (no index added)", SIZE_DEFAULT,
                              "chosen by hand"))
    return options


def _run(argv: list[str], log: Log, is_cancelled: Callable[[], bool], on_line: Optional[Log] = None,
         env: Optional[dict] = None, cwd: Optional[Path] = None, ok_codes: Sequence[int] = (0,)) -> list[str]:
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
    if rc not in ok_codes:
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


def describe_engine_python(setting: str, environ: Mapping[str, str], candidates: Sequence[str],
                           usable: Callable[[str], bool]) -> str:
    """Which Python the engine really runs with, and why (the order of :func:`.engine_python.resolve_python`)."""
    from .engine_python import EngineSetupError, resolve_python

    try:
        python = resolve_python(setting, environ, candidates, usable)
    except EngineSetupError as exc:
        if setting or environ.get("HRMNET_PYTHON"):
            return f"(not usable: {exc})"
        return "(none yet: set up an environment below, or set HRMNET_PYTHON)"
    if setting:
        return f"{python} (set by Set up engine)"
    if environ.get("HRMNET_PYTHON"):
        return f"{python} (from HRMNET_PYTHON)"
    return f"{python} (QGIS's own Python, which has torch)"


def doctor_summary(report: dict) -> str:
    """One line from ``engine doctor --json``'s report: device, torch, CUDA, precision (light engine:
    device, onnxruntime and its providers, precision)."""
    device = report.get("device") or "?"
    if report.get("device_name") and str(device).startswith("cuda"):
        device = f"{device} ({report['device_name']})"
    if report.get("engine_kind") == "light":  # onnxruntime, no torch
        providers = ", ".join(report.get("providers") or []) or "?"
        line = (f"light engine (no torch: .onnx models only), device {device}, onnxruntime "
                f"{report.get('onnxruntime', '?')} ({providers}), precision {report.get('precision', '?')}")
    else:
        cuda = f"CUDA {report['cuda']}" if report.get("cuda") else "no CUDA (CPU build)"
        line = f"device {device}, torch {report.get('torch', '?')}, {cuda}, precision {report.get('precision', '?')}"
    failed = [c["name"] + ": " + str(c.get("value", "")) for c in report.get("checks", []) if not c.get("ok")]
    return line + ("; FAILED " + "; ".join(failed) if failed else "")


def run_doctor(python: Path, log: Log = print, is_cancelled: Callable[[], bool] = lambda: False,
               env: Optional[dict] = None, root: Optional[Path] = None) -> dict:
    """Run ``python -m engine doctor --json`` with ``python``; its report (a failed check is in it)."""
    root = Path(root or engine_root())
    lines = _run([str(python), "-m", "engine", "doctor", "--json"], lambda line: None, is_cancelled,
                 env=engine_env(base=env, root=root), cwd=root, ok_codes=(0, 1))
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                report = json.loads(line)
            except ValueError:
                break
            log("Engine check: " + doctor_summary(report))
            return report
    raise SetupError(f"{python} -m engine doctor: no report ({(lines or ['no output'])[-1][:160]})")


@dataclass(frozen=True)
class InstallPlan:
    """What ``pip install`` gets for one kind of engine, and how the result is checked.

    The set comes from its full lock (``make locks``): ``locked`` (every package ``==`` with its
    hashes) is installed first with ``--require-hashes``; then ``build`` (PyTorch or a GPU
    onnxruntime: the build chosen for this computer, from its own index) with ``build_pins`` (the
    lock's version of it) and ``locked``'s pins as constraints, so nothing else can move.

    Attributes:
        requirements: the set's requirement strings (what the environment must import).
        locked: requirements-file text, the lock less the build part, with hashes.
        build: what the second pip step installs (empty: nothing, the lock is all).
        build_pins: constraints-file text pinning ``build`` to the lock's versions.
        pip_args: extra pip options of the second step (PyTorch's index for a CUDA build).
        notes: lines logged before installing (the build chosen and why, the download size).
        check: Python code run in the new environment: imports the set, prints the key version.
    """

    requirements: list[str]
    locked: str
    build: list[str]
    build_pins: str
    pip_args: list[str]
    notes: list[str]
    check: str


def _check_code(requirements: Sequence[str], last: str) -> str:
    modules = list(dict.fromkeys(engine_requirements.import_names(list(requirements))))
    return "import " + ", ".join(modules) + "; " + last


def lock_of(kind: str, root: Optional[Path] = None) -> list[engine_requirements.Locked]:
    """The full lock of ``kind`` (``engine/locks/<kind>.txt`` beside the engine)."""
    try:
        return engine_requirements.load_lock(Path(root or engine_root()), kind)
    except (OSError, ValueError, KeyError) as exc:
        raise SetupError(f"cannot read the engine's lock: {exc}") from exc


def _split(entries: list, build_part: Callable[[str], bool]) -> tuple[str, list]:
    """(the lock less the build part, with hashes; the build part's entries)."""
    build = [e for e in entries if build_part(e.name)]
    return engine_requirements.hashed([e for e in entries if not build_part(e.name)]), build


def _light_plan(onnx_build: OnnxRuntimeBuild) -> InstallPlan:
    requirements, _ = light_requirements_and_pins()
    reqs = engine_requirements.with_onnxruntime(requirements, onnx_build.package)
    notes = [f"onnxruntime: {onnx_build.label}" + (f" ({onnx_build.reason})" if onnx_build.reason else ""),
             f"Installing the light engine's locked set (no torch): {onnx_build.size}"]
    check = _check_code(reqs, "print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())")
    entries = lock_of(LIGHT)
    if onnx_build.package == "onnxruntime":  # the lock is all
        return InstallPlan(reqs, engine_requirements.hashed(entries), [], "", [], notes, check)
    locked, ort = _split(entries, lambda name: name == "onnxruntime")
    variant = engine_requirements.requirement_name(onnx_build.package)
    return InstallPlan(reqs, locked, [onnx_build.package], engine_requirements.pins(ort, rename=lambda n: variant),
                       [], notes, check)


def install_plan(kind: str, py: tuple[int, int], find_links: Sequence[str], torch_build: Optional[TorchBuild] = None,
                 onnx_build: Optional[OnnxRuntimeBuild] = None,
                 gpu: Callable[[], tuple[Optional[GpuInfo], str]] = detect_gpu) -> InstallPlan:
    """The install for ``kind`` (:data:`FULL` or :data:`LIGHT`) with Python ``py``; builds not given are
    chosen for this computer (``gpu()``: the NVIDIA GPU and a note, see :func:`detect_gpu`)."""
    if kind == LIGHT:
        return _light_plan(onnx_build or choose_onnxruntime(*gpu()))
    if kind != FULL:
        raise SetupError(f"{kind}: unknown kind of engine (choose {FULL} or {LIGHT})")
    requirements, _ = engine_requirements_and_pins()
    if torch_build is None:
        torch_build = choose_torch_build(*gpu(), local_wheel=find_torch_wheel(find_links, py))
    reqs = requirements_for(py, find_links if torch_build.build == "local" else (), requirements)
    torch_req = [r for r in reqs if engine_requirements.requirement_name(r) == "torch"]
    locked, build = _split(lock_of(FULL), engine_requirements.torch_build_part)
    torch_pins = engine_requirements.pins([e for e in build if e.name == "torch"])
    notes = [f"PyTorch: {torch_build.label}" + (f" ({torch_build.reason})" if torch_build.reason else ""),
             f"Installing the engine's locked set: {torch_build.size}"]
    return InstallPlan(requirements, locked, torch_req, torch_pins, torch_build.pip_args(), notes,
                       _check_code(requirements, "print('torch', torch.__version__)"))


def _pip_install(vpy: Path, folder: Path, plan: InstallPlan, extra_pip_args: Sequence[str], log: Log,
                 is_cancelled: Callable[[], bool], progress: Progress, env: dict) -> None:
    """The two pip steps of ``plan`` (see :class:`InstallPlan`); the files pip reads stay in ``folder``."""
    lock = folder / "hrmnet-lock.txt"
    lock.write_text(plan.locked, encoding="utf-8")
    pip = [str(vpy), "-m", "pip", "install", "--progress-bar", "off", *extra_pip_args]
    end = 0.75 if plan.build else 0.9
    _run([*pip, "--require-hashes", "-r", str(lock)], log, is_cancelled, on_line=_PipProgress(progress, 0.05, end),
         env=env)
    if plan.build:
        pinned = folder / "hrmnet-pins.txt"
        pinned.write_text(engine_requirements.pins(engine_requirements.parse_lock(plan.locked)) + plan.build_pins,
                          encoding="utf-8")
        _run([*pip, *plan.pip_args, "-c", str(pinned), *plan.build], log, is_cancelled,
             on_line=_PipProgress(progress, end, 0.9), env=env)


def create_engine_env(
    folder: Path,
    log: Log = print,
    progress: Progress = lambda fraction: None,
    is_cancelled: Callable[[], bool] = lambda: False,
    python: Optional[str] = None,
    find_links: Optional[Sequence[str]] = None,
    extra_pip_args: Sequence[str] = (),
    torch_build: Optional[TorchBuild] = None,
    on_report: Optional[Callable[[dict], None]] = None,
    kind: str = FULL,
    onnx_build: Optional[OnnxRuntimeBuild] = None,
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
        torch_build: the PyTorch build to install (default: :func:`choose_torch_build` for this
            computer's GPU and driver, see :func:`detect_gpu`).
        on_report: called with ``python -m engine doctor --json``'s report once installed
            (device, torch, CUDA, precision, ...).
        kind: :data:`FULL` (PyTorch: detection and training) or :data:`LIGHT` (onnxruntime, no
            torch: detection with ``.onnx`` models).
        onnx_build: the light engine's onnxruntime build (default: :func:`choose_onnxruntime`).

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
        py = (int(version[0]), int(version[1]))
        qgis_py = tuple(sys.version_info[:2])
        log(f"Python {py[0]}.{py[1]}" + (" (QGIS's own version)" if py == qgis_py
                                          else f" (QGIS runs {qgis_py[0]}.{qgis_py[1]})"))
        plan = install_plan(kind, py, find_links, torch_build, onnx_build)
        for line in plan.notes:
            log(line)
        _pip_install(vpy, folder, plan, extra_pip_args, log, is_cancelled, progress, env)
        progress(0.9)
        log("Checking the environment")
        _run([str(vpy), "-c", plan.check], log, is_cancelled, env=env)
        root = engine_root()
        _run([str(vpy), "-m", "engine", "--version"], log, is_cancelled, env=engine_env(base=env, root=root),
             cwd=root)
        report = run_doctor(vpy, log, is_cancelled, env=env, root=root)
        if on_report is not None:
            on_report(report)
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
