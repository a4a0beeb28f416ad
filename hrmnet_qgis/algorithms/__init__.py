"""The Processing algorithms: each maps its parameters to one engine subcommand."""
from __future__ import annotations

__all__ = ["all_algorithms"]


def all_algorithms() -> list:
    """New instances of the algorithms (imports QGIS Processing classes lazily)."""
    from .detect import DetectChanges
    from .evaluate import Evaluate
    from .prepare import PrepareDataset
    from .sheets import DetectChangesSheets
    from .train import Train

    return [DetectChanges(), DetectChangesSheets(), Train(), Evaluate(), PrepareDataset()]
