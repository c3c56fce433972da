"""A progress sink that fails never ends the work: reported once (logged with its traceback,
said in a status line), and the run goes on to write its file."""
from __future__ import annotations

import logging
import os

import pytest

from lib_trainer.progress import STATUS, STEP, Progress
from lib_trainer.train.loop import train
from tests.conftest import quick_config


class Recorder:
    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    def of(self, kind):
        return [event for event in self.events if event.kind == kind]


class DiskFull:
    def __call__(self, event):
        raise OSError(28, "No space left on device")


def test_a_failing_sink_is_reported_once_and_the_others_get_every_event(caplog):
    caplog.set_level(logging.ERROR, logger="lib_trainer")
    recorder = Recorder()
    progress = Progress([DiskFull(), recorder])
    progress.start("training", total=3)
    for step in (1, 2, 3):
        progress.step(step, loss=0.5)
    assert [event.done for event in recorder.of(STEP)] == [1, 2, 3]
    assert [event.text for event in recorder.of(STATUS)] == [
        "warning: DiskFull failed (OSError: [Errno 28] No space left on device); the work goes on "
        "(the traceback is in the log)"]
    [record] = caplog.records
    assert "progress sink DiskFull failed" in record.getMessage()
    assert 'raise OSError(28, "No space left on device")' in record.getMessage()


def test_a_run_whose_tensorboard_log_fails_still_trains_and_saves(small_root, tmp_path, caplog):
    pytest.importorskip("tensorboard")
    from lib_trainer.train.tensorboard import TensorBoardSink

    caplog.set_level(logging.ERROR, logger="lib_trainer")
    board = TensorBoardSink(str(tmp_path / "logs"))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    board.writer.add_scalar = full_disk
    recorder = Recorder()
    try:
        result = train(quick_config(small_root, str(tmp_path / "out"), max_train_steps=3),
                       progress=Progress([board, recorder]))
    finally:
        board.close()
    assert result.steps == 3 and not result.stopped_early
    assert os.path.isfile(result.final_path)
    warnings = [event.text for event in recorder.of(STATUS) if event.text.startswith("warning: TensorBoardSink")]
    assert len(warnings) == 1 and len(caplog.records) == 1
