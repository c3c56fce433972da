"""bench --compare-config: two configs alternately, in fresh processes, with their ratios."""
from __future__ import annotations

import json
import subprocess
import sys

from lib_trainer.bench_compare import RunFigures, compare_configs


def test_configs_run_alternately_and_the_ratios_are_per_round():
    calls = []
    figures = {"a.toml": [RunFigures(1.0, 100.0), RunFigures(2.0, 100.0)],
               "b.toml": [RunFigures(0.5, 80.0), RunFigures(1.6, 90.0)]}

    def fake_run(path, steps, warmup, extra):
        calls.append((path, steps, warmup))
        return figures[path].pop(0)

    text = compare_configs(("a.toml", "b.toml"), rounds=2, steps=5, warmup=1, run_one=fake_run, load=0.0)
    assert calls == [("a.toml", 5, 1), ("b.toml", 5, 1), ("a.toml", 5, 1), ("b.toml", 5, 1)]
    assert "B/A step time: min 0.500, median 0.650, max 0.800" in text
    assert "B/A peak RSS: min 0.800, median 0.850, max 0.900" in text
    assert "busy" not in text
    busy = compare_configs(("a.toml", "b.toml"), rounds=1, steps=5, warmup=1,
                           run_one=lambda path, *_: RunFigures(1.0, 1.0), load=1.7)
    assert "warning: the machine was busy before the first run (1-minute load 1.70)" in busy


def test_the_command_measures_two_tiny_configs_in_child_processes(tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('pretrained_model_name_or_path = "tiny:sd1"\nresolution = "64"\nnetwork_dim = 4\n')
    b.write_text('pretrained_model_name_or_path = "tiny:sd1"\nresolution = "64"\nnetwork_dim = 8\n')
    done = subprocess.run([sys.executable, "-m", "lib_trainer", "bench", "--compare-config", str(a), str(b),
                           "--rounds", "1", "--steps", "2", "--warmup", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"A = {a}, B = {b}: 1 rounds of A then B")
    row = next(line for line in lines if line.startswith("1 ")).split()
    assert float(row[1]) > 0 and float(row[2]) > 0 and abs(float(row[3]) - float(row[2]) / float(row[1])) < 2e-3
    assert any(line.startswith("B/A step time: min") for line in lines)


def test_a_missing_config_is_named(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lib_trainer", "bench", "--compare-config", str(tmp_path / "x.toml"),
                           str(tmp_path / "y.toml")], capture_output=True, text=True)
    assert done.returncode == 2 and f"{tmp_path / 'x.toml'} is not a file" in done.stderr


def test_bench_writes_its_figures_as_json(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, "-m", "lib_trainer", "bench", "--pretrained_model_name_or_path", "tiny:sd1",
                           "--resolution", "64", "--steps", "2", "--warmup", "1", "--json", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    steady = {"floor_s", "floor_peak_mb", "training_step_s", "training_peak_mb", "loading_s", "loading_peak_mb"}
    assert steady <= set(figures)  # the phases' figures: test_bench_phases.py
    assert all(figures[key] > 0 for key in steady)
