"""A QgsTask that runs a plain-Python job in the background and reports to the GUI.

The job (``work(task)``) runs in a worker thread; it calls ``task.report(dict)`` for
each event, which reaches the dialog through a queued Qt signal (so widgets are only
touched from the main thread), and polls ``task.isCanceled()``.
"""
from __future__ import annotations

from typing import Any, Callable

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

__all__ = ["BackgroundTask", "start_task"]


class BackgroundTask(QgsTask):
    """Runs ``work(self)``; emits ``reported`` for each report and ``ended`` at the end.

    Signals:
        reported(dict): one event reported by the job.
        ended(str, object): ``("ok", result)``, ``("cancelled", message)`` or
            ``("error", message)``; emitted in the main thread.
    """

    reported = pyqtSignal(object)
    ended = pyqtSignal(str, object)

    def __init__(self, description: str, work: Callable[["BackgroundTask"], Any],
                 cancelled_types: tuple = ()) -> None:
        super().__init__(description, QgsTask.Flag.CanCancel)
        self._work = work
        self._cancelled_types = cancelled_types
        self.outcome: tuple[str, Any] = ("error", "not run")

    def report(self, event: dict) -> None:
        """Send ``event`` to the GUI (safe from the worker thread)."""
        self.reported.emit(event)
        if event.get("event") == "progress" and event.get("total"):
            self.setProgress(100.0 * float(event.get("done", 0)) / float(event["total"]))

    def run(self) -> bool:  # worker thread
        try:
            self.outcome = ("ok", self._work(self))
            return True
        except self._cancelled_types as exc:  # type: ignore[misc]
            self.outcome = ("cancelled", str(exc))
        except Exception as exc:  # noqa: BLE001 - shown to the user, never lost
            self.outcome = ("error", str(exc) or type(exc).__name__)
        return False

    def finished(self, result: bool) -> None:  # main thread
        kind, value = self.outcome
        if not result and kind == "ok":
            kind, value = "cancelled", "cancelled"
        if self.isCanceled() and kind == "error" and value == "not run":
            kind, value = "cancelled", "cancelled"
        self.ended.emit(kind, value)


def start_task(description: str, work: Callable[[BackgroundTask], Any], on_event: Callable[[dict], None],
               on_ended: Callable[[str, Any], None], cancelled_types: tuple = ()) -> BackgroundTask:
    """Run ``work`` as a :class:`BackgroundTask` in QGIS's task manager, its reports to
    ``on_event`` and its end to ``on_ended(kind, value)``; the task (keep it to cancel it)."""
    task = BackgroundTask(description, work, cancelled_types=cancelled_types)
    task.reported.connect(on_event)
    task.ended.connect(on_ended)
    QgsApplication.taskManager().addTask(task)
    return task
