"""One progress bar across the engine's stages, and log lines with done/total and time left.

Plain Python (no QGIS): :class:`StageProgress` turns the engine's ``progress`` events
(``stage``, ``done``, ``total``) into one percentage for the whole run and, now and then,
a line such as ``detect: 120/480 tiles (25 %), about 2 min left``.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

__all__ = ["STAGES", "UNITS", "StageProgress", "format_duration"]

#: Share of the whole run of each stage, per engine command (stages in the order they run).
STAGES: dict[str, dict[str, float]] = {
    "detect": {"detect": 0.85, "vectorize": 0.15},
    "train": {"train": 1.0},
    "evaluate": {"evaluate": 1.0},
    "prepare": {"tiles": 1.0},
    # sheets counts "sheets" and "tiles" side by side: the bar follows the tiles (finer, and
    # weighted by sheet size); the sheets are logged with their time left
    "sheets": {"tiles": 1.0},
}

#: What a stage counts.
UNITS = {"detect": "tiles", "vectorize": "strips", "train": "steps", "evaluate": "tiles", "tiles": "tiles",
         "scenes": "scenes", "download": "bytes", "sheets": "sheets"}


def format_duration(seconds: float) -> str:
    """``45 s``, ``3 min``, ``1 h 05 min`` (rounded up to what is worth saying)."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class StageProgress:
    """Overall percentage and log lines for one engine run.

    Args:
        stages: ``stage -> share`` of the run (see :data:`STAGES`); a stage not listed (e.g.
            a validation pass inside training) is logged but does not move the bar. Empty:
            each stage fills the bar on its own.
        clock: seconds (monotonic), replaceable in tests.
        log_every: a line at most every this many percent of a stage (and at its end).
    """

    def __init__(self, stages: Optional[dict[str, float]] = None, clock: Callable[[], float] = time.monotonic,
                 log_every: float = 10.0) -> None:
        self.stages = dict(stages or {})
        self.clock = clock
        self.log_every = log_every
        self.percent = 0.0
        # Per stage (training alternates "train" and validation "evaluate"): start time, and
        # the stage percentage last logged.
        self._started: dict[str, float] = {}
        self._logged_at: dict[str, float] = {}

    def update(self, stage: str, done: int, total: int) -> tuple[float, Optional[str]]:
        """The overall percentage (never decreasing) and a log line, or None when not due."""
        total = max(int(total or 0), 1)
        done = min(max(int(done or 0), 0), total)
        if stage not in self._started or (done == 0 and self._logged_at.get(stage, -1.0) >= 100.0):
            self._started[stage], self._logged_at[stage] = self.clock(), -1.0  # new, or started again
        fraction = done / total
        if not self.stages:
            self.percent = 100.0 * fraction
        elif stage in self.stages:
            names = list(self.stages)
            base = sum(self.stages[s] for s in names[: names.index(stage)])
            scale = sum(self.stages.values()) or 1.0
            self.percent = max(self.percent, 100.0 * (base + self.stages[stage] * fraction) / scale)
        return self.percent, self._line(stage, done, total)

    def _line(self, stage: str, done: int, total: int) -> Optional[str]:
        stage_percent = 100.0 * done / total
        last = self._logged_at[stage]
        due = last < 0 or (done == total and last < 100.0) or stage_percent >= last + self.log_every
        if not due:
            return None
        self._logged_at[stage] = stage_percent
        unit = UNITS.get(stage, "")
        text = f"{stage or 'progress'}: {done}/{total}{' ' + unit if unit else ''} ({stage_percent:.0f} %)"
        elapsed = self.clock() - self._started[stage]
        if 0 < done < total and elapsed > 0:
            text += f", about {format_duration(elapsed / done * (total - done))} left"
        elif done == total:
            text += f", {format_duration(elapsed)}"
        return text
