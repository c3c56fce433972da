"""The one progress interface for long work (caching, training, preprocessing, tagging, grids).

Two small objects cross the boundary between the work and whoever shows it:
- events go out: `Progress` sends `ProgressEvent`s to its sinks (a terminal bar, the
  WebUI's `shared.state`, Gradio, TensorBoard);
- commands come in: `Commands` holds requests (stop, save now) that the work polls
  between steps. They are thread-safe so a UI thread can set them.

A sink only shows the work, so a sink that fails (TensorBoard on a full disk, the WebUI's
read-back of a saved file) never ends it: its first failure is logged with its traceback and
said once in a status line; it keeps receiving events, in case it recovers.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

# Event kinds a sink may receive.
# STATE: a run state folder was written (train/resume.py); the text is its path.
# VALIDATION: a validation loss (train/validation.py): `done` is the step, info["validation_loss"] the value.
START, STEP, STATUS, SAVED, STATE, IMAGE, END = "start", "step", "status", "saved", "state", "image", "end"
VALIDATION = "validation"


@dataclass
class ProgressEvent:
    kind: str
    label: str = ""
    done: int = 0
    total: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    time: float = field(default_factory=time.monotonic)


Sink = Callable[[ProgressEvent], None]

log = logging.getLogger("lib_trainer")


class Commands:
    """Requests from the user, polled by the running work between steps."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._save = threading.Event()

    def request_stop(self) -> None:
        self._stop.set()

    def request_save(self) -> None:
        self._save.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def take_save_request(self) -> bool:
        """True once per `request_save` call."""
        if self._save.is_set():
            self._save.clear()
            return True
        return False


class Progress:
    """What long work calls to report; fans events out to sinks."""

    def __init__(self, sinks: Iterable[Sink] = (), commands: Commands | None = None) -> None:
        self.sinks = list(sinks)
        self.commands = commands or Commands()
        self._label = ""
        self._total: int | None = None
        self._failed_sinks: list[Sink] = []  # the sinks whose failure was reported

    def emit(self, event: ProgressEvent) -> None:
        for sink in list(self.sinks):  # a sink may add one (the WebUI's read-back)
            try:
                sink(event)
            except Exception as error:  # noqa: BLE001 - a display must never end the work it shows
                self._sink_failed(sink, error)

    def _sink_failed(self, sink: Sink, error: Exception) -> None:
        if any(failed is sink for failed in self._failed_sinks):
            return
        self._failed_sinks.append(sink)
        name = sink_name(sink)
        log.error("progress sink %s failed; the work goes on without it:\n%s", name,
                  "".join(traceback.format_exception(type(error), error, error.__traceback__)))
        # to the other sinks (this one is now marked, so a second failure here is not reported)
        self.status(f"warning: {name} failed ({type(error).__name__}: {error}); the work goes on "
                    "(the traceback is in the log)")

    def start(self, label: str, total: int | None = None) -> None:
        self._label, self._total = label, total
        self.emit(ProgressEvent(START, label=label, total=total))

    def step(self, done: int, **info: Any) -> None:
        self.emit(ProgressEvent(STEP, label=self._label, done=done, total=self._total, info=info))

    def status(self, text: str, **info: Any) -> None:
        """A line for the user; `info`, the same in figures for sinks that want them."""
        self.emit(ProgressEvent(STATUS, label=self._label, text=text, info=info))

    def saved(self, path: str, **info: Any) -> None:
        self.emit(ProgressEvent(SAVED, label=self._label, text=path, info=info))

    def state_saved(self, folder: str) -> None:
        self.emit(ProgressEvent(STATE, label=self._label, text=folder))

    def validation(self, step: int, loss: float) -> None:
        self.emit(ProgressEvent(VALIDATION, label=self._label, done=step, total=self._total,
                                info={"validation_loss": loss}))

    def image(self, image: Any, caption: str = "") -> None:
        self.emit(ProgressEvent(IMAGE, label=self._label, text=caption, info={"image": image}))

    def end(self, text: str = "") -> None:
        self.emit(ProgressEvent(END, label=self._label, total=self._total, text=text))

    @property
    def stop_requested(self) -> bool:
        return self.commands.stop_requested


def sink_name(sink: Sink) -> str:
    """What the user knows a sink as: its class (TensorBoardSink, ReadBack) or function name."""
    return getattr(sink, "__qualname__", None) or type(sink).__qualname__  # functions have one, instances not


def silent() -> Progress:
    return Progress()
