"""Folders a test cannot write to and disks that are full, for the tests of one-line errors:
read-only bind mounts and small tmpfs mounts as root (who writes anywhere), chmod otherwise;
a test skips when neither is possible here."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

__all__ = ["read_only", "small_disk", "fill"]


def _umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], check=False)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` (and every folder below it) read-only for this process during the block."""
    if os.geteuid() != 0:
        folders = [folder, *(p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink())]
        for p in folders:
            p.chmod(0o555)
        try:
            yield folder
        finally:
            for p in folders:
                p.chmod(0o755)
        return
    if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode:
        pytest.skip("no read-only folder available to root here")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True).returncode:
            pytest.skip("no read-only folder available to root here")
        yield folder
    finally:
        _umount(folder)


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's notation: ``64k``) on ``folder`` (made) during the block; root only."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        _umount(folder)


def fill(disk: Path, free: int = 0) -> Path:
    """Fill ``disk`` until at most ``free`` bytes are left (again after the disk got used: the
    filler file grows); returns ``disk``."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > free:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return disk
