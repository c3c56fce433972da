"""A grid drawn in the background while the page polls it: the Compare sub-tab's "Make grid".

Why not in the request that asks for it (with `gr.Progress`): on Gradio 3.41 the queue hands
each request to its own HTTP endpoint through an httpx client with httpx's default 5-second
read timeout, so with some httpx versions (0.28 here) any request over 5 s ends in an empty
"Error" (gradio issues #3078, #4306), and a grid takes minutes. So the request only starts the
grid; the page asks for its progress about once a second (javascript/lib_trainer.js clicks
the sub-tab's poll button, as for the live view), and gets the result when it is done.
"""
from __future__ import annotations

import html
import itertools
import threading
from typing import Callable

from ..errors import is_expected, log_unexpected, user_message
from ..progress import START, STEP, Commands, Progress, ProgressEvent
from .render import error_lines

_ids = itertools.count(1)


class GridJob:
    """One grid: `work(progress)` runs in a thread and returns what the page shows of it."""

    def __init__(self, work: Callable[[Progress], dict], total: int) -> None:
        self.id = next(_ids)
        self.commands = Commands()
        self.done, self.total = 0, total
        self.phase = "drawing"  # drawing, done, stopped, failed
        self.result: dict = {}
        self.errors: list[str] = []
        self._work = work
        self.thread = threading.Thread(target=self._run, name=f"lib_trainer-grid-{self.id}", daemon=True)

    def start(self) -> "GridJob":
        self.thread.start()
        return self

    @property
    def running(self) -> bool:
        return self.phase == "drawing"

    def __call__(self, event: ProgressEvent) -> None:  # the progress sink
        if event.kind == START and event.total:
            self.total = event.total
        elif event.kind == STEP:
            self.done = event.done

    def _run(self) -> None:
        from ..compare.grid import CompareStopped

        try:
            self.result = self._work(Progress([self], self.commands))
            self.phase = "done"
        except CompareStopped as error:
            self.errors, self.phase = [str(error)], "stopped"
        except Exception as error:  # noqa: BLE001 - shown in the page, never lost in a thread
            if is_expected(error):
                self.errors = error_lines(error)
            else:
                log_unexpected(error, "drawing the grid")
                self.errors = [user_message(error)]
            self.phase = "failed"

    def progress_html(self) -> str:
        fraction = self.done / self.total if self.total else 0.0
        css = {"done": "lt-ok", "stopped": "lt-note", "failed": "lt-error"}.get(self.phase, "")
        text = {"drawing": f"Drawing image {min(self.done + 1, self.total or 1)} of {self.total or '?'}",
                "done": f"Done: {self.total} images", "stopped": f"Stopped after {self.done} images",
                "failed": "The grid was not made"}[self.phase]
        return (f"<div class='lt-compare-progress {css}' data-phase='{self.phase}' data-done='{self.done}' "
                f"data-total='{self.total or 0}'>{html.escape(text)}<div class='lt-bar'>"
                f"<div class='lt-bar-fill' style='width:{100 * fraction:.1f}%'></div></div></div>")
