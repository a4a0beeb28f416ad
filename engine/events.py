"""One progress/cancel protocol for the CLI bar, JSON lines and the QGIS plugin.

A pipeline gets an :class:`Events` and calls ``start``, ``progress``, ``log``,
``done``; it calls ``check_cancel()`` between units of work. The sink decides how the
events are shown: a tqdm bar, one JSON object a line on stdout (the protocol the
plugin reads), a Python callback, or nothing.

JSON lines protocol (``--progress jsonl``), one object a line on stdout::

    {"event": "start", ...sizes, tiles, device, precision...}
    {"event": "log", "level": "info"|"warning", "message": "..."}
    {"event": "progress", "done": k, "total": n, "stage": "..."}   (+ "unit": "B" for a download)
    (stages may interleave: ``sheets`` emits "sheets" and "tiles", each counting up on its own)
    {"event": "done", "outputs": {...}, "stats": {...}}
    {"event": "error", "message": "...", "options": {"--id-field": "id_field"}}
    (``options``, when the message names command-line options: each with its argparse dest)
"""
from __future__ import annotations

import json
import sys
from typing import Any, Callable, Optional, Sequence, TextIO

from .errors import Cancelled

__all__ = ["Events", "make_events"]

Sink = Callable[[dict], None]


class Events:
    """Emits progress events to a sink and answers cancel checks.

    Args:
        sink: called with each event dict (``{"event": ..., ...}``); None drops them.
        is_cancelled: returns True when the caller wants the work to stop.
    """

    def __init__(self, sink: Optional[Sink] = None, is_cancelled: Optional[Callable[[], bool]] = None) -> None:
        self._sink = sink
        self._is_cancelled = is_cancelled

    def emit(self, event: str, **fields: Any) -> None:
        if self._sink is not None:
            self._sink({"event": event, **fields})

    def start(self, **info: Any) -> None:
        self.emit("start", **info)

    def progress(self, done: int, total: int, stage: str = "") -> None:
        self.emit("progress", done=int(done), total=int(total), stage=stage)

    def log(self, message: str, level: str = "info") -> None:
        self.emit("log", level=level, message=message)

    def warn(self, message: str) -> None:
        self.log(message, level="warning")

    def done(self, outputs: dict, stats: dict) -> None:
        self.emit("done", outputs=outputs, stats=stats)

    def error(self, message: str) -> None:
        self.emit("error", message=message)

    def tapped(self, tap: Sink) -> "Events":
        """A copy that also calls ``tap`` with each event (e.g. to keep the start event)."""

        def sink(event: dict) -> None:
            tap(event)
            if self._sink is not None:
                self._sink(event)

        return Events(sink, self._is_cancelled)

    def check_cancel(self) -> None:
        """Raise :class:`Cancelled` if the caller asked to stop."""
        if self._is_cancelled is not None and self._is_cancelled():
            raise Cancelled("cancelled")


class JsonlSink:
    """Writes each event as one JSON line and flushes (for the plugin)."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream

    def __call__(self, event: dict) -> None:
        self.stream.write(json.dumps(event, default=_jsonable) + "\n")
        self.stream.flush()


class BarSink:
    """A tqdm progress bar on stderr; log lines printed above it.

    Args:
        together: stages shown at the same time, one bar each in this order (the sheets
            command: ``("sheets", "tiles")``); any other stage's bar is replaced by the next
            stage's (or when its total changes).
    """

    def __init__(self, stream: TextIO = sys.stderr, together: Sequence[str] = ()) -> None:
        self.stream = stream
        self.bar = None
        self.together = tuple(together)
        self.bars: dict = {}  # stage of ``together`` -> its bar

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        kind = event["event"]
        if kind == "progress":
            bar = self._bar_for(event)
            bar.update(event["done"] - bar.n)
        elif kind == "log":
            prefix = "warning: " if event.get("level") == "warning" else ""
            (tqdm.write if (self.bar or self.bars) else print)(prefix + event["message"], file=self.stream)
        elif kind == "start":
            info = ", ".join(f"{k}={v}" for k, v in event.items() if k != "event" and not isinstance(v, (dict, list)))
            print(info, file=self.stream)
        elif kind in ("done", "error"):
            self._close()

    def _bar_for(self, event: dict):
        """The bar a progress event moves (a new one when its stage or total is new)."""
        stage = event.get("stage") or ""
        if stage in self.together:
            bar = self.bars.get(stage)
            if bar is None or bar.total != event["total"]:
                if bar is not None:
                    bar.close()
                bar = self.bars[stage] = self._new(event, self.together.index(stage), stage.rstrip("s") or "it")
            return bar
        if self.bar is None or self.bar.total != event["total"]:
            self._close()
            self.bar = self._new(event)
        return self.bar

    def _new(self, event: dict, position: Optional[int] = None, unit: str = "it"):
        from tqdm import tqdm

        unit = event.get("unit", unit)  # "B": a download, shown in kB/MB
        return tqdm(total=event["total"], desc=event.get("stage") or None, file=self.stream, position=position,
                    dynamic_ncols=True, unit=unit, unit_scale=unit == "B", unit_divisor=1024)

    def _close(self) -> None:
        for bar in reversed([self.bar, *self.bars.values()]):
            if bar is not None:
                bar.close()
        self.bar, self.bars = None, {}


class LogSink:
    """Plain log lines on stderr, no bar (``--progress none`` still shows warnings)."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream

    def __call__(self, event: dict) -> None:
        if event["event"] == "log" and event.get("level") == "warning":
            print("warning: " + event["message"], file=self.stream)


def _jsonable(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def make_events(mode: str, is_cancelled: Optional[Callable[[], bool]] = None, bars: Sequence[str] = ()) -> Events:
    """Events for a CLI ``--progress`` mode: ``bar``, ``jsonl`` or ``none``; ``bars``: stages
    shown as bars at the same time (see :class:`BarSink`)."""
    sinks = {"bar": lambda: BarSink(together=bars), "jsonl": JsonlSink, "none": LogSink}
    if mode not in sinks:
        raise ValueError(f"unknown progress mode {mode!r}")
    return Events(sinks[mode](), is_cancelled)
