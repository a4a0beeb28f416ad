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
}

#: What a stage counts.
UNITS = {"detect": "tiles", "vectorize": "strips", "train": "steps", "evaluate": "tiles", "tiles": "tiles",
         "scenes": "scenes", "download": "bytes"}


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
        self._stage: Optional[str] = None
        self._started = 0.0
        self._logged_at = -1.0

    def update(self, stage: str, done: int, total: int) -> tuple[float, Optional[str]]:
        """The overall percentage (never decreasing) and a log line, or None when not due."""
        total = max(int(total or 0), 1)
        done = min(max(int(done or 0), 0), total)
        if stage != self._stage:
            self._stage, self._started, self._logged_at = stage, self.clock(), -1.0
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
        due = self._logged_at < 0 or done == total or stage_percent >= self._logged_at + self.log_every
        if not due:
            return None
        self._logged_at = stage_percent
        unit = UNITS.get(stage, "")
        text = f"{stage or 'progress'}: {done}/{total}{' ' + unit if unit else ''} ({stage_percent:.0f} %)"
        elapsed = self.clock() - self._started
        if 0 < done < total and elapsed > 0:
            text += f", about {format_duration(elapsed / done * (total - done))} left"
        elif done == total:
            text += f", {format_duration(elapsed)}"
        return text
