"""A progress sink for the command line: a tqdm bar per phase, status lines above it."""
from __future__ import annotations

import sys

from .progress import END, SAVED, START, STATE, STATUS, STEP, VALIDATION, ProgressEvent


class TerminalSink:
    def __init__(self, stream=None, show_keys: tuple[str, ...] = ("loss", "avg_loss", "lr", "keys_scaled", "avg_key_norm")) -> None:
        self.stream = stream or sys.stderr
        self.show_keys = show_keys
        self._bar = None

    def __call__(self, event: ProgressEvent) -> None:
        from tqdm import tqdm

        if event.kind == START:
            self._close()
            self._bar = tqdm(total=event.total, desc=event.label, file=self.stream, dynamic_ncols=True)
        elif event.kind == STEP and self._bar is not None:
            self._bar.update(event.done - self._bar.n)
            shown = {k: _short(event.info[k]) for k in self.show_keys if k in event.info}
            if shown:
                self._bar.set_postfix(shown, refresh=False)
        elif event.kind in (STATUS, SAVED, STATE, VALIDATION):
            prefix = {STATUS: "", SAVED: "saved ", STATE: "run state saved to ", VALIDATION: ""}[event.kind]
            message = prefix + (f"validation loss {event.info['validation_loss']:.6g} at step {event.done}"
                                if event.kind == VALIDATION else event.text)
            if self._bar is not None:
                self._bar.write(message, file=self.stream)
            else:
                print(message, file=self.stream)
        elif event.kind == END:
            self._close()
            if event.text:
                print(event.text, file=self.stream)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else value
