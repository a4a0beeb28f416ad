"""Errors that reach the user as one line (no traceback)."""
from __future__ import annotations

__all__ = ["UserError", "Cancelled", "first_line"]


class UserError(Exception):
    """A mistake of the user's (bad file, bad option): printed as one line, exit code 2.

    The message should name the file or option and the problem, e.g.
    ``"before.tif: not a raster GDAL can read"``.
    """


class Cancelled(Exception):
    """The caller asked to stop (cancel check returned True); outputs are rolled back."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of ``exc``'s message (at most ``limit`` characters), or its type's
    name when it has none: the "(why)" of a one-line :class:`UserError`."""
    return str(exc).strip().splitlines()[0][:limit] if str(exc).strip() else type(exc).__name__
