"""What the UI shows about the run in progress, folded from progress events.

`RunState` is a progress sink: the training thread calls it with each `ProgressEvent`,
the UI thread reads a consistent copy with `view()`. A lock keeps the two apart.
"""
from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..progress import END, IMAGE, SAVED, START, STATE, STATUS, STEP, VALIDATION, ProgressEvent

MAX_MESSAGES = 200
MAX_IMAGES = 16
MAX_LOSS_POINTS = 2000  # the chart keeps every step up to this, then every other one


@dataclass
class RunView:
    """A snapshot of one run, safe to read without the lock."""
    item_id: int | None = None
    name: str = ""
    phase: str = "idle"  # idle, preparing, caching, training, done, stopped, failed
    step: int = 0
    total: int | None = None
    epoch: int = 0
    loss: float | None = None
    avg_loss: float | None = None
    lr: float | None = None
    it_per_s: float | None = None
    eta_s: float | None = None
    losses: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, avg_loss)
    validation_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss)
    images: list[tuple[Any, str]] = field(default_factory=list)  # (PIL image, caption)
    saved: list[str] = field(default_factory=list)
    last_state: str = ""  # the newest run state folder written: where a resumption starts
    messages: list[str] = field(default_factory=list)
    error: str = ""
    result: str = ""
    started: float | None = None
    version: int = 0  # grows with every change: the UI redraws only what changed
    chart_version: int = 0
    images_version: int = 0

    def progress_text(self) -> str:
        if self.phase == "idle":
            return "No training running."
        parts = [f"**{self.name}**: {self.phase}"]
        if self.total:
            parts.append(f"step {self.step}/{self.total} ({100 * self.step / self.total:.0f}%)")
        if self.epoch:
            parts.append(f"epoch {self.epoch}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f} (avg {self.avg_loss:.4f})")
        if self.validation_losses:
            parts.append(f"validation loss {self.validation_losses[-1][1]:.4f}")
        if self.it_per_s:
            parts.append(f"{self.it_per_s:.2f} it/s")
        if self.eta_s is not None and math.isfinite(self.eta_s) and self.phase == "training":
            parts.append(f"ETA {format_seconds(self.eta_s)}")
        if self.lr is not None:
            parts.append(f"lr {self.lr:.2e}")
        return " · ".join(parts)


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class RunState:
    """The live state of the current (or last) run; call it with events from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._view = RunView()

    def begin(self, item_id: int, name: str) -> None:
        with self._lock:
            version = self._view.version
            self._view = RunView(item_id=item_id, name=name, phase="preparing", started=time.time(),
                                 version=version + 1, chart_version=self._view.chart_version + 1,
                                 images_version=self._view.images_version + 1)

    def finish(self, phase: str, result: str = "", error: str = "") -> None:
        with self._lock:
            view = self._view
            view.phase, view.result, view.error = phase, result, error
            if error:
                view.messages.append(f"error: {error}")
            view.version += 1

    def note(self, text: str) -> None:
        with self._lock:
            self._add_message(text)
            self._view.version += 1

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            view = self._view
            if event.kind == START:
                view.phase = "training" if event.label == "training" else event.label or view.phase
                view.total = event.total if event.label == "training" else view.total
                if event.label == "training":
                    view.step = 0
            elif event.kind == STEP and event.label == "training":
                self._on_step(view, event)
            elif event.kind == STEP:
                view.phase = event.label or view.phase
            elif event.kind == VALIDATION:
                view.validation_losses.append((event.done, float(event.info["validation_loss"])))
                view.chart_version += 1
            elif event.kind == STATUS:
                self._add_message(event.text)
            elif event.kind == SAVED:
                view.saved.append(event.text)
                self._add_message(f"saved {event.text}")
            elif event.kind == STATE:
                view.last_state = event.text
                self._add_message(f"run state saved to {event.text}")
            elif event.kind == IMAGE:
                view.images.append((event.info.get("image"), event.text))
                del view.images[:-MAX_IMAGES]
                view.images_version += 1
            elif event.kind == END and event.text:
                self._add_message(event.text)
            view.version += 1

    @staticmethod
    def _on_step(view: RunView, event: ProgressEvent) -> None:
        info = event.info
        view.step, view.total = event.done, event.total
        view.epoch = info.get("epoch", view.epoch)
        view.loss, view.avg_loss = info.get("loss"), info.get("avg_loss")
        view.lr, view.it_per_s, view.eta_s = info.get("lr"), info.get("it_per_s"), info.get("eta_s")
        if view.loss is not None:
            view.losses.append((event.done, float(view.loss), float(view.avg_loss or view.loss)))
            if len(view.losses) > MAX_LOSS_POINTS:
                view.losses = view.losses[::2]
        view.chart_version += 1

    def _add_message(self, text: str) -> None:
        self._view.messages.append(text)
        del self._view.messages[:-MAX_MESSAGES]

    def view(self) -> RunView:
        with self._lock:
            # Images are shared, not copied: they are never changed after being added.
            images = self._view.images
            self._view.images = []
            try:
                copied = copy.deepcopy(self._view)
            finally:
                self._view.images = images
            copied.images = list(images)
            return copied
