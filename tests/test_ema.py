"""The EMA of the trained weights: the average it keeps, the -ema files beside every save, resume
with it, and sample images drawn with it."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lib_trainer.config import TrainConfig
from lib_trainer.train.ema import WeightAverage, ema_path
from lib_trainer.train.loop import train

from conftest import quick_config, stop_at


def _metadata(path: str) -> dict:
    with safe_open(path, "pt") as handle:
        return handle.metadata()


@pytest.mark.parametrize("start, every", [(0, 1), (2, 3)])
def test_the_average_follows_the_formula_from_its_start(start, every):
    layer = torch.nn.Linear(3, 2)
    average = WeightAverage(layer, 0.8, every, start)
    expected, trajectory = None, [layer.weight.detach().clone()]
    if start == 0:
        expected = trajectory[0].clone()
    for step in range(1, 9):
        with torch.no_grad():
            layer.weight.mul_(1.5).add_(0.1 * step)
        weight = layer.weight.detach().clone()
        average.after_step(step)
        if expected is None:
            expected = weight.clone() if step >= start else None
        elif (step - start) % every == 0:
            expected = 0.8 * expected + 0.2 * weight
        assert average.started == (expected is not None)
    assert torch.allclose(average.average[0], expected, rtol=1e-6, atol=0)
    assert not torch.allclose(average.average[0], layer.weight)


def test_the_average_stands_in_and_the_weights_come_back_bit_for_bit():
    layer = torch.nn.Linear(3, 2)
    own = layer.weight.detach().clone()
    average = WeightAverage(layer, 0.5, 1, 0)
    with torch.no_grad():
        layer.weight.add_(1.0)
    average.after_step(1)
    moved = layer.weight.detach().clone()
    with average.applied():
        assert torch.allclose(layer.weight, (own + moved) / 2)
    assert torch.equal(layer.weight, moved)


@pytest.fixture(scope="module")
def ema_run(small_root, tmp_path_factory):
    """4 steps with a file after each (fp32), the average from the weights after step 1."""
    out = tmp_path_factory.mktemp("ema_run")
    config = quick_config(small_root, str(out), ema_decay=0.7, ema_start_step=1, save_every_n_steps=1)
    return train(config), str(out)


def test_the_ema_file_is_the_average_of_the_trajectory(ema_run):
    result, out = ema_run
    files = [os.path.join(out, f"test-step{step:08d}.safetensors") for step in (1, 2, 3)] + [result.final_path]
    trajectory = [load_file(path) for path in files]
    expected = dict(trajectory[0])
    for weights in trajectory[1:]:
        expected = {key: 0.7 * expected[key] + 0.3 * weights[key] if key.endswith("weight") else weights[key]
                    for key in expected}
    got = load_file(ema_path(result.final_path))
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.allclose(got[key], expected[key], rtol=1e-5, atol=1e-8), key


def test_an_ema_file_is_written_beside_every_save_and_differs(ema_run):
    result, out = ema_run
    names = sorted(os.listdir(out))
    for step in (1, 2, 3):
        assert f"test-step{step:08d}-ema.safetensors" in names
    assert "test-ema.safetensors" in names
    main, ema = load_file(result.final_path), load_file(ema_path(result.final_path))
    assert not torch.equal(main["lora_unet_mid_block_attentions_0_proj_in.lora_up.weight"],
                           ema["lora_unet_mid_block_attentions_0_proj_in.lora_up.weight"])
    meta, ema_meta = _metadata(result.final_path), _metadata(ema_path(result.final_path))
    assert ema_meta.pop("ss_ema_decay") == "0.7" and "ss_ema_decay" not in meta
    for key in ("sshs_model_hash", "sshs_legacy_hash", "ss_training_finished_at"):
        meta.pop(key, None), ema_meta.pop(key, None)
    assert ema_meta == meta


def test_no_ema_file_before_the_average_starts(small_root, tmp_path):
    train(quick_config(small_root, str(tmp_path), max_train_steps=2, ema_decay=0.9, ema_start_step=3,
                       save_every_n_steps=1))
    assert not [name for name in os.listdir(tmp_path) if name.endswith("-ema.safetensors")]


def test_a_resumed_run_with_ema_equals_an_uninterrupted_one(small_root, tmp_path):
    """With LoRA+ and block lr weights too: their extra optimizer groups resume as well."""
    settings = dict(max_train_steps=5, ema_decay=0.8, ema_update_every=2, rank_dropout=0.2, shuffle_caption=True,
                    loraplus_lr_ratio=4.0, network_args=["up_lr_weight=linear+0.5"])
    whole = train(quick_config(small_root, str(tmp_path / "whole"), **settings))
    stopped = train(quick_config(small_root, str(tmp_path / "parts"), **settings), progress=stop_at(3))
    assert stopped.stopped_early and stopped.steps == 3
    resumed = train(quick_config(small_root, str(tmp_path / "parts"), resume=str(tmp_path / "parts" /
                                                                                 "test-step00000003-state"),
                                 **settings))
    for path_whole, path_resumed in ((whole.final_path, resumed.final_path),
                                     (ema_path(whole.final_path), ema_path(resumed.final_path))):
        expected, got = load_file(path_whole), load_file(path_resumed)
        assert [key for key in expected if not torch.equal(expected[key], got[key])] == [], path_resumed


def test_ema_for_samples_draws_with_the_average(small_root, tmp_path, monkeypatch):
    from PIL import Image

    from lib_trainer.train import sampling

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ltdemo ball --s 1\n")
    makers, drawn_with = [], []
    original_init = sampling.SampleMaker.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        makers.append(self)

    def backend_for(bundle):
        def draw(prompt, sampler, seed):  # what the network holds while it draws
            drawn_with.append([p.detach().clone() for p in makers[-1].network.parameters()])
            return Image.new("RGB", (8, 8))
        return draw

    monkeypatch.setattr(sampling.SampleMaker, "__init__", init)
    monkeypatch.setattr(sampling, "sample_backend", backend_for)
    for for_samples in (True, False):
        drawn_with.clear()
        train(quick_config(small_root, str(tmp_path / str(for_samples)), max_train_steps=2, ema_decay=0.5,
                           sample_every_n_steps=2, sample_prompts=str(prompts), ema_for_samples=for_samples))
        weights = [p.detach() for p in makers[-1].network.parameters()]  # after step 2, the sampled one
        assert len(drawn_with) == 1
        if for_samples:
            assert all(torch.equal(d, a) for d, a in zip(drawn_with[0], makers[-1].ema.average))
            assert not all(torch.equal(d, w) for d, w in zip(drawn_with[0], weights))
        else:
            assert all(torch.equal(d, w) for d, w in zip(drawn_with[0], weights))


def test_ema_options_are_checked_and_in_the_ui():
    assert any("ema_decay=1.0 must be below 1" in p for p in TrainConfig().replace(ema_decay=1.0).problems())
    assert any("ema_for_samples needs ema_decay" in p for p in TrainConfig().replace(ema_for_samples=True).problems())
    import gradio as gr

    from lib_trainer.ui.form import ConfigForm

    with gr.Blocks():
        form = ConfigForm()
        form.build_expert(TrainConfig())
    config = TrainConfig().replace(ema_decay=0.999, ema_update_every=2, ema_start_step=10, ema_for_samples=True)
    read, problems = form.read([update["value"] for update in form.updates(config)])
    assert problems == [] and read == config
