"""The job service the UI talks to: queue runs, stop, save now, and read the state.

`TrainService` is the whole interface the UI uses. `LocalTrainService` is the standalone
implementation: one worker thread takes the first waiting item of the `TrainQueue`, trains
it with `train()`, and goes on to the next until the queue is empty or paused. A WebUI
host implements the same interface over the WebUI's job queue (so training waits for
generation, and the Interrupt button stops it) and reuses `TrainQueue` and `RunState`.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Callable

from ..config import TrainConfig
from ..errors import is_expected, log_unexpected, user_message
from ..progress import STATE, Commands, Progress
from .queue import DONE, FAILED, STOPPED, QueueItem, TrainQueue
from .state import RunState, RunView


@dataclass
class ServiceSnapshot:
    items: list[QueueItem]
    run: RunView
    paused: bool
    busy: bool


class TrainService:
    """What the UI needs from whoever runs training."""

    queue: TrainQueue

    def enqueue(self, config: TrainConfig, start: bool = False) -> QueueItem:
        raise NotImplementedError

    def start_queue(self) -> None:
        raise NotImplementedError

    def pause_queue(self) -> None:
        raise NotImplementedError

    def stop(self) -> bool:
        """Stop the running run after its current step (it saves name-stepN) and pause the queue."""
        raise NotImplementedError

    def save_now(self) -> bool:
        raise NotImplementedError

    def resume(self, item_id: int) -> QueueItem:
        """Put a stopped run back in the queue, from its last state, and start the queue."""
        item = self.queue.resume(item_id)
        self.start_queue()
        return item

    def snapshot(self) -> ServiceSnapshot:
        raise NotImplementedError


# (config) -> TrainResult-like object with final_path and stopped_early; gets the progress.
Trainer = Callable[[TrainConfig, Progress], object]


def default_trainer(config: TrainConfig, progress: Progress):
    from ..train.loop import train

    return train(config, bundle=None, progress=progress)


class LocalTrainService(TrainService):
    """Runs the queue in one background thread of this process."""

    def __init__(self, queue: TrainQueue, trainer: Trainer = default_trainer) -> None:
        self.queue = queue
        self.trainer = trainer
        self.state = RunState()
        self._lock = threading.Lock()
        self._commands: Commands | None = None
        self._thread: threading.Thread | None = None

    # --- the interface -----------------------------------------------------------------
    def enqueue(self, config: TrainConfig, start: bool = False) -> QueueItem:
        config.validate()
        item = self.queue.add(config, total_steps=_planned_steps(config))
        if start:
            self.start_queue()
        return item

    def start_queue(self) -> None:
        self.queue.set_paused(False)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="lib_trainer-queue", daemon=True)
                self._thread.start()

    def pause_queue(self) -> None:
        self.queue.set_paused(True)

    def stop(self) -> bool:
        self.queue.set_paused(True)
        return self._send(lambda commands: commands.request_stop())

    def save_now(self) -> bool:
        return self._send(lambda commands: commands.request_save())

    def _send(self, request) -> bool:
        """Pass a request to the running job's commands; False when nothing is running."""
        with self._lock:
            if self._commands is None:
                return False
            request(self._commands)
            return True

    def snapshot(self) -> ServiceSnapshot:
        with self._lock:
            busy = self._commands is not None
        return ServiceSnapshot(self.queue.snapshot(), self.state.view(), self.queue.paused, busy)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the worker to finish the queue (tests, the CLI); True if it did."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # --- the worker --------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                item = self.queue.take_next()
                if item is None:
                    self._thread = None
                    return
                self._commands = Commands()
                commands = self._commands
            try:
                self._run_item(item, commands)
            finally:
                with self._lock:
                    self._commands = None

    def _run_item(self, item: QueueItem, commands: Commands) -> None:
        self.state.begin(item.id, item.name)
        progress = Progress([self.state, _StateRecorder(self.queue, item.id), *self._host_sinks(commands)], commands)
        try:
            with self._host_job(item, progress):
                result = self.trainer(item.train_config(), progress)
        except Exception as error:  # noqa: BLE001 - a run's failure is shown, never raised into the worker
            if is_expected(error):
                # dataset, config, checkpoint, divergence, disk: the message says what to change
                self._failed(item, user_message(error))
            else:
                # a bug: logged with its traceback, and shown with it under the message for a report
                self._failed(item, user_message(error), log_unexpected(error, f"training {item.name!r}"))
            return
        path = getattr(result, "final_path", None) or ""
        stopped = bool(getattr(result, "stopped_early", False))
        status = STOPPED if stopped else DONE
        self.queue.update(item.id, status=status, result=path)
        self.state.finish(status, result=path)

    def _host_sinks(self, commands: Commands) -> list:
        """Progress sinks a host adds to every run (the WebUI's shared.state)."""
        return []

    def _host_job(self, item: QueueItem, progress: Progress):
        """What a run is wrapped in (the WebUI's job queue); nothing here."""
        return contextlib.nullcontext()

    def _failed(self, item: QueueItem, message: str, trace: str = "") -> None:
        self.queue.update(item.id, status=FAILED, error=" ".join(message.split())[:500])
        self.state.finish(FAILED, error=message + (f"\n\n{trace}" if trace else ""))


def _planned_steps(config: TrainConfig) -> int | None:
    """The step count shown in the queue; None when the dataset cannot be read yet."""
    from ..dataset.plan import make_plan

    try:
        return make_plan(config).total_steps
    except (ValueError, OSError):
        return None


class _StateRecorder:
    """Keeps the newest run state of an item in the queue file as it is written, so that even
    a server that is killed leaves the item resumable."""

    def __init__(self, queue: TrainQueue, item_id: int) -> None:
        self.queue, self.item_id = queue, item_id

    def __call__(self, event) -> None:
        if event.kind == STATE:
            self.queue.update(self.item_id, resume_state=event.text)
