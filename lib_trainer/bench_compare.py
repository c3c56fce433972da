"""`bench --compare-config A.toml B.toml`: two configs measured alternately (A B A B ...),
each run in a fresh child process of this one, so each has its own peak RSS and neither
inherits the other's caches or allocator state. Both see the same machine noise, so the
per-round ratio B/A (with its min, median and max) judges a change even on a busy machine,
where absolute figures would not."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable

# 1-minute load average before the first run from which the machine counts as busy: another
# process on a core starves oneDNN's threads (bf16 steps slow 4-5x on 2 cores).
BUSY_LOAD = 0.5


def busy_line(load: float, when: str) -> str:
    """The warning for a machine that was busy `when` ("" when it was not)."""
    if load < BUSY_LOAD:
        return ""
    return f"warning: the machine was busy {when} (1-minute load {load:.2f}): absolute figures are unreliable"


@dataclass
class RunFigures:
    seconds_per_step: float
    peak_memory_mb: float
    phases: dict[str, float] = field(default_factory=dict)  # phase -> s/step (bench_phases.py)


def run_in_child(config_path: str, steps: int, warmup: int, extra_args: list[str]) -> RunFigures:
    """One `bench` run of the config in a new Python process; its figures come back as JSON."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "figures.json")
        command = [sys.executable, "-m", "lib_trainer", "bench", "--config", config_path, "--steps", str(steps),
                   "--warmup", str(warmup), "--json", out, *extra_args]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"bench of {config_path} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        with open(out, encoding="utf-8") as handle:
            figures = json.load(handle)
    return RunFigures(figures["training_step_s"], figures["training_peak_mb"], figures.get("phases_s", {}))


def compare_configs(paths: tuple[str, str], rounds: int, steps: int, warmup: int, extra_args: list[str] = (),
                    run_one: Callable[..., RunFigures] = run_in_child, load: float | None = None) -> str:
    """Measure A then B, `rounds` times; the report's lines."""
    load = os.getloadavg()[0] if load is None else load
    rows = []
    for _ in range(rounds):
        a = run_one(paths[0], steps, warmup, list(extra_args))
        b = run_one(paths[1], steps, warmup, list(extra_args))
        rows.append((a, b))
    return report(paths, rows, steps, warmup, load)


def report(paths, rows: list[tuple[RunFigures, RunFigures]], steps: int, warmup: int, load: float) -> str:
    lines = [f"A = {paths[0]}, B = {paths[1]}: {len(rows)} rounds of A then B, each a fresh process, "
             f"{steps} timed steps after {warmup}"]
    busy = busy_line(load, "before the first run")
    if busy:
        lines.append(busy + "; the ratios less so, since A and B share the noise")
    lines.append(f"{'round':<7}{'A s/step':>10}{'B s/step':>10}{'B/A':>7}{'A peak MB':>11}{'B peak MB':>11}{'B/A':>7}")
    step_ratios, memory_ratios = [], []
    for number, (a, b) in enumerate(rows, 1):
        step_ratios.append(b.seconds_per_step / a.seconds_per_step)
        memory_ratios.append(b.peak_memory_mb / a.peak_memory_mb)
        lines.append(f"{number:<7}{a.seconds_per_step:>10.4f}{b.seconds_per_step:>10.4f}{step_ratios[-1]:>7.3f}"
                     f"{a.peak_memory_mb:>11.0f}{b.peak_memory_mb:>11.0f}{memory_ratios[-1]:>7.3f}")
    for name, ratios in (("step time", step_ratios), ("peak RSS", memory_ratios)):
        lines.append(f"B/A {name}: min {min(ratios):.3f}, median {statistics.median(ratios):.3f}, "
                     f"max {max(ratios):.3f}")
    return "\n".join(lines + phase_ratio_lines(rows))


def phase_ratio_lines(rows: list[tuple[RunFigures, RunFigures]]) -> list[str]:
    """Each phase's B/A, the median over the rounds; a phase 0 in A (a text encoder that does
    not train) has no ratio."""
    names = [name for name in rows[0][0].phases if all(name in a.phases and name in b.phases for a, b in rows)]
    if not names:
        return []
    lines = ["B/A per phase, median of the rounds:"]
    for name in names:
        ratios = [b.phases[name] / a.phases[name] for a, b in rows if a.phases[name] > 0]
        shown = f"{statistics.median(ratios):.3f}" if ratios else "n/a (0 in A)"
        lines.append(f"  {name:<24}{shown}")
    return lines
