"""Ctrl-C, SIGTERM and a closed terminal (SIGHUP) end long work the same way: stop after the
current step and save; a second Ctrl-C or SIGTERM aborts.

Only entry points use this (the `train` and `ui` commands): signal handlers belong to the
whole process and can only be set from its main thread, so library code never sets them
(inside the WebUI they would take the WebUI's own Ctrl-C away).

Exit codes follow the shell's convention for "ended by signal N", 128 + N: 130 for Ctrl-C
(SIGINT), 143 for SIGTERM, 129 for SIGHUP.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Callable

# SIGHUP does not exist on Windows.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
HANGUP = getattr(signal, "SIGHUP", None)


class Aborted(KeyboardInterrupt):
    """A second stop signal: give up the current step. A KeyboardInterrupt, so that the
    training loop saves what was trained (as for any interruption) on its way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(signum: int) -> int:
    return 128 + signum


def signal_name(signum: int) -> str:
    return {signal.SIGINT: "Ctrl-C"}.get(signum, signal.Signals(signum).name)


def raise_aborted(signum: int) -> None:
    raise Aborted(signum)


class StopOnSignals:
    """While active (a `with` block, main thread only): the first SIGINT, SIGTERM or SIGHUP
    says `message` and calls `stop()`; a later SIGINT or SIGTERM calls `abort(signum)` (by
    default it raises `Aborted` in the main thread). Later SIGHUPs are ignored: closing a
    terminal can deliver two (from the kernel and from the shell), and nobody is left at it
    who could mean "abort"."""

    def __init__(self, stop: Callable[[], object], message: str,
                 abort: Callable[[int], object] = raise_aborted) -> None:
        self.stop, self.message, self.abort = stop, message, abort
        self.signum: int | None = None  # the first signal received
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopOnSignals":
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum, frame) -> None:
        if signum == HANGUP:
            _quiet_closed_terminal()
        if self.signum is None:
            self.signum = signum
            again = "" if signum == HANGUP else f" ({signal_name(signum)} again to abort)"
            say(f"\n{signal_name(signum)}: {self.message}{again}")
            self.stop()
        elif signum != HANGUP:
            self.abort(signum)


def say(text: str) -> None:
    """Print to stderr, which may be a closed terminal by now."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _quiet_closed_terminal() -> None:
    """After a hang-up, writes to the terminal fail (EIO): send what was going there to
    /dev/null, so that the run's last messages do not turn into errors. Streams that are
    files or pipes (nohup, a log) are left as they are."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            is_terminal = stream.isatty()
        except (OSError, ValueError, AttributeError):
            is_terminal = True
        if is_terminal:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))
