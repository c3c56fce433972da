"""The job service the UI talks to: queue runs, stop, save now, and read the state.

`TrainService` is the whole interface the UI uses. `LocalTrainService` is the standalone
implementation: one worker thread takes the first waiting item of the `TrainQueue`, trains
it with `train()`, and goes on to the next until the queue is empty or paused. A WebUI
host implements the same interface over the WebUI's job queue (so training waits for
generation, and the Interrupt button stops it) and reuses `TrainQueue` and `RunState`.

Grids (`compare`) share the machine with training: one thing at a time uses its memory. A
run that is due waits for a grid being drawn (as WebUI training waits for a generation); a
grid asked for while a run trains is refused at once with a message, since waiting for the
end of a run could take hours in a page that looks frozen; "Compare when done" is the way to
queue a grid behind a run.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..config import TrainConfig
from ..errors import InvalidInput, UserError, is_expected, log_unexpected, user_message
from ..progress import STATE, Commands, Progress
from .queue import DONE, FAILED, STOPPED, QueueItem, TrainQueue
from .state import RunState, RunView

if TYPE_CHECKING:  # for the annotations only: compare/ (torch, PIL) is imported where a grid is drawn
    from ..compare.grid import Grid, GridRequest


@dataclass
class ServiceSnapshot:
    items: list[QueueItem]
    run: RunView
    paused: bool
    busy: bool


class MachineBusy(UserError, RuntimeError):
    """A grid asked for while the machine trains or draws another grid."""


class TrainService:
    """What the UI needs from whoever runs training."""

    queue: TrainQueue
    # True where grids are drawn on the model the host has loaded (the WebUI's checkpoint):
    # the Compare sub-tab then has no model field.
    compares_on_loaded_model = False
    # The host's own words for a form field where the config's help does not fit it
    # (the WebUI trains its loaded checkpoint: no file paths, no tiny:sd1).
    field_help: dict[str, str] = {}

    def base_family(self, model: str) -> str | None:
        """The family ("sd1", "sd2", "sdxl") a base model value trains, None when not known."""
        from ..hosts import model_family

        return model_family(model)

    def host_problems(self, config: TrainConfig) -> list[str]:
        """What this host refuses in a config that is otherwise valid (Check says it, and a run
        is not queued with it)."""
        return []

    def compare_folders(self, output_dir: str) -> list[str]:
        """The folders the Compare sub-tab offers for finding runs: `output_dir` (the default
        one); a host with one folder per kind of file (the WebUI) offers each."""
        return [output_dir]

    def enqueue(self, config: TrainConfig, start: bool = False, compare_when_done: bool = False) -> QueueItem:
        """Queue a run; `compare_when_done`: draw its epoch x weight grid when it ends done."""
        raise NotImplementedError

    def compare(self, request: "GridRequest", progress: Progress, model: str = "") -> "Grid":
        """Draw a file x weight grid (not saved: compare.defaults.save_beside_run does that).
        `model`: what to draw on where the host has no loaded model (a checkpoint file, a
        diffusers folder, tiny:sd1; "" the run's own base model). Raises MachineBusy while a
        run trains, CompareStopped when `progress` is asked to stop."""
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
        self._machine = threading.Lock()  # held by a run or a grid: what uses the model's memory
        # GridRequest settings "Compare when done" changes from compare.defaults' (tests: fewer steps)
        self.compare_defaults: dict = {}

    # --- the interface -----------------------------------------------------------------
    def enqueue(self, config: TrainConfig, start: bool = False, compare_when_done: bool = False) -> QueueItem:
        config.validate()
        problems = self.host_problems(config)
        if problems:
            raise InvalidInput("\n".join(problems))
        item = self.queue.add(config, total_steps=_planned_steps(config), compare_when_done=compare_when_done)
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

    def compare(self, request: "GridRequest", progress: Progress, model: str = "") -> "Grid":
        request = request.checked()
        if not self._machine.acquire(blocking=False):
            with self._lock:
                training = self._commands is not None
            if training:
                raise MachineBusy("training is running and the grid would share its memory: make the grid when the "
                                  "run ends, or tick Compare when done when you queue a run")
            raise MachineBusy("another grid is being drawn: try again when it is done")
        try:
            progress.sinks.extend(self._host_sinks(progress.commands))
            return self._draw_grid(request, progress, model)
        finally:
            self._machine.release()

    def _draw_grid(self, request: "GridRequest", progress: Progress, model: str) -> "Grid":
        """The grid on our own sampler, on `model` loaded for it. The model is not kept after:
        its memory goes back before the next run needs it (a checkpoint loads in seconds)."""
        from ..compare.defaults import base_model_options
        from ..compare.standalone import standalone_grid
        from ..hosts import load_bundle

        model, options = base_model_options(request.files, model)
        if not model:
            raise InvalidInput("choose the base model to draw the grid on (a checkpoint file, a diffusers folder "
                               "or tiny:sd1): the run's saved config does not say")
        progress.status(f"loading {model} for the grid")
        return standalone_grid(request, load_bundle(model, **options), progress)

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
        if not self._machine.acquire(blocking=False):
            progress.status("waiting for the grid being drawn to finish")
            self._machine.acquire()
        try:
            self._train_item(item, progress)
        finally:
            self._machine.release()

    def _train_item(self, item: QueueItem, progress: Progress) -> None:
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
        # Not after a stop: Stop means "free the machine now", and the queue pauses with it.
        if status == DONE and item.compare_when_done:
            self._compare_when_done(item, progress, path)
        self.state.finish(status, result=path)

    def _compare_when_done(self, item: QueueItem, progress: Progress, final_path: str = "") -> None:
        """The run's epoch x weight grid, saved in <output_dir>/compare/ and said in its log. It
        only shows the run: whatever goes wrong is said there, and the run stays done."""
        from ..compare.defaults import default_request, save_beside_run
        from ..compare.runs import read_saved_file, run_files

        config = item.train_config()
        try:
            # Where the run's last file went and the run it names: a host may save an embedding
            # or a hypernetwork in a folder of its own, and an embedding run is named by its word.
            folder, run = config.output_dir, config.output_name
            if final_path and os.path.isfile(final_path):
                folder, run = os.path.dirname(final_path), read_saved_file(final_path).run
            # This run's files: an earlier run of the same name may have left more epochs.
            since = (item.added or 0) - 1
            files = [saved for saved in run_files(folder, run) if os.path.getmtime(saved.path) >= since]
            if not files:
                progress.status("compare when done: the run saved no files to compare")
                return
            request = default_request(files, **self.compare_defaults)
            progress.status(f"compare when done: drawing {len(request.files)} columns x "
                            f"{len(request.row_weights)} weights")
            grid = self._draw_grid(request, progress, config.pretrained_model_name_or_path)
            path = save_beside_run(grid, config.output_dir)
        except Exception as error:  # noqa: BLE001 - a grid never fails the run it shows
            if not is_expected(error):
                log_unexpected(error, f"the grid of {item.name!r}")
            progress.status(f"compare when done: no grid ({user_message(error)}); the run itself is done")
            return
        self.queue.update(item.id, grid=path)
        progress.status(f"comparison grid saved to {path} (the Compare sub-tab shows it)")

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
