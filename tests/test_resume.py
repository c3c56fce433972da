"""Run state and resume: a stopped run that is resumed ends with exactly the weights of a run
that was never stopped, and resuming something else is refused with what differs."""
from __future__ import annotations

import os

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lib_trainer.config import ConfigError
from lib_trainer.demo_data import TRIGGER, draw_ball
from lib_trainer.progress import Progress
from lib_trainer.train.loop import train
from lib_trainer.train.resume import read_state, read_state_info

from conftest import quick_config, stop_at


@pytest.fixture(scope="module")
def two_bucket_root(tmp_path_factory) -> str:
    """7 pictures in two aspect ratios (two buckets of 8 and 6 examples with 2 repeats): 7 batches
    of 2 an epoch, so with gradient accumulation 2 the last step of an epoch has one batch."""
    root = tmp_path_factory.mktemp("resume_data")
    folder = root / f"2_{TRIGGER} ball"
    folder.mkdir()
    for index in range(7):
        image = draw_ball(96, ((200, 40, 40), (40, 40, 200), (40, 160, 40))[index % 3], (48.0, 40.0 + index), 24.0)
        if index % 2:
            image = image.crop((0, 24, 96, 72))  # 96 x 48: a second bucket
        image.save(folder / f"{index:02d}.png")
        (folder / f"{index:02d}.txt").write_text(f"red ball, tag{index}, simple background, round")
    return str(root)


def _config(root, out, **changes):
    """Everything that draws random numbers is on: shuffled captions, caption and rank dropout,
    flips, per-step VAE encoding (it samples), buckets, gradient accumulation."""
    settings = dict(max_train_epochs=2, max_train_steps=0, train_batch_size=2, gradient_accumulation_steps=2,
                    shuffle_caption=True, caption_dropout_rate=0.2, caption_tag_dropout_rate=0.2, flip_aug=True,
                    cache_latents=False, rank_dropout=0.2, resolution="96", bucket_reso_steps=32,
                    min_bucket_reso=64, max_bucket_reso=128, lr_scheduler="cosine", optimizer_type="AdamW")
    settings.update(changes)
    return quick_config(root, str(out), **settings)


def _weights(path: str) -> dict[str, torch.Tensor]:
    return load_file(path)


@pytest.fixture(scope="module")
def uninterrupted(two_bucket_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    result = train(_config(two_bucket_root, out))
    assert result.steps == 8 and not result.stopped_early
    return result


@pytest.mark.parametrize("stop_step", [3, 4], ids=["mid-epoch", "end-of-epoch"])
def test_resumed_run_equals_uninterrupted_run(two_bucket_root, uninterrupted, tmp_path, stop_step):
    stopped = train(_config(two_bucket_root, tmp_path), progress=stop_at(stop_step))
    assert stopped.stopped_early and stopped.steps == stop_step
    state_dir = os.path.join(tmp_path, f"test-step{stop_step:08d}-state")
    info = read_state_info(state_dir)
    assert info["step"] == stop_step
    # state 3 is inside epoch 1 (after 6 of its 7 batches), state 4 at the start of epoch 2
    assert (info["epoch"], info["batches_done"]) == ((1, 6) if stop_step == 3 else (2, 0))

    resumed = train(_config(two_bucket_root, tmp_path, resume=state_dir))
    assert resumed.steps == 8 and not resumed.stopped_early
    expected, got = _weights(uninterrupted.final_path), _weights(resumed.final_path)
    assert expected.keys() == got.keys()
    different = [key for key in expected if not torch.equal(expected[key], got[key])]
    assert not different, f"{len(different)} of {len(expected)} tensors differ, e.g. {different[:3]}"
    assert resumed.losses == pytest.approx(uninterrupted.losses, abs=0, rel=0)


def test_a_run_that_was_not_resumed_differs(two_bucket_root, uninterrupted, tmp_path):
    """The equality above is not trivial: the same run with another seed ends elsewhere."""
    other = train(_config(two_bucket_root, tmp_path, seed=8))
    assert not torch.equal(*[_weights(p)["lora_unet_mid_block_attentions_0_proj_in.lora_up.weight"]
                             for p in (uninterrupted.final_path, other.final_path)])


def test_save_state_writes_and_prunes_states(two_bucket_root, tmp_path):
    result = train(_config(two_bucket_root, tmp_path, save_state=True, save_every_n_steps=2,
                           save_last_n_steps_state=2))
    states = sorted(entry for entry in os.listdir(tmp_path) if entry.endswith("-state"))
    # step states 2, 4, 6 were written; only the newest two are kept; the end of training has its own
    assert states == ["test-state", "test-step00000004-state", "test-step00000006-state"]
    assert read_state(os.path.join(tmp_path, "test-state")).step == result.steps == 8
    # the WebUI's Lora extension lists every .pt/.ckpt/.safetensors under the Lora folder as a network
    for state in states:
        assert not [f for f in os.listdir(tmp_path / state) if f.endswith((".pt", ".ckpt", ".safetensors"))]


def test_resume_works_where_torch_load_is_replaced_as_in_the_webui(two_bucket_root, uninterrupted, tmp_path,
                                                                 monkeypatch):
    """The WebUI swaps torch.load for its safe unpickler, which refuses current torch files."""
    train(_config(two_bucket_root, tmp_path), progress=stop_at(3))
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: None)
    resumed = train(_config(two_bucket_root, tmp_path, resume=os.path.join(tmp_path, "test-step00000003-state")))
    expected, got = _weights(uninterrupted.final_path), _weights(resumed.final_path)
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def test_resume_refuses_another_dataset_or_network(two_bucket_root, tmp_path, tmp_path_factory):
    train(_config(two_bucket_root, tmp_path), progress=stop_at(2))
    state_dir = os.path.join(tmp_path, "test-step00000002-state")
    with pytest.raises(ConfigError, match="network.*network_dim"):
        train(_config(two_bucket_root, tmp_path, resume=state_dir, network_dim=8))
    other = tmp_path_factory.mktemp("other") / f"2_{TRIGGER} ball"
    other.mkdir(parents=True)
    for index in range(3):
        Image.new("RGB", (64, 64), (index * 60, 0, 0)).save(other / f"{index}.png")
    with pytest.raises(ConfigError, match="dataset"):
        train(_config(str(other.parent), tmp_path, resume=state_dir))
    with pytest.raises(ConfigError, match="train_batch_size: saved 2, now 1"):
        train(_config(two_bucket_root, tmp_path, resume=state_dir, train_batch_size=1,
                      gradient_accumulation_steps=4))


def test_resume_allows_longer_runs_and_says_what_changed(two_bucket_root, tmp_path):
    train(_config(two_bucket_root, tmp_path), progress=stop_at(2))
    statuses = []
    progress = Progress([lambda event: statuses.append(event.text)])
    result = train(_config(two_bucket_root, tmp_path, resume=os.path.join(tmp_path, "test-step00000002-state"),
                           max_train_epochs=3, learning_rate=5e-4), progress=progress)
    assert result.steps == 12
    assert any("learning_rate changed: 0.001 -> 0.0005" in text for text in statuses)
    assert any("max_train_epochs changed: 2 -> 3" in text for text in statuses)


def test_a_stopped_run_says_how_to_resume(two_bucket_root, tmp_path):
    statuses = []
    progress = stop_at(1)
    progress.sinks.append(lambda event: statuses.append(event.text))
    train(_config(two_bucket_root, tmp_path), progress=progress)
    state_dir = os.path.join(tmp_path, "test-step00000001-state")
    assert any(f'--resume "{state_dir}"' in text for text in statuses)
    assert os.path.isfile(os.path.join(state_dir, "config.toml"))
    # the stopped run's config sits beside its own file, not over a finished run's test.toml
    assert os.path.isfile(os.path.join(tmp_path, "test-step00000001.toml"))
    assert not os.path.exists(os.path.join(tmp_path, "test.toml"))


def test_resume_from_a_folder_without_state_is_a_clear_error(two_bucket_root, tmp_path):
    with pytest.raises(ConfigError, match="no train_state.bin"):
        train(_config(two_bucket_root, tmp_path, resume=str(tmp_path)))


def test_the_printed_command_resumes_the_run_from_the_command_line(two_bucket_root, uninterrupted, tmp_path):
    import shlex

    from lib_trainer.__main__ import main

    statuses = []
    progress = stop_at(5)
    progress.sinks.append(lambda event: statuses.append(event.text))
    train(_config(two_bucket_root, tmp_path), progress=progress)
    command = next(text for text in statuses if text.startswith("to continue this run: "))
    argv = shlex.split(command.split("python -m lib_trainer ", 1)[1])
    assert main(argv) == 0
    expected, got = _weights(uninterrupted.final_path), _weights(os.path.join(tmp_path, "test.safetensors"))
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def test_a_crash_in_the_middle_of_gradient_accumulation_saves_a_resumable_state(two_bucket_root, uninterrupted,
                                                                                 tmp_path, monkeypatch):
    """The state is the one of the last optimizer step (2), not of the half-accumulated step 3."""
    from lib_trainer.train import loop

    real, calls = loop.batch_loss, []

    def crash_at_sixth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # the second batch of step 3
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "batch_loss", crash_at_sixth_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_config(two_bucket_root, tmp_path))
    monkeypatch.setattr(loop, "batch_loss", real)
    state_dir = os.path.join(tmp_path, "test-step00000002-state")
    assert read_state_info(state_dir)["step"] == 2
    resumed = train(_config(two_bucket_root, tmp_path, resume=state_dir))
    expected, got = _weights(uninterrupted.final_path), _weights(resumed.final_path)
    assert all(torch.equal(expected[key], got[key]) for key in expected)
