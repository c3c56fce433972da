"""mixed_precision=auto: the precision the device is fast at, explicit choices kept and
named when they are slower there."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from lib_trainer.config import TrainConfig
from lib_trainer.progress import STATUS, Progress
from lib_trainer.train import auto_precision
from lib_trainer.train.auto_precision import best_precision, precision_notes, resolve_precision
from lib_trainer.train.loop import train
from lib_trainer.ui.presets import PRESETS

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def unpinned(monkeypatch):
    """auto as a user's machine sees it, with the CPU's flags and probe given by the test."""
    monkeypatch.delenv(auto_precision.PIN_VARIABLE, raising=False)
    best_precision.cache_clear()
    yield monkeypatch
    best_precision.cache_clear()


def test_cpu_without_bf16_units_trains_in_fp32_without_probing(unpinned):
    unpinned.setattr(auto_precision, "cpu_has_bf16_units", lambda: False)
    unpinned.setattr(auto_precision, "cpu_bf16_time_ratio", lambda: pytest.fail("no probe without bf16 units"))
    assert resolve_precision("auto", CPU) == "no"
    assert "no bf16 units" in precision_notes("auto", CPU)[0]


@pytest.mark.parametrize("ratio, expected", [(0.55, "bf16"), (0.95, "no"), (30.0, "no")])
def test_cpu_with_bf16_units_follows_the_probe(unpinned, ratio, expected):
    unpinned.setattr(auto_precision, "cpu_has_bf16_units", lambda: True)
    unpinned.setattr(auto_precision, "cpu_bf16_time_ratio", lambda: ratio)
    assert resolve_precision("auto", CPU) == expected
    assert f"{ratio:.2f}x" in best_precision("cpu").reason


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_cuda_picks_bf16_where_the_gpu_has_it_else_fp16(unpinned, has_bf16, expected):
    unpinned.setattr(torch.cuda, "is_available", lambda: True)
    unpinned.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: has_bf16)
    assert resolve_precision("auto", CUDA) == expected


def test_an_explicit_choice_is_kept_and_named_when_slower(unpinned):
    unpinned.setattr(auto_precision, "cpu_has_bf16_units", lambda: False)
    assert resolve_precision("bf16", CPU) == "bf16"
    note, = precision_notes("bf16", CPU)
    assert "mixed_precision=bf16 is kept, but it is slower here than no" in note
    assert precision_notes("no", CPU) == []
    unpinned.setattr(torch.cuda, "is_available", lambda: True)
    unpinned.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert "slower here than bf16" in precision_notes("no", CUDA)[0]
    assert precision_notes("fp16", CUDA) == []  # about as fast as bf16 on a GPU with both


def test_the_probe_times_bf16_against_fp32():
    assert auto_precision.cpu_bf16_time_ratio() > 0


def test_pinned_auto_is_what_the_test_suite_runs():
    assert best_precision("cpu").precision == "no"
    assert precision_notes("bf16", CPU) == []  # a pin is not a measurement: nothing to compare


def test_presets_let_the_device_choose():
    assert {preset["mixed_precision"] for preset in PRESETS.values() if "mixed_precision" in preset} == {"auto"}


def test_a_run_with_auto_records_and_says_the_precision_it_used(small_root, tmp_path):
    config = TrainConfig(pretrained_model_name_or_path="tiny:sd1", train_data_dir=small_root,
                         output_dir=str(tmp_path), resolution="64", max_train_steps=1, network_dim=2,
                         save_every_n_epochs=0)
    assert config.mixed_precision == "auto"
    statuses = []
    progress = Progress([lambda event: statuses.append(event.text) if event.kind == STATUS else None])
    result = train(config, progress=progress)
    with safe_open(result.final_path, "pt") as handle:
        assert handle.metadata()["ss_mixed_precision"] == "no"
    assert any(line.startswith("mixed_precision=auto: no") for line in statuses)
