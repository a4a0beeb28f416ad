"""One progress bar across the engine's stages; done/total and time left in the log."""
from __future__ import annotations

import pytest

from hrmnet_qgis.progress import STAGES, StageProgress, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_detect_bar_runs_once_from_0_to_100_across_detect_and_vectorize():
    clock = Clock()
    progress = StageProgress(STAGES["detect"], clock=clock)
    seen = []
    for stage, total in (("detect", 480), ("vectorize", 10)):
        for done in range(total + 1):
            clock.now += 0.5
            seen.append(progress.update(stage, done, total)[0])
    assert seen == sorted(seen), "never goes back"
    assert seen[0] == 0 and seen[480] == pytest.approx(85.0) and seen[-1] == pytest.approx(100.0)


def test_log_lines_give_done_total_and_time_left_every_10_percent():
    clock = Clock()
    progress = StageProgress(STAGES["detect"], clock=clock)
    lines = []
    for done in range(0, 481):
        line = progress.update("detect", done, 480)[1]
        if line:
            lines.append(line)
        clock.now += 0.25  # 4 tiles a second
    assert len(lines) == 11
    assert lines[0] == "detect: 0/480 tiles (0 %)"
    assert lines[3] == "detect: 144/480 tiles (30 %), about 1 min left"  # 336 tiles at 4/s = 84 s
    assert lines[-1] == "detect: 480/480 tiles (100 %), 2 min"


def test_a_stage_outside_the_commands_stages_is_logged_but_keeps_the_bar():
    progress = StageProgress(STAGES["train"], clock=Clock())
    assert progress.update("train", 50, 100)[0] == pytest.approx(50.0)
    percent, line = progress.update("evaluate", 1, 4)  # validation during training
    assert percent == pytest.approx(50.0) and line.startswith("evaluate: 1/4 tiles")
    assert progress.update("train", 60, 100)[0] == pytest.approx(60.0)


def test_sheets_bar_follows_the_tiles_and_the_log_gives_sheets_done_and_time_left():
    clock = Clock()
    progress = StageProgress(STAGES["sheets"], clock=clock)
    seen, lines = [], []
    progress.update("sheets", 0, 4)
    progress.update("tiles", 0, 16)
    for sheet in range(4):  # the engine's order: a sheet's tiles, then the sheet
        for tile in range(1, 5):
            clock.now += 1.0
            seen.append(progress.update("tiles", 4 * sheet + tile, 16)[0])
        percent, line = progress.update("sheets", sheet + 1, 4)
        seen.append(percent)
        lines.append(line)
    assert seen == sorted(seen) and seen[0] == pytest.approx(100 / 16) and seen[-1] == pytest.approx(100.0)
    assert lines[0] == "sheets: 1/4 sheets (25 %), about 12 s left"
    assert lines[-1] == "sheets: 4/4 sheets (100 %), 16 s"


def test_without_stages_each_stage_fills_the_bar():
    progress = StageProgress(clock=Clock())
    assert progress.update("scenes", 1, 4)[0] == pytest.approx(25.0)


@pytest.mark.parametrize("seconds, text", [(0.2, "1 s"), (44.6, "45 s"), (150, "2 min"), (3900, "1 h 05 min")])
def test_durations_read_well(seconds, text):
    assert format_duration(seconds) == text


def test_the_processing_feedback_gets_one_bar_and_keeps_qgis_progress_text(qgis_app):
    from qgis.core import QgsProcessingFeedback

    from hrmnet_qgis.algorithms.base import FeedbackReporter

    texts, values = [], []

    class Feedback(QgsProcessingFeedback):
        def setProgressText(self, text):  # noqa: N802 - what the batch dialog's feedback shows
            texts.append(text)

    feedback = Feedback()
    feedback.progressChanged.connect(values.append)
    report = FeedbackReporter(feedback, "detect")
    for stage, total in (("detect", 4), ("vectorize", 2)):
        for done in range(total + 1):
            report({"event": "progress", "stage": stage, "done": done, "total": total})
    assert texts == [] and values == sorted(values) and values[-1] == pytest.approx(100.0)
    assert "detect: 2/4 tiles (50 %)" in feedback.textLog() and "vectorize: 2/2 strips" in feedback.textLog()


def test_time_left_of_training_is_not_reset_by_validation_passes():
    clock = Clock()
    progress = StageProgress(STAGES["train"], clock=clock)
    lines = []
    for step in range(0, 101):
        clock.now = float(step)  # one step a second
        lines.append(progress.update("train", step, 100)[1])
        if step == 50:  # a validation pass of 4 batches, then training goes on
            for k in range(5):
                progress.update("evaluate", k, 4)
    assert "train: 60/100 steps (60 %), about 40 s left" in lines
    assert lines[-1] == "train: 100/100 steps (100 %), 2 min"
