"""Time to the first step, split into its parts, said in one status line once the first step is
done: "time to first step 9.1 s: imports 2.3 s, load 4.0 s, latents 1.1 s, compile off, first
step 1.2 s, other set-up 0.5 s". Users wait for this before anything trains; the split says
where the wait goes (the bench prints the same parts).

"imports" is the time the process ran before the run began, counted only when the process was
started for it (`python -m lib_trainer ...`): inside the WebUI it would be the WebUI's uptime.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

# The parts in the order they happen; those never measured are left out of the line, but for
# compile, said "off" (a compile option times itself with `part("compile")`).
PARTS = ("imports", "load", "latents", "text encoder cache", "compile", "first step", "other set-up")


def process_age_s() -> float | None:
    """Seconds since this process started (Linux: /proc), or None where that is unknown."""
    try:
        with open("/proc/self/stat") as handle:
            # the command name (field 2) may hold spaces: count fields after its closing ")"
            started_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))


def started_for_this_run() -> bool:
    """Whether the process is `python -m lib_trainer` (not the WebUI, not a test runner)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", "") == "lib_trainer.__main__"


class FirstStepTimes:
    """Seconds of each part before the first step; `step_done` says them once."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.seconds: dict[str, float] = {}
        age = process_age_s() if started_for_this_run() else None
        if age is not None:
            self.seconds["imports"] = age
        self._step_began: float | None = None
        self._inside_step = 0.0  # parts timed during the first step (a lazy compile): not the step's own
        self.said = False

    @contextlib.contextmanager
    def part(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + took
            if self._step_began is not None:
                self._inside_step += took

    def step_started(self) -> None:
        if self._step_began is None:
            self._step_began = time.perf_counter()

    def step_done(self, progress) -> None:
        """After every step: the first time, record the first step and say the line."""
        if self.said or self._step_began is None:
            return
        now = time.perf_counter()
        measured = sum(s for name, s in self.seconds.items() if name != "imports") - self._inside_step
        self.seconds["first step"] = now - self._step_began - self._inside_step
        self.seconds["other set-up"] = max(0.0, self._step_began - self.began - measured)
        self.said = True
        progress.status(first_step_line(self.seconds), first_step_s=dict(self.seconds))


def first_step_line(seconds: dict[str, float]) -> str:
    parts = [f"{name} {seconds[name]:.1f} s" if name in seconds else "compile off"
             for name in PARTS if name in seconds or name == "compile"]
    return f"time to first step {sum(seconds.values()):.1f} s: " + ", ".join(parts)
