"""The Processing algorithms: each maps its parameters to one engine subcommand."""
from __future__ import annotations

__all__ = ["all_algorithms"]


def all_algorithms() -> list:
    """New instances of the four algorithms (imports QGIS Processing classes lazily)."""
    from .detect import DetectChanges
    from .evaluate import Evaluate
    from .prepare import PrepareDataset
    from .train import Train

    return [DetectChanges(), Train(), Evaluate(), PrepareDataset()]
