"""Run ``python -m engine COMMAND ... --progress jsonl`` in a separate process.

This module is plain Python (no QGIS, no torch): the Processing algorithms, the
training dialog and the tests all use it. The engine runs in its own interpreter so
that its libraries (torch, rasterio, pyproj, ...) never load into QGIS's process.

Protocol (see ``engine/events.py``): one JSON object a line on stdout, with
``event`` one of ``start``, ``log``, ``progress``, ``done``, ``error``. A user
mistake exits 2 with one line on stderr, a cancel exits 130.

Cancelling sends the engine an interrupt (SIGINT; CTRL_BREAK on Windows) so it can
roll back its temporary files, waits, then terminates it; afterwards what this run
created and left is removed (see :class:`OutputGuard`), and nothing else: another job
writing beside the same outputs keeps its files.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
# bandit B404: the engine runs as a child process by design (list argv, no shell)
import subprocess  # nosec B404
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

__all__ = [
    "EngineError",
    "EngineCancelled",
    "EngineRun",
    "engine_root",
    "engine_env",
    "run_engine",
    "OutputGuard",
]

EventHandler = Callable[[dict], None]

#: Exit code of the engine for a cancel / Ctrl-C.
EXIT_CANCELLED = 130
#: Lines of stderr kept to explain a failure.
STDERR_TAIL = 40


class EngineError(Exception):
    """The engine failed; ``str(exc)`` is its one-line message.

    Attributes:
        returncode: the engine's exit status (2 for a user mistake).
        stderr: the last lines the engine wrote on stderr.
        options: the command-line options the message names, each with its argparse dest
            (``{"--id-field": "id_field"}``, from the error event), for callers that show
            their own labels instead.
    """

    def __init__(self, message: str, returncode: Optional[int] = None, stderr: Sequence[str] = (),
                 options: Optional[dict] = None) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = list(stderr)
        self.options = dict(options or {})


class EngineCancelled(Exception):
    """The run was cancelled by the caller; partial outputs have been removed."""


def engine_root(plugin_dir: Optional[Path] = None) -> Path:
    """The folder that contains the ``engine`` package (what goes on PYTHONPATH).

    In an installed plugin the engine ships inside the plugin folder
    (``hrmnet_qgis/engine``); in the source tree it sits beside it.
    """
    plugin_dir = Path(plugin_dir or Path(__file__).resolve().parent)
    for candidate in (plugin_dir, plugin_dir.parent):
        if (candidate / "engine" / "__main__.py").is_file():
            return candidate
    raise EngineError(f"{plugin_dir}: the engine package is missing from the plugin (reinstall the plugin)")


def engine_env(base: Optional[dict] = None, root: Optional[Path] = None) -> dict:
    """Environment for the engine process: ``root`` first on PYTHONPATH, unbuffered output.

    Variables that would make the engine's interpreter pick up QGIS's own Python
    (PYTHONHOME, QGIS's PYTHONPATH) are dropped; the plugin's model catalogue setting becomes
    ``HRMNET_MODELS_URL`` (unless the environment has one).
    """
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONHOME", None)
    env["PYTHONPATH"] = str(root or engine_root())
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    if not env.get("HRMNET_MODELS_URL"):
        url = _models_url()
        if url:
            env["HRMNET_MODELS_URL"] = url
    return env


def _models_url() -> str:
    """The plugin's "model catalogue" setting ('' outside QGIS or when unset)."""
    try:
        from . import settings

        return settings.get(settings.MODELS_URL)
    except Exception:  # noqa: BLE001 - no QGIS settings here (plain-Python use, tests)
        return ""


#: Files that belong to an output file, by its extension: suffixes added to its name
#: (``out.tif.aux.xml``, ``out.gpkg-wal``) or replacing its extension (``out.dbf``).
_ADDED = {".tif": (".aux.xml", ".ovr", ".msk"), ".tiff": (".aux.xml", ".ovr", ".msk"),
          ".gpkg": ("-wal", "-shm", "-journal"), ".shp": (".aux.xml",)}
_REPLACED = {".shp": (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".qmd")}


def own_files(target: Path) -> set[str]:
    """Names, beside ``target``, of the target and the files that belong to it (sidecars)."""
    ext = target.suffix.lower()
    names = {target.name}
    names.update(target.name + added for added in _ADDED.get(ext, ()))
    names.update(target.stem + replaced for replaced in _REPLACED.get(ext, ()))
    return names


def run_temporary(name: str, stem: str, pid: Optional[int]) -> bool:
    """True for a hidden temporary that the engine process ``pid`` names after itself: its
    staging folder ``.hrmnet-tmp-HOST-PID-…`` or a ``.STEM.…PID…`` file. Never true
    without a pid (a name alone does not say which run made it)."""
    if pid is None or not name.startswith("."):
        return False
    number = re.compile(rf"(?<!\d){pid}(?!\d)")
    if name.startswith(".hrmnet-tmp-"):
        return name.split("-")[3:4] == [str(pid)]
    return name[1:].startswith(stem + ".") and bool(number.search(name[1 + len(stem):]))


@dataclass
class OutputGuard:
    """Remembers what existed before a run, to remove what a failed run left behind.

    Removed after a failure, among the entries that appeared since the guard was made:
    each target and its sidecar files (``out.dbf``, ``out.tif.aux.xml``), and the hidden
    temporaries named after the engine process ``pid`` (its staging folder
    ``.hrmnet-tmp-HOST-PID-…``, ``.out.mask{PID}.tif``). Anything else is kept, even when
    its name starts with an output's name (``out.v2.tif``): it may be another job's.

    Args:
        targets: output files or folders of the run.
        pid: the engine's process id (set once it runs).
    """

    targets: Sequence[str]
    pid: Optional[int] = None
    _before: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for t in self.targets:
            parent = Path(t).parent
            if parent.is_dir() and str(parent) not in self._before:
                self._before[str(parent)] = set(os.listdir(parent))

    def leftovers(self) -> list[Path]:
        """Paths created since the guard was made that this run owns."""
        found: list[Path] = []
        for t in self.targets:
            path = Path(t)
            before = self._before.get(str(path.parent))
            if before is None or not path.parent.is_dir():
                continue
            own = own_files(path)
            stem = path.stem if path.suffix else path.name
            for name in sorted(set(os.listdir(path.parent)) - before):
                candidate = path.parent / name
                if candidate not in found and (name in own or run_temporary(name, stem, self.pid)):
                    found.append(candidate)
        return found

    def clean(self) -> list[Path]:
        """Remove :meth:`leftovers`; returns what was removed."""
        removed = []
        for path in self.leftovers():
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
        return removed


@dataclass
class EngineRun:
    """What a finished run reported.

    Attributes:
        done: the ``done`` event (``outputs`` and ``stats``), or {} when none came.
        start: the ``start`` event, or {}.
        extra: JSON objects on stdout that were not events (e.g. ``--json`` reports).
        returncode: the engine's exit status (0, or one of ``partial_codes``).
    """

    done: dict
    start: dict
    extra: list
    returncode: int


def _reader(stream, tag: str, out: "queue.Queue[tuple[str, Optional[str]]]") -> None:
    try:
        for line in iter(stream.readline, ""):
            out.put((tag, line.rstrip("\r\n")))
    finally:
        out.put((tag, None))


def _interrupt(proc: subprocess.Popen) -> None:
    try:
        if os.name == "nt":
            proc.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        else:
            proc.send_signal(signal.SIGINT)
    except (OSError, ValueError):
        pass


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    """Interrupt, then terminate, then kill ``proc``; returns when it has exited."""
    _interrupt(proc)
    for timeout, action in ((grace_s, proc.terminate), (5.0, proc.kill), (5.0, None)):
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            if action is not None:
                action()


def _message_from(error_event: Optional[str], stderr: Sequence[str], rc: int) -> str:
    if error_event:
        return error_event
    lines = [s.strip() for s in stderr if s.strip()]
    if lines:
        last = lines[-1]
        if last.startswith("error: "):
            return last[len("error: "):]
        if any(s.startswith("Traceback") for s in lines):
            return f"the engine crashed: {last}"
        return last
    return f"the engine exited with code {rc} and no message"


def run_engine(
    command: str,
    args: Iterable[str],
    *,
    python: str,
    on_event: Optional[EventHandler] = None,
    on_stderr: Optional[Callable[[str], None]] = None,
    is_cancelled: Optional[Callable[[], bool]] = None,
    cleanup: Sequence[str] = (),
    stop_grace_s: float = 30.0,
    root: Optional[Path] = None,
    poll_s: float = 0.1,
    partial_codes: Sequence[int] = (),
) -> EngineRun:
    """Run one engine command to the end and return what it reported.

    Args:
        command: engine subcommand (``detect``, ``train``, ...).
        args: its options, already as strings (``--progress jsonl`` is added).
        python: the interpreter that has the engine's requirements.
        on_event: called with each JSON event (start, log, progress, done, error);
            stdout lines that are not JSON come as ``log`` events.
        on_stderr: called with each line the engine writes on stderr.
        is_cancelled: polled every ``poll_s`` seconds; True stops the engine.
        cleanup: output paths to remove (with their sidecars and this run's temporaries)
            when the run fails or is cancelled; what existed before the run is kept.
        stop_grace_s: seconds the engine gets to roll back after an interrupt.
        root: folder holding the ``engine`` package (default: :func:`engine_root`).
        poll_s: seconds between cancel checks.
        partial_codes: exit statuses that mean "finished, some parts failed" (``sheets``
            exits 3 when some sheets failed but the merged layer was written): the outputs
            are kept and the run is returned with that ``returncode``.

    Raises:
        EngineCancelled: ``is_cancelled`` became True (outputs removed).
        EngineError: the engine exited non-zero (message = its one-line error).
    """
    argv = [str(python), "-m", "engine", command, *[str(a) for a in args], "--progress", "jsonl"]
    guard = OutputGuard(list(cleanup))
    proc = _spawn(argv, python, Path(root or engine_root()))
    guard.pid = proc.pid
    report = _Report(on_event, on_stderr)
    lines: "queue.Queue[tuple[str, Optional[str]]]" = queue.Queue()
    readers = [threading.Thread(target=_reader, args=(stream, tag, lines), daemon=True)
               for stream, tag in ((proc.stdout, "out"), (proc.stderr, "err"))]
    for t in readers:
        t.start()
    try:
        cancelled = _pump(proc, lines, report, is_cancelled, stop_grace_s, poll_s)
        rc = proc.wait()
    except BaseException:
        if proc.poll() is None:
            _stop(proc, stop_grace_s)
        guard.clean()
        raise
    finally:
        for t in readers:
            t.join(timeout=1.0)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    if cancelled or rc == EXIT_CANCELLED:
        guard.clean()
        raise EngineCancelled("cancelled; no output was written")
    if rc != 0 and rc not in partial_codes:
        guard.clean()
        raise EngineError(_message_from(report.error_message, report.stderr_tail, rc), rc, report.stderr_tail,
                          report.error_options if report.error_message else None)
    return EngineRun(done=report.done, start=report.start, extra=report.extra, returncode=rc)


def _spawn(argv: list[str], python: str, root: Path) -> subprocess.Popen:
    """Start the engine with piped stdout/stderr in ``root`` (its own process group on Windows)."""
    kwargs: dict = {}
    if os.name == "nt":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)  # type: ignore[attr-defined]
    try:
        # bandit B603: list argv, no shell; python is the configured engine interpreter
        return subprocess.Popen(  # nosec B603
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env=engine_env(root=root),
            cwd=str(root),  # `-m engine` looks in the working folder first
            **kwargs,
        )
    except OSError as exc:
        raise EngineError(f"{python}: cannot start the engine's Python ({exc.strerror or exc})") from exc


class _Report:
    """What the engine said: the start and done events, non-event JSON, its error and the
    tail of stderr; each line is also passed on to ``on_event`` / ``on_stderr``."""

    def __init__(self, on_event: Optional[EventHandler], on_stderr: Optional[Callable[[str], None]]) -> None:
        self.on_event, self.on_stderr = on_event, on_stderr
        self.start: dict = {}
        self.done: dict = {}
        self.extra: list = []
        self.error_message: Optional[str] = None
        self.error_options: dict = {}
        self.stderr_tail: list[str] = []

    def stderr(self, line: str) -> None:
        self.stderr_tail = (self.stderr_tail + [line])[-STDERR_TAIL:]
        if self.on_stderr is not None:
            self.on_stderr(line)

    def stdout(self, line: str) -> None:
        event = _parse(line)
        if event is None:
            event = {"event": "log", "level": "info", "message": line}
        elif "event" not in event:
            self.extra.append(event)
            return
        kind = event.get("event")
        if kind == "start":
            self.start = event
        elif kind == "done":
            self.done = event
        elif kind == "error":
            self.error_message = str(event.get("message", "")).strip() or None
            options = event.get("options")
            self.error_options = {str(k): str(v) for k, v in options.items()} if isinstance(options, dict) else {}
        if self.on_event is not None:
            self.on_event(event)


def _pump(proc: subprocess.Popen, lines: "queue.Queue[tuple[str, Optional[str]]]", report: _Report,
          is_cancelled: Optional[Callable[[], bool]], stop_grace_s: float, poll_s: float) -> bool:
    """Feed ``report`` the readers' lines (``("out"|"err", line)``, None when a stream ends)
    until both streams end, stopping the engine when ``is_cancelled`` turns True; returns
    whether it did."""
    open_streams, cancelled = 2, False
    while open_streams:
        if not cancelled and is_cancelled is not None and is_cancelled():
            cancelled = True
            _stop(proc, stop_grace_s)
        try:
            tag, line = lines.get(timeout=poll_s)
        except queue.Empty:
            continue
        if line is None:
            open_streams -= 1
        elif tag == "err":
            report.stderr(line)
        else:
            report.stdout(line)
    return cancelled


def _parse(line: str) -> Optional[dict]:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None
