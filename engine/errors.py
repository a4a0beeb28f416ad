"""Errors that reach the user as one line (no traceback)."""
from __future__ import annotations

__all__ = ["UserError", "Cancelled"]


class UserError(Exception):
    """A mistake of the user's (bad file, bad option): printed as one line, exit code 2.

    The message should name the file or option and the problem, e.g.
    ``"before.tif: not a raster GDAL can read"``.
    """


class Cancelled(Exception):
    """The caller asked to stop (cancel check returned True); outputs are rolled back."""
