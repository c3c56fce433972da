"""The bench's per-phase split of a step, the time to the first step, and their figures."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from lib_trainer.bench import BenchResult, Measurement, bench_run_config, report
from lib_trainer.bench_compare import RunFigures, phase_ratio_lines
from lib_trainer.bench_phases import PHASES, PhaseFigures, measure_phases
from lib_trainer.config import TrainConfig
from lib_trainer.progress import STATUS, Progress
from lib_trainer.train.first_step import FirstStepTimes, first_step_line

from conftest import quick_config

BASE = TrainConfig().replace(pretrained_model_name_or_path="tiny:sd1", resolution="64", min_bucket_reso=64,
                             max_bucket_reso=128, train_batch_size=2, network_dim=4, network_alpha=2.0,
                             lr_scheduler="constant", seed=3)


@pytest.fixture(scope="module")
def bundle():
    from lib_trainer.hosts import load_bundle

    return load_bundle("tiny:sd1")


def phases_of(bundle, tmp_path, **changes) -> PhaseFigures:
    run = bench_run_config(BASE.replace(**changes), str(tmp_path), 3)
    return measure_phases(run, bundle, steps=2, warmup=1)


def test_every_phase_of_a_step_is_measured_when_both_parts_train(bundle, tmp_path):
    figures = phases_of(bundle, tmp_path)
    assert set(figures.seconds) == set(PHASES)
    assert all(figures.seconds[name] > 0 for name in PHASES), figures.seconds
    assert figures.step_s >= max(figures.seconds.values())
    assert figures.notes == [] and figures.adapter_overhead_s >= 0


def test_the_text_encoder_backward_is_zero_and_said_when_only_the_unet_trains(bundle, tmp_path):
    figures = phases_of(bundle, tmp_path, network_train_unet_only=True)
    assert figures.seconds["text encoder backward"] == 0
    assert all(figures.seconds[name] > 0 for name in PHASES if name != "text encoder backward")
    assert figures.notes == ["text encoder backward 0: the text encoder does not train (network_train_unet_only)"]


def test_cached_text_encoder_outputs_are_data_not_a_forward(bundle, tmp_path):
    figures = phases_of(bundle, tmp_path, network_train_unet_only=True, cache_text_encoder_outputs=True)
    assert figures.seconds["text encoder forward"] == 0 and figures.seconds["text encoder backward"] == 0
    assert figures.seconds["data"] > 0 and figures.seconds["UNet backward"] > 0
    assert "cache_text_encoder_outputs" in figures.notes[0]


def test_the_split_backward_gives_the_gradients_of_one_backward():
    """The phase pass's two-part backward (UNet to a detached copy, then the text encoder)
    against a plain backward, on a toy 'text encoder' and 'UNet'."""
    torch.manual_seed(0)
    text, unet, x = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1), torch.randn(5, 3)
    unet(text(x)).square().sum().backward()
    plain = [p.grad.clone() for p in (*text.parameters(), *unet.parameters())]
    for p in (*text.parameters(), *unet.parameters()):
        p.grad = None
    encoded = text(x)
    copy = encoded.detach().requires_grad_()
    torch.autograd.backward(unet(copy).square().sum(), inputs=list(unet.parameters()) + [copy])
    assert all(p.grad is None for p in text.parameters())  # the first part stops at the copy
    torch.autograd.backward([encoded], [copy.grad])
    for expected, p in zip(plain, (*text.parameters(), *unet.parameters())):
        torch.testing.assert_close(p.grad, expected)


def fake_result(load_average: float) -> BenchResult:
    seconds = dict.fromkeys(PHASES, 0.1) | {"text encoder backward": 0.0}
    return BenchResult([Measurement("bare forward+backward", 0.5, 100.0), Measurement("training step", 0.8, 120.0),
                        Measurement("loading the model", 2.0, 90.0)], 10.0,
                       PhaseFigures(seconds, 0.5, ["text encoder backward 0: the text encoder does not train "
                                                   "(network_train_unet_only)"], adapter_overhead_s=0.05),
                       {"imports": 1.0, "load": 2.0, "latents": 0.5, "first step": 1.0, "other set-up": 0.2},
                       load_average)


def test_the_report_has_a_line_per_phase_the_first_step_split_and_the_machine_load():
    text = report(BASE, fake_result(0.1))
    lines = text.splitlines()
    for name in (*PHASES, "whole step", "adapter overhead"):
        assert any(line.startswith(f"{name} ") for line in lines), name
    assert next(line for line in lines if line.startswith("UNet backward ")).split()[2:4] == ["0.1000", "0.20"]
    assert next(line for line in lines if line.startswith("adapter overhead")).split()[2:4] == ["0.0500", "0.10"]
    assert "text encoder backward 0: the text encoder does not train (network_train_unet_only)" in lines
    assert ("time to first step 4.7 s: imports 1.0 s, load 2.0 s, latents 0.5 s, compile off, first step 1.0 s, "
            "other set-up 0.2 s") in lines
    assert "machine: 1-minute load 0.10 before the bench began (idle)" in lines
    busy = report(BASE, fake_result(0.9))
    assert "warning: the machine was busy before the bench began (1-minute load 0.90)" in busy


def test_compare_gives_each_phase_its_median_ratio():
    def run(step, unet_backward, text_backward):
        return RunFigures(step, 100.0, {"UNet backward": unet_backward, "text encoder backward": text_backward})

    rows = [(run(1.0, 1.0, 0.0), run(0.5, 0.5, 0.0)), (run(1.0, 1.0, 0.0), run(0.5, 0.7, 0.0)),
            (run(1.0, 1.0, 0.0), run(0.5, 0.9, 0.0))]
    assert phase_ratio_lines(rows) == ["B/A per phase, median of the rounds:", f"  {'UNet backward':<24}0.700",
                                       f"  {'text encoder backward':<24}n/a (0 in A)"]
    assert phase_ratio_lines([(RunFigures(1.0, 1.0), RunFigures(1.0, 1.0))]) == []


def test_a_part_timed_inside_the_first_step_is_not_counted_in_it(monkeypatch):
    clock = iter([0.0, 0.0, 1.0, 3.0, 4.0, 6.0, 10.0])  # begin; load 0-1; step from 3; compile 4-6; done at 10
    monkeypatch.setattr("lib_trainer.train.first_step.time.perf_counter", lambda: next(clock))
    times, said = FirstStepTimes(), []
    with times.part("load"):
        pass
    times.step_started()
    with times.part("compile"):
        pass
    times.step_done(Progress([said.append]))
    times.step_done(Progress([said.append]))  # said once only
    assert [event.text for event in said] == [
        "time to first step 10.0 s: load 1.0 s, compile 2.0 s, first step 5.0 s, other set-up 2.0 s"]
    assert first_step_line({"first step": 1.0}) == "time to first step 1.0 s: compile off, first step 1.0 s"


def test_a_training_run_says_its_time_to_the_first_step_once(small_root, tmp_path):
    from lib_trainer.train.loop import train

    said = []
    train(quick_config(small_root, str(tmp_path), max_train_steps=2),
          progress=Progress([lambda event: said.append(event) if event.kind == STATUS else None]))
    lines = [event for event in said if event.text.startswith("time to first step")]
    assert len(lines) == 1
    parts = lines[0].info["first_step_s"]
    # loaded here, latents cached; not `python -m lib_trainer`, so no imports
    assert set(parts) == {"load", "latents", "first step", "other set-up"}
    assert all(seconds > 0 for seconds in parts.values())
    assert ", compile off, " in lines[0].text


def test_bench_json_has_the_phases_and_the_first_step_parts(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, "-m", "lib_trainer", "bench", "--pretrained_model_name_or_path", "tiny:sd1",
                           "--resolution", "64", "--steps", "2", "--warmup", "1", "--network_train_unet_only",
                           "--json", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert set(figures["phases_s"]) == set(PHASES)
    assert figures["phases_s"]["text encoder backward"] == 0
    assert all(figures["phases_s"][name] > 0 for name in PHASES if name != "text encoder backward")
    # started as `python -m lib_trainer`: the imports count
    assert set(figures["first_step_s"]) == {"imports", "load", "latents", "first step", "other set-up"}
    assert all(value > 0 for value in figures["first_step_s"].values())
    assert figures["phase_step_s"] > 0 and figures["phase_bare_s"] > 0 and figures["adapter_overhead_s"] >= 0
    assert isinstance(figures["busy"], bool) and figures["load_average"] >= 0
    assert "text encoder backward 0: the text encoder does not train (network_train_unet_only)" in done.stdout
