"""Dataset preparation: map sheets (before, after, labels) -> the authors' tile layout.

Filled in below; :func:`staged_output` is shared with ``synth``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator, Union

from ..errors import UserError

__all__ = ["staged_output", "check_output_dir"]


def check_output_dir(out: Union[str, Path], overwrite: bool) -> Path:
    """Refuse an output folder that exists and is not empty (unless ``overwrite``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: exists and is not empty (use --overwrite to replace it)")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: output's parent folder does not exist")
    return out


@contextlib.contextmanager
def staged_output(out: Union[str, Path], overwrite: bool = False) -> Iterator[Path]:
    """Write a folder under a temporary name, then move it to ``out`` in one step.

    Yields the staging folder (beside ``out``). On success an existing ``out`` is
    replaced (only allowed with ``overwrite`` or when it is empty); on any error the
    staging folder is removed, so no half-written dataset is left behind.
    """
    out = check_output_dir(out, overwrite)
    stage = out.parent / f".{out.name}.part-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(stage, out)
