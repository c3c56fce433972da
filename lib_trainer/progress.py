"""The one progress interface for long work (caching, training, preprocessing, tagging, grids).

Two small objects cross the boundary between the work and whoever shows it:
- events go out: `Progress` sends `ProgressEvent`s to its sinks (a terminal bar, the
  WebUI's `shared.state`, Gradio, TensorBoard);
- commands come in: `Commands` holds requests (stop, save now) that the work polls
  between steps. They are thread-safe so a UI thread can set them.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

# Event kinds a sink may receive.
# STATE: a run state folder was written (train/resume.py); the text is its path.
START, STEP, STATUS, SAVED, STATE, IMAGE, END = "start", "step", "status", "saved", "state", "image", "end"


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

    def emit(self, event: ProgressEvent) -> None:
        for sink in self.sinks:
            sink(event)

    def start(self, label: str, total: int | None = None) -> None:
        self._label, self._total = label, total
        self.emit(ProgressEvent(START, label=label, total=total))

    def step(self, done: int, **info: Any) -> None:
        self.emit(ProgressEvent(STEP, label=self._label, done=done, total=self._total, info=info))

    def status(self, text: str) -> None:
        self.emit(ProgressEvent(STATUS, label=self._label, text=text))

    def saved(self, path: str, **info: Any) -> None:
        self.emit(ProgressEvent(SAVED, label=self._label, text=path, info=info))

    def state_saved(self, folder: str) -> None:
        self.emit(ProgressEvent(STATE, label=self._label, text=folder))

    def image(self, image: Any, caption: str = "") -> None:
        self.emit(ProgressEvent(IMAGE, label=self._label, text=caption, info={"image": image}))

    def end(self, text: str = "") -> None:
        self.emit(ProgressEvent(END, label=self._label, total=self._total, text=text))

    @property
    def stop_requested(self) -> bool:
        return self.commands.stop_requested


def silent() -> Progress:
    return Progress()
