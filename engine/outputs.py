"""Safe outputs for every command that writes: inputs are never replaced, temporaries are
private, results appear in one step, and a failure leaves nothing behind.

- :func:`check_output` / :func:`check_folder_output`: before any work, refuse an output
  that is (or, for a folder, contains) an input, compared by resolved real path and by
  file identity (device + inode), a shapefile's sidecar files included; refuse names
  with control characters.
- :class:`Staging`: a private folder beside the outputs, created exclusively with an
  unpredictable name (``.hrmnet-tmp-HOST-PID-RANDOM``, mode 0700) and locked (``flock``)
  for its lifetime. Everything is written inside it under neutral names; GDAL is given
  ``/proc/self/fd/N/NAME`` where that exists, so it writes through the held folder and
  never sees the user's characters nor follows a symlink planted by someone else.
- :func:`commit`: rename staged files onto their targets relative to held folder
  descriptors (a rename never follows a symlink at the target), under a lock on the
  output folder; without ``overwrite`` a target that appeared meanwhile is refused.
- :class:`OutputSet`: several outputs of one command staged, then committed together
  (all of them or none).
- :func:`remove_stale`: staging folders of runs that died (kill -9) are removed by the
  next run writing to the same folder: only our own pattern, only our own user's, only
  when no live process holds them.
- :func:`write_error`: an I/O failure becomes one line naming the user's output, e.g.
  ``"out/mask.tif: no space left on device"``.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

from .errors import Cancelled, UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; stale folders are then kept
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "PREFIX",
    "quiet_gdal",
    "Inputs",
    "OutputSet",
    "Staging",
    "check_name",
    "check_output",
    "check_folder_output",
    "commit",
    "dataset_files",
    "discard",
    "hold_folder",
    "release_folder",
    "display",
    "expect_run",
    "disk_full",
    "real_path",
    "remove_stale",
    "same_file",
    "staged_file",
    "staged_folder",
    "staged_moves",
    "temporary",
    "release_run",
    "write_error",
]

PathLike = Union[str, os.PathLike]

PREFIX = ".hrmnet-tmp-"
# A short tag of this host in staging-folder names (not security: usedforsecurity=False).
HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace"), usedforsecurity=False).hexdigest()[:6]
_OURS = re.compile(r"^\.hrmnet-tmp-([0-9a-f]{6})-(\d+)-[a-z0-9_]+$")
_PROC_FD = os.path.isdir(f"/proc/{os.getpid()}/fd")
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
_DIR_FDS = os.name != "nt"  # Windows cannot open a folder as a descriptor
_RENAME_AT = _DIR_FDS and os.rename in os.supports_dir_fd
_LOCK_WAIT_S = 60.0


# ----------------------------------------------------------------------------- paths


def real_path(path: PathLike) -> Path:
    """``path`` with ``~``, ``..`` and every symlink resolved (the file that would be touched)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def dataset_files(path: PathLike) -> list[Path]:
    """The files ``path`` consists of: a vector dataset's sidecars too (``x.shp`` ->
    ``x.shp x.shx x.dbf x.prj x.cpg``), otherwise ``[path]``."""
    from .vector.formats import SUPPORTED_VECTOR_EXTENSIONS, vector_sidecars

    p = Path(path)
    return vector_sidecars(p) if p.suffix.lower() in SUPPORTED_VECTOR_EXTENSIONS else [p]


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` are one file: same real path, or (both existing) the
    same device and inode (hard links, bind mounts, case-insensitive file systems)."""
    if real_path(a) == real_path(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_name(path: PathLike) -> None:
    """Refuse an output path with control characters (newline, tab, ...): GDAL and the
    vector drivers cut or drop them where they see the name, and they garble logs and
    the plugin's protocol lines; refused before any work."""
    text = os.fspath(path)
    bad = sorted({c for c in text if ord(c) < 32 or ord(c) == 127})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise UserError(f"{text!r}: output names with control characters ({shown}) are not supported")


def _both_cases(path: PathLike) -> list[Path]:
    """:func:`dataset_files` of ``path``, with sidecars in either letter case (a
    shapefile ``x.SHP`` may come with ``x.dbf``)."""
    p = Path(path)
    files = dataset_files(p)
    return files + dataset_files(p.with_suffix(p.suffix.swapcase()))[1:] if len(files) > 1 else files


class Inputs:
    """The identities of a command's input files (their sidecars too): real paths and,
    for existing files, (device, inode). Build it once to check many outputs."""

    def __init__(self, paths: Iterable[Optional[PathLike]]) -> None:
        self.real: dict[Path, Path] = {}
        self.ids: dict[tuple[int, int], Path] = {}
        for p in paths:
            for f in _both_cases(p) if p else []:
                self.real.setdefault(real_path(f), f)
                with contextlib.suppress(OSError):
                    st = os.stat(f)
                    self.ids.setdefault((st.st_dev, st.st_ino), f)

    def find(self, path: PathLike) -> Optional[Path]:
        """The input ``path`` is (by real path or file identity), or None."""
        hit = self.real.get(real_path(path))
        if hit is None:
            with contextlib.suppress(OSError):
                st = os.stat(path)
                hit = self.ids.get((st.st_dev, st.st_ino))
        return hit


def check_output(path: PathLike, role: str, inputs: Union[Inputs, Iterable[Optional[PathLike]]]) -> None:
    """Refuse ``path`` (and its sidecars) when it is one of ``inputs`` (and theirs).

    Raises:
        UserError: ``"OUT: the ROLE output would replace the input IN"``.
    """
    check_name(path)
    ins = inputs if isinstance(inputs, Inputs) else Inputs(inputs)
    for out_file in dataset_files(path):
        hit = ins.find(out_file)
        if hit is not None:
            raise UserError(f"{path}: the {role} output would replace the input {hit}")


def check_folder_output(out: PathLike, inputs: Iterable[PathLike]) -> Path:
    """Refuse an output folder that is, or contains, one of ``inputs``; returns its real path."""
    check_name(out)
    real_out = real_path(out)
    for i in inputs:
        if not i:
            continue
        real_in = real_path(i)
        if real_in == real_out or real_out in real_in.parents or same_file(out, i):
            raise UserError(f"{out}: the output folder would replace the input {i}")
    return real_out


def _under_proc(path: Path) -> bool:
    return str(path).startswith("/proc/")


# ----------------------------------------------------------------------------- locks


def _open_dir(path: PathLike) -> int:
    """A descriptor of the folder ``path`` (never through a final symlink); -1 on Windows."""
    return os.open(path, _DIR_FLAGS) if _DIR_FDS else -1


def _close(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


def _flock(fd: int, blocking: bool) -> Optional[bool]:
    """Exclusive flock on ``fd``: True taken, False held by another, None unsupported."""
    if fcntl is None or fd < 0:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None


_HELD: dict[str, int] = {}  # real folder -> fd whose flock this process holds for a whole run


def hold_folder(folder: PathLike, shown: Optional[PathLike] = None) -> None:
    """Lock ``folder`` for this process until :func:`release_folder` (a run folder that
    one run fills over time, such as ``train --out``): another run is refused."""
    key = str(real_path(folder))
    fd = _open_dir(key)
    if _flock(fd, blocking=False) is False:
        _close(fd)
        raise UserError(f"{shown or folder}: another run is writing to this folder")
    _HELD[key] = fd


def release_folder(folder: PathLike) -> None:
    """Release what :func:`hold_folder` took (nothing if it was not held)."""
    fd = _HELD.pop(str(real_path(folder)), None)
    if fd is not None:
        _close(fd)


@contextlib.contextmanager
def _folder_lock(fd: int, shown: PathLike) -> Iterator[None]:
    """Hold an exclusive lock on an output folder (commit-time; waits up to a minute).
    A folder this process holds (:func:`hold_folder`) is already locked."""
    if str(shown) in _HELD:
        yield
        return
    deadline = time.monotonic() + _LOCK_WAIT_S
    while _flock(fd, blocking=False) is False:
        if time.monotonic() > deadline:
            raise UserError(f"{shown}: another run keeps this folder locked; try again when it finished")
        time.sleep(0.05)
    try:
        yield
    finally:
        if fcntl is not None and fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":
        return True  # os.kill would terminate it; never guess on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _is_stale(folder: Path, name: str) -> bool:
    """A staging folder of ours whose run is over (see :func:`remove_stale`)."""
    m = _OURS.match(name)
    if not m:
        return False
    host, pid = m.group(1), int(m.group(2))
    if host == HOST and (pid == os.getpid() or _pid_alive(pid)):
        return False
    try:
        st = os.lstat(folder / name)
        if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            return False
        fd = _open_dir(folder / name)
    except OSError:
        return False
    try:
        free = _flock(fd, blocking=False)
    finally:
        _close(fd)  # also releases the probe lock
    return free if free is not None else host == HOST


def remove_stale(folder: PathLike) -> list[Path]:
    """Remove staging folders left in ``folder`` by runs that died; returns them.

    Only names of our pattern, only folders owned by this user, only when the owner's
    lock is free (and, on this host, its process is gone).
    """
    folder = Path(folder)
    removed = []
    try:
        names = [e.name for e in os.scandir(folder) if e.name.startswith(PREFIX)]
    except OSError:
        return removed
    for name in names:
        if _is_stale(folder, name):
            shutil.rmtree(folder / name, ignore_errors=True)
            removed.append(folder / name)
    return removed


# ----------------------------------------------------------------------------- staging

_LIVE: dict[str, "Staging"] = {}  # staging dir (real and /proc form) -> Staging
_LIVE_LOCK = threading.Lock()


class Staging:
    """A private, locked folder beside the outputs in ``folder`` (see module docstring).

    Args:
        folder: the outputs' folder (its real path is used).
    """

    def __init__(self, folder: PathLike) -> None:
        self.folder = real_path(folder)
        self.folder_fd = self.fd = -1
        self.closed = False
        made = None
        try:
            self.folder_fd = _open_dir(self.folder)
            self.dir = made = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{HOST}-{os.getpid()}-", dir=self.folder))
            self.fd = _open_dir(self.dir)  # our new 0700 folder: nobody else can have swapped it yet
        except OSError as exc:
            _close(self.folder_fd)
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
            raise write_error(self.folder / "x", exc, shown=os.fspath(folder)) from None
        _flock(self.fd, blocking=False)
        self.base = Path(f"/proc/{os.getpid()}/fd/{self.fd}") if _PROC_FD and self.fd >= 0 else self.dir
        self.shown: dict[str, str] = {}  # staged name -> the user's output
        with _LIVE_LOCK:
            _LIVE[str(self.dir)] = _LIVE[str(self.base)] = self

    def path(self, name: str, shown: Optional[PathLike] = None) -> Path:
        """Where to write the staged file ``name`` (give it to GDAL); ``shown`` is the
        user's output it becomes, named in messages instead of the staged file."""
        if shown is not None:
            self.shown[name] = os.fspath(shown)
        return self.base / name

    def close(self, delete: bool = True) -> None:
        """Delete the folder and everything still in it (unless ``delete`` is False:
        it became an output); release the lock."""
        with _LIVE_LOCK:
            _LIVE.pop(str(self.dir), None)
            _LIVE.pop(str(self.base), None)
        if not self.closed:
            if delete:
                shutil.rmtree(self.dir, ignore_errors=True)
            _close(self.fd)
            _close(self.folder_fd)
            self.closed = True

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def staging_of(path: PathLike) -> Optional[Staging]:
    """The live :class:`Staging` ``path`` lies in (directly), or None."""
    with _LIVE_LOCK:
        return _LIVE.get(os.fspath(Path(path).parent))


def display(path: PathLike) -> str:
    """The name to show for ``path``: the user's output for a staged file, else ``path``."""
    s = staging_of(path)
    if s is None:
        return os.fspath(path)
    stem = Path(path).name.lstrip(".").split(".")[0]
    for staged, shown in s.shown.items():
        if staged.split(".")[0] == stem:
            return shown
    return os.fspath(Path(s.folder) / "(temporary)")


# ----------------------------------------------------------------------------- commit


def _exists_at(s: Staging, name: str) -> bool:
    """Whether ``name`` exists in ``s.folder`` (a dangling symlink counts)."""
    try:
        os.lstat(name, dir_fd=s.folder_fd) if _RENAME_AT else os.lstat(s.folder / name)
    except FileNotFoundError:
        return False
    return True


def _move(s: Staging, name: str, target: Path) -> None:
    """Rename staged ``name`` onto ``target`` (in ``s.folder``) without following links;
    a missing staged file removes ``target`` (a stale sidecar)."""
    try:
        if _RENAME_AT:
            try:
                os.rename(name, target.name, src_dir_fd=s.fd, dst_dir_fd=s.folder_fd)
            except FileNotFoundError:
                if os.path.lexists(s.dir / name):
                    raise
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target.name, dir_fd=s.folder_fd)
        elif (s.dir / name).exists():
            os.replace(s.dir / name, s.folder / target.name)
        else:
            (s.folder / target.name).unlink(missing_ok=True)
    except OSError as exc:
        raise write_error(target, exc) from None


def commit(moves: Sequence[tuple[Staging, str, Path, PathLike]], overwrite: bool,
           replaceable: Iterable[PathLike] = ()) -> None:
    """Rename staged files onto their targets, in the order given.

    Args:
        moves: (staging, staged name, target file, the user's output it belongs to).
            The target must lie in ``staging.folder``. A staged name that does not exist
            removes the target file (e.g. an old shapefile's ``.cpg``).
        overwrite: replace existing targets; otherwise a target that exists now (another
            run wrote it since the start) is refused and nothing is moved.
        replaceable: the user's outputs (as in ``moves``) that may be replaced even
            without ``overwrite``.
    """
    folders = {str(m[0].folder): m[0] for m in moves}  # one lock per folder
    free = {os.fspath(p) for p in replaceable}
    with contextlib.ExitStack() as locks:
        for key in sorted(folders):
            locks.enter_context(_folder_lock(folders[key].folder_fd, key))
        if not overwrite:
            for s, _name, target, shown in moves:
                if os.fspath(shown) not in free and _exists_at(s, target.name):
                    raise UserError(f"{shown}: appeared while this run was working (another run?); "
                                    "left as it is (use --overwrite to replace it)")
        for s, name, target, _shown in moves:
            _move(s, name, target)


def _target_in(s: Staging, target: Path) -> Path:
    """``target`` as a name in ``s.folder`` (its real folder)."""
    return s.folder / Path(target).name


@contextlib.contextmanager
def staged_file(target: PathLike, overwrite: bool, inputs: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Write one file (or vector dataset) safely: yields the path to write to.

    The target is checked against ``inputs``; on success the file (and its sidecars) is
    renamed onto ``target``; on any error nothing is left (disk full -> one line).
    """
    target = Path(target)
    check_output(target, "new", inputs)
    remove_stale(real_path(Path(target).parent))
    with Staging(real_path(Path(target).parent)) as s:
        staged = "out" + target.suffix
        with _translated(target):
            yield s.path(staged, shown=target)
        commit(staged_moves(s.path(staged), target), overwrite)


class OutputSet:
    """Several outputs of one command, committed together: all of them or none.

    Each output is written staged (:meth:`writing`; one :class:`Staging` per folder) and
    nothing appears until :meth:`commit` renames them all in one locked step; leaving the
    ``with`` block without committing (an error, a cancel, a full disk) removes everything
    staged. Use::

        with OutputSet(inputs) as outs:
            with outs.writing(target, overwrite) as path:
                write(path)
            ...
            outs.commit()
    """

    def __init__(self, inputs: Iterable[PathLike] = ()) -> None:
        self.inputs = inputs if isinstance(inputs, Inputs) else Inputs(inputs)
        self._stagings: dict[str, Staging] = {}
        self._moves: list[tuple[Staging, str, Path, PathLike]] = []
        self._replaceable: list[Path] = []

    def _staging(self, target: Path) -> Staging:
        folder = real_path(target.parent)
        if str(folder) not in self._stagings:
            remove_stale(folder)
            self._stagings[str(folder)] = Staging(folder)
        return self._stagings[str(folder)]

    @contextlib.contextmanager
    def writing(self, target: PathLike, overwrite: bool) -> Iterator[Path]:
        """Yield the staged path to write ``target`` (a file or vector dataset) to; an I/O
        failure in the block is one line naming ``target``. ``overwrite``: it may replace an
        existing file (checked again at commit time)."""
        target = Path(target)
        check_output(target, "new", self.inputs)
        s = self._staging(target)
        staged = s.path(f"out{len(self._moves)}{target.suffix}", shown=target)
        with _translated(target):
            yield staged
        self._moves += staged_moves(staged, target)
        if overwrite:
            self._replaceable.append(target)

    def commit(self) -> None:
        """Rename every output written into place (in the order written)."""
        commit(self._moves, False, self._replaceable)
        self._moves = []

    def close(self) -> None:
        """Delete the staging folders and whatever is left in them (nothing, after a commit)."""
        for s in self._stagings.values():
            s.close()
        self._stagings = {}

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def _translated(target: PathLike) -> Iterator[None]:
    """Turn an I/O failure (disk full, ...) into one line naming ``target``."""
    try:
        yield
    except (UserError, Cancelled):
        raise
    except Exception as exc:
        err = write_error(target, exc, strict=True)
        if err is None:
            raise
        raise err from None


# ----------------------------------------------------------------------------- folders


@contextlib.contextmanager
def staged_folder(out: PathLike, overwrite: bool, inputs: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Build a whole folder safely: yields an empty private folder beside ``out``,
    renamed to ``out`` when the block succeeds (an existing ``out`` is replaced only
    when empty or with ``overwrite``); on any error it is removed."""
    real_out = check_folder_output(out, inputs)
    if not real_out.parent.is_dir():
        raise UserError(f"{real_out.parent}: output's parent folder does not exist")
    remove_stale(real_out.parent)
    with Staging(real_out.parent) as s:
        with _translated(out):
            yield s.dir
        _swap_in(s, real_out, out, overwrite)


def _swap_in(s: Staging, real_out: Path, shown: PathLike, overwrite: bool) -> None:
    """Rename ``s.dir`` to ``real_out``; an existing folder goes to a private trash folder
    first (put back if the rename fails), then is deleted."""
    name = real_out.name
    os.chmod(s.dir, 0o777 & ~_umask())  # mkdtemp's 0700 was for while it was private
    with _folder_lock(s.folder_fd, s.folder):
        trash = None
        if os.path.lexists(real_out):
            if not overwrite and (not real_out.is_dir() or real_out.is_symlink() or any(real_out.iterdir())):
                raise UserError(f"{shown}: appeared while this run was working (another run?); "
                                "left as it is (use --overwrite to replace it)")
            trash = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{HOST}-{os.getpid()}-", dir=s.folder))
            if not _DIR_FDS:
                trash.rmdir()  # Windows renames a folder only onto a free name
            os.replace(real_out, trash)
        try:
            if _RENAME_AT:
                os.rename(s.dir.name, name, src_dir_fd=s.folder_fd, dst_dir_fd=s.folder_fd)
            else:
                os.rename(s.dir, s.folder / name)
        except OSError as exc:
            if trash is not None:
                os.replace(trash, real_out)
            raise write_error(shown, exc) from None
    s.close(delete=False)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- one run's temporaries

_RUN = threading.local()  # this thread's stagings, one per output folder, until released


def temporary(target: PathLike, tag: str = "tmp") -> Path:
    """A staged path for ``target`` (named ``TAG.EXT`` in this thread's private staging
    folder beside it), to give to GDAL; :func:`commit_run` or :func:`release_run` end it.

    For pipelines that create their temporaries one by one (``detect``); new code can
    hold a :class:`Staging` itself.
    """
    target = Path(target)
    stagings: dict = getattr(_RUN, "stagings", None) or {}
    _RUN.stagings = stagings
    folder = str(real_path(Path(target).parent))
    if folder not in stagings:
        try:
            stagings[folder] = Staging(folder)
        except BaseException:
            release_run()
            raise
    return stagings[folder].path(f"{tag}{target.suffix}", shown=_user_output(target))


def expect_run(targets: Iterable[PathLike]) -> None:
    """Name this thread's coming run's outputs: a temporary made for a helper file (say
    the mask a vector is made from) is then shown as the user's output it serves."""
    _RUN.targets = [Path(t) for t in targets]


def _user_output(target: Path) -> Path:
    """``target`` if the user named it, else the user's output with its folder and stem."""
    targets = getattr(_RUN, "targets", None) or []
    if not targets or target in targets:
        return target
    same = [t for t in targets if t.with_suffix("") == target.with_suffix("")]
    return (same or targets)[0]


def discard(path: PathLike) -> None:
    """Delete the file or vector dataset ``path``; a staged path only while its staging
    folder is live (after that its ``/proc/PID/fd/N`` prefix may name another folder)."""
    if _under_proc(Path(path)) and staging_of(path) is None:
        return
    for f in dataset_files(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f)


def release_run() -> None:
    """Delete this thread's staging folders and what is left in them."""
    for s in (getattr(_RUN, "stagings", None) or {}).values():
        s.close()
    _RUN.stagings, _RUN.targets = {}, []


def staged_moves(staged: PathLike, target: PathLike) -> list[tuple[Staging, str, Path, PathLike]]:
    """:func:`commit` moves of the staged file or vector dataset ``staged`` onto ``target``
    (the main file last)."""
    s = staging_of(staged)
    if s is None:
        raise ValueError(f"{staged}: not a staged file")
    pairs = list(zip(dataset_files(staged), dataset_files(target)))
    return [(s, a.name, _target_in(s, b), target) for a, b in pairs[1:] + pairs[:1]]


# ----------------------------------------------------------------------------- errors


def quiet_gdal() -> None:
    """Keep GDAL's own messages off stderr (the engine reports a failure itself, in one
    line): GDAL's default handler writes to ``CPL_LOG`` (unless the user set it or
    ``CPL_DEBUG``) and rasterio's and pyogrio's log records get a handler that drops them."""
    import logging

    if not os.environ.get("CPL_DEBUG"):  # someone debugging GDAL wants its messages
        os.environ.setdefault("CPL_LOG", os.devnull)
    for name in ("rasterio", "pyogrio"):
        logging.getLogger(name).addHandler(logging.NullHandler())


_FULL_TEXT = ("no space left", "disk full", "free disk space", "not enough space", "quota exceeded")


def disk_full(exc: BaseException, where: Optional[PathLike] = None) -> bool:
    """True when ``exc`` (an OSError, a GDAL error, ...) means the disk is full: errno
    ENOSPC/EDQUOT, GDAL's wording, or (when ``where`` is given) under 64 KiB free there."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return True
    text = str(exc).lower()
    if any(t in text for t in _FULL_TEXT):
        return True
    if where is None:
        return False
    try:
        st = os.statvfs(os.fspath(where))
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def write_error(target: PathLike, exc: BaseException, strict: bool = False,
                shown: Optional[str] = None) -> Optional[UserError]:
    """The one-line error for a failed write of ``target`` (a staged path is shown as
    the user's output). ``strict``: None unless the disk is full (the failure may be
    about something else than the output, e.g. reading an input: it keeps its own words)."""
    shown = shown or display(target)
    folder = Path(target).parent
    if disk_full(exc, folder if folder.exists() else None):
        return UserError(f"{shown}: no space left on device")
    if strict:
        return None
    detail = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return UserError(f"{shown}: cannot write ({detail})")
