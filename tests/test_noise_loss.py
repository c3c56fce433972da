"""Noise, timesteps and loss options (issue 14): each option's effect on the pure functions,
on one batch's loss, in the config, the CLI and the form, and one short run with several on."""
from __future__ import annotations

import argparse
import json
import math
import random
from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from PIL import Image

from conftest import quick_config
from lib_trainer.cli_args import add_config_arguments, config_from_args
from lib_trainer.config import TrainConfig
from lib_trainer.config_import import read_config_file
from lib_trainer.dataset.plan import make_plan
from lib_trainer.errors import InvalidInput
from lib_trainer.formats.lora_file import load_lora, read_metadata
from lib_trainer.hosts.bundle import scaled_linear_alphas_cumprod
from lib_trainer.train import losses
from lib_trainer.train.loop import train
from lib_trainer.train.noise import perturbed_noise, pyramid_noise, sample_noise, sample_timesteps
from lib_trainer.train.step_loss import batch_loss, example_weights, loss_option_notes, loss_option_refusals
from lib_trainer.ui.form import GROUP_TITLES, ConfigForm

SCHEDULE = scaled_linear_alphas_cumprod()  # SD's 1000-step schedule


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def block_means_variance(noise: torch.Tensor, block: int) -> float:
    """Variance of the means of block x block patches: the noise's energy at low frequencies."""
    return torch.nn.functional.avg_pool2d(noise, block).var().item()


# --- noise ---


def test_multires_noise_has_low_frequency_energy_and_unit_std():
    white = torch.randn(16, 4, 64, 64, generator=generator(0))
    # 16x16 means of white unit noise have variance 1/256; the coarse layers add to it
    assert block_means_variance(white, 16) == pytest.approx(1 / 256, rel=0.15)
    for discount, more in ((0.3, 1.3), (0.8, 20)):  # kohya's default 0.3 is a mild effect
        pyramid = pyramid_noise(white, iterations=6, discount=discount, generator=generator(1))
        assert pyramid.std().item() == pytest.approx(1.0, abs=1e-5)
        assert block_means_variance(pyramid, 16) > more * block_means_variance(white, 16)
    assert torch.equal(pyramid_noise(white, 6, 0.3, generator(1)), pyramid_noise(white, 6, 0.3, generator(1)))


def test_noise_offset_random_strength_draws_the_offset_size_per_step():
    shape = torch.Size([256, 4, 8, 8])

    def offset_std(seed, random_strength):
        plain = sample_noise(shape, 0.0, generator(seed))
        noisy = sample_noise(shape, 0.5, generator(seed), random_strength=random_strength)
        return (noisy - plain)[:, :, 0, 0].std().item()  # one offset per image and channel

    fixed = [offset_std(seed, False) for seed in range(6)]
    drawn = [offset_std(seed, True) for seed in range(6)]
    assert all(0.45 < s < 0.55 for s in fixed)  # 0.5 x a standard normal
    assert all(s < 0.55 for s in drawn) and max(drawn) - min(drawn) > 0.1  # 0.5 x u, u in [0, 1) each step


def test_adaptive_noise_scale_grows_the_offset_with_the_channel_mean():
    shape = torch.Size([512, 4, 8, 8])
    latents = torch.zeros(shape)
    latents[:, 0] = 2.0  # channel 0 far from zero, the others centred
    plain = sample_noise(shape, 0.0, generator(3))

    def channel_offsets(scale):
        noisy = sample_noise(shape, 0.1, generator(3), latents=latents, adaptive_scale=scale)
        return (noisy - plain)[:, :, 0, 0].std(dim=0)

    offsets = channel_offsets(0.5)  # 0.1 + 0.5 x |2| = 1.1 on channel 0, 0.1 elsewhere
    assert offsets[0].item() == pytest.approx(1.1, rel=0.1)
    assert offsets[1:].tolist() == pytest.approx([0.1] * 3, rel=0.15)
    # a negative scale shrinks it, never below zero (kohya clamps)
    assert channel_offsets(-1.0)[0].item() == 0.0


def test_ip_noise_gamma_perturbs_the_input_only():
    noise = torch.randn(64, 4, 16, 16, generator=generator(0))
    extra = perturbed_noise(noise, 0.1, False, generator(1)) - noise
    assert extra.std().item() == pytest.approx(0.1, rel=0.05)
    drawn = [(perturbed_noise(noise, 0.1, True, generator(seed)) - noise).std().item() for seed in range(5)]
    assert all(s < 0.105 for s in drawn) and max(drawn) - min(drawn) > 0.01

    bundle = RecordingBundle()
    config = TrainConfig(ip_noise_gamma=0.1)
    plain_loss = run_batch(TrainConfig(), bundle)
    plain_input = bundle.inputs[-1]
    perturbed_loss = run_batch(config, bundle)
    # the target (here the whole loss, the prediction being zero) is the plain noise's
    assert perturbed_loss == plain_loss
    abar = SCHEDULE[bundle.timesteps[-1]].reshape(-1, 1, 1, 1)
    added = (bundle.inputs[-1] - plain_input) / (1 - abar).sqrt()
    assert added.std().item() == pytest.approx(0.1, rel=0.1)


def test_timesteps_are_drawn_from_min_to_below_max():
    steps = sample_timesteps(20000, 1000, "cpu", generator(0), min_timestep=200, max_timestep=300)
    assert steps.min().item() == 200 and steps.max().item() == 299
    assert torch.equal(sample_timesteps(8, 1000, "cpu", generator(0), 500, 500), torch.full((8,), 500))
    everything = sample_timesteps(20000, 1000, "cpu", generator(0))
    assert everything.min().item() == 0 and everything.max().item() == 999
    with pytest.raises(ValueError):
        sample_timesteps(2, 1000, "cpu", generator(0), 0, 1001)


def test_timestep_range_reaches_the_batch():
    bundle = RecordingBundle()
    run_batch(TrainConfig(min_timestep=900, max_timestep=910), bundle, size=32)
    assert all(900 <= t < 910 for t in bundle.timesteps[-1].tolist())


# --- loss functions and Huber schedules ---


def test_huber_is_l2_for_small_errors_and_l1_like_for_large_ones():
    target = torch.zeros(3, dtype=torch.float64)  # float64: sqrt(d^2 + c^2) - c cancels for tiny d
    small, large = torch.full((3,), 1e-3, dtype=torch.float64), torch.full((3,), 100.0, dtype=torch.float64)
    c = torch.tensor([0.1])
    assert losses.elementwise_loss(small, target, "huber", c).tolist() == pytest.approx(
        losses.elementwise_loss(small, target, "l2").tolist(), rel=1e-3)
    # 2c(sqrt(d^2 + c^2) - c) -> 2c|d| for |d| >> c
    assert losses.elementwise_loss(large, target, "huber", c).tolist() == pytest.approx([2 * 0.1 * 100.0] * 3, rel=1e-3)
    # smooth_l1 is the same curve over c: d^2 / c small, 2|d| large
    assert losses.elementwise_loss(small, target, "smooth_l1", c).tolist() == pytest.approx([1e-6 / 0.1] * 3, rel=1e-3)
    assert losses.elementwise_loss(large, target, "smooth_l1", c).tolist() == pytest.approx([200.0] * 3, rel=1e-3)
    assert losses.elementwise_loss(large, target, "l1").tolist() == [100.0] * 3
    # one threshold per example
    two = losses.elementwise_loss(torch.ones(2, 1, 1, 1), torch.zeros(2, 1, 1, 1), "huber", torch.tensor([0.1, 1.0]))
    assert two.flatten().tolist() == pytest.approx([0.2 * (math.sqrt(1.01) - 0.1), 2 * (math.sqrt(2) - 1)])


def test_huber_schedules_by_hand():
    alphas = torch.tensor([0.8, 0.5, 0.2, 0.1])
    t = torch.tensor([0, 1, 2, 3])
    c = 0.1
    # snr: sigma = sqrt((1 - abar) / abar); (1 - c) / (1 + sigma)^2 + c; huber_scale unused
    expected = [(1 - c) / (1 + math.sqrt((1 - a) / a)) ** 2 + c for a in (0.8, 0.5, 0.2, 0.1)]
    assert losses.huber_thresholds(t, alphas, "snr", c, 2.0).tolist() == pytest.approx(expected)
    assert expected[1] == pytest.approx(0.9 / 4 + 0.1)  # abar 0.5: sigma 1
    # exponential over T = 1000 steps: scale at t=0, sqrt(c) x scale half way, c x scale at t=T
    steps = torch.tensor([0, 500, 1000])
    assert losses.huber_thresholds(steps, SCHEDULE, "exponential", c, 2.0).tolist() == pytest.approx(
        [2.0, 2.0 * math.sqrt(c), 2.0 * c])
    assert losses.huber_thresholds(t, alphas, "constant", c, 2.0).tolist() == pytest.approx([0.2] * 4)


def test_loss_type_changes_the_batch_loss():
    bundle = RecordingBundle()  # predicts zeros: l2 is mean(noise^2), l1 mean(|noise|)
    l2 = run_batch(TrainConfig(), bundle, size=64)
    l1 = run_batch(TrainConfig(loss_type="l1"), bundle, size=64)
    huber = run_batch(TrainConfig(loss_type="huber", huber_schedule="constant", huber_c=0.1), bundle, size=64)
    assert l2 == pytest.approx(1.0, rel=0.05) and l1 == pytest.approx(math.sqrt(2 / math.pi), rel=0.05)
    noise = first_noise(2, 64)
    assert huber == pytest.approx((0.2 * ((noise ** 2 + 0.01).sqrt() - 0.1)).mean().item(), rel=1e-5)


# --- per-example weights ---


def test_debiased_weights_are_one_over_sqrt_snr_capped_at_1000():
    alphas = torch.tensor([0.99999, 0.5, 0.2])  # SNR 99999 (capped to 1000), 1, 0.25
    t = torch.tensor([0, 1, 2])
    assert losses.debiased_weights(t, alphas, "epsilon").tolist() == pytest.approx(
        [1 / math.sqrt(1000), 1.0, 2.0], rel=1e-4)
    assert losses.debiased_weights(t, alphas, "v_prediction").tolist() == pytest.approx(
        [1 / 1001, 0.5, 0.8], rel=1e-4)


def test_v_prediction_scalings_by_hand():
    alphas = torch.tensor([0.5, 0.2])  # SNR 1, 0.25
    t = torch.tensor([0, 1])
    # scale_v_pred_loss_like_noise_pred: SNR / (SNR + 1)
    assert losses.v_to_noise_scale(t, alphas).tolist() == pytest.approx([0.5, 0.2])
    # v_pred_like_loss w: loss + w x loss / scale
    assert losses.v_pred_like_factors(t, alphas, 0.2).tolist() == pytest.approx([1 + 0.2 / 0.5, 1 + 0.2 / 0.2])


@pytest.mark.parametrize("changes, expected", [
    (dict(debiased_estimation_loss=True), lambda t, p: losses.debiased_weights(t, SCHEDULE, p)),
    (dict(scale_v_pred_loss_like_noise_pred=True), lambda t, p: losses.v_to_noise_scale(t, SCHEDULE)),
    (dict(v_pred_like_loss=0.3), lambda t, p: losses.v_pred_like_factors(t, SCHEDULE, 0.3)),
    (dict(min_snr_gamma=5.0, debiased_estimation_loss=True),  # kohya multiplies them
     lambda t, p: losses.min_snr_weights(t, SCHEDULE, 5.0, p) * losses.debiased_weights(t, SCHEDULE, p)),
])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_each_weight_option_multiplies_the_example_weights(changes, expected, prediction_type):
    batch = [SimpleNamespace(loss_weight=1.0), SimpleNamespace(loss_weight=0.5)]
    t = torch.tensor([10, 700])
    plain = example_weights(TrainConfig(), batch, t, SCHEDULE, prediction_type)
    assert plain.tolist() == [1.0, 0.5]
    weighted = example_weights(TrainConfig(**changes), batch, t, SCHEDULE, prediction_type)
    assert weighted.tolist() == pytest.approx((plain * expected(t, prediction_type)).tolist())
    assert not torch.allclose(weighted, plain)


def test_prior_loss_weight_scales_the_regularisation_examples_loss(small_root, tmp_path):
    reg = tmp_path / "reg" / "1_ball"
    reg.mkdir(parents=True)
    Image.new("RGB", (64, 64), (90, 90, 90)).save(reg / "r.png")

    def loss_and_weights(weight):
        config = quick_config(small_root, str(tmp_path / "out"), reg_data_dir=str(tmp_path / "reg"),
                              prior_loss_weight=weight)
        examples = make_plan(config).training_set.examples
        batch = [next(e for e in examples if not e.item.concept.is_reg),
                 next(e for e in examples if e.item.concept.is_reg)]
        return run_batch(config, RecordingBundle(), batch=batch), [e.loss_weight for e in batch]

    plain, weights = loss_and_weights(1.0)
    assert weights == [1.0, 1.0]
    weighted, weights = loss_and_weights(0.25)
    assert weights == [1.0, 0.25]
    # kohya: each example's mean loss times its weight, then the batch mean; zero predictions
    # make an example's loss the mean of its squared noise, drawn first from the seeded generator
    noise = first_noise(2, 8)
    per_example = noise.pow(2).mean(dim=(1, 2, 3))
    assert plain == pytest.approx(per_example.mean().item(), rel=1e-6)
    assert weighted == pytest.approx(((per_example[0] + 0.25 * per_example[1]) / 2).item(), rel=1e-6)


# --- config, model checks, CLI and form ---


@pytest.mark.parametrize("changes, words", [
    (dict(adaptive_noise_scale=0.01), "adaptive_noise_scale adds to noise_offset, which is 0"),
    (dict(min_timestep=500, max_timestep=400), "min_timestep=500 is above max_timestep=400"),
    (dict(min_timestep=999, max_timestep=999, loss_type="l1"), None),  # one fixed timestep, as kohya
    (dict(loss_type="huber", huber_c=0.0), "huber_c must be above 0 with loss_type=huber"),
    (dict(loss_type="smooth_l1", huber_c=-1.0), "huber_c=-1.0 must be at least 0.0"),
    (dict(v_pred_like_loss=0.2, v_parameterization=True), "v_pred_like_loss is for noise-prediction models"),
    (dict(loss_type="l3"), "loss_type='l3' is not one of: l2, l1, huber, smooth_l1"),
    (dict(max_timestep=1001), "max_timestep=1001 must be at most 1000"),
])
def test_config_problems(changes, words):
    problems = TrainConfig(**changes).problems()
    assert (problems == []) if words is None else any(words in p for p in problems), problems


def test_options_the_model_cannot_use_are_refused_and_idle_ones_noted():
    assert loss_option_refusals(TrainConfig(scale_v_pred_loss_like_noise_pred=True), "v_prediction") == []
    assert "scale_v_pred_loss_like_noise_pred is for v-prediction models" in \
        loss_option_refusals(TrainConfig(scale_v_pred_loss_like_noise_pred=True), "epsilon")[0]
    assert "already predicts v" in loss_option_refusals(TrainConfig(v_pred_like_loss=0.1), "v_prediction")[0]
    assert loss_option_notes(TrainConfig()) == []
    notes = loss_option_notes(TrainConfig(huber_c=0.2, multires_noise_discount=0.5,
                                          ip_noise_gamma_random_strength=True))
    assert notes == ["multires_noise_discount=0.5 has no effect without multires_noise_iterations",
                     "ip_noise_gamma_random_strength=True has no effect without ip_noise_gamma",
                     "huber_c=0.2 has no effect without loss_type=huber or smooth_l1"]
    assert loss_option_notes(TrainConfig(loss_type="huber", huber_scale=2.0)) == [
        "huber_scale has no effect with huber_schedule=snr (as in kohya)"]


def test_flags_and_form_set_the_options():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from_args(parser.parse_args(
        ["--loss_type", "huber", "--huber_schedule", "exponential", "--min_timestep", "100",
         "--multires_noise_iterations", "6", "--ip_noise_gamma", "0.1", "--debiased_estimation_loss"]))
    assert (config.loss_type, config.huber_schedule, config.min_timestep, config.multires_noise_iterations,
            config.ip_noise_gamma, config.debiased_estimation_loss) == ("huber", "exponential", 100, 6, 0.1, True)
    assert GROUP_TITLES["noise"] == "Noise, timesteps and loss"
    with gr.Blocks():
        form = ConfigForm()
        form.build_expert(TrainConfig())
    shown = [update["value"] for update in form.updates(config)]
    read, problems = form.read(shown)
    assert problems == [] and read == config


@pytest.mark.parametrize("kind, expected", [
    ("Original", dict(noise_offset=0.05, adaptive_noise_scale=0.01, multires_noise_iterations=0)),
    ("Multires", dict(noise_offset=0.0, adaptive_noise_scale=0.0, multires_noise_iterations=8)),
])
def test_kohya_ss_gui_noise_offset_type_passes_only_the_chosen_kind(tmp_path, kind, expected):
    # the GUI saves both kinds' fields and gives sd-scripts only those of noise_offset_type
    path = tmp_path / "gui.json"
    path.write_text(json.dumps({"LoRA_type": "Standard", "noise_offset_type": kind, "noise_offset": 0.05,
                                "adaptive_noise_scale": 0.01, "multires_noise_iterations": 8,
                                "multires_noise_discount": 0.2}))
    config, _ = read_config_file(str(path), TrainConfig())
    assert {name: getattr(config, name) for name in expected} == expected
    assert config.multires_noise_discount == (0.2 if kind == "Multires" else 0.3)


# --- one short run ---


def test_a_run_with_the_noise_and_loss_options_trains_and_records_them(small_root, tmp_path):
    config = quick_config(small_root, str(tmp_path), max_train_steps=3, noise_offset=0.05,
                          noise_offset_random_strength=True, adaptive_noise_scale=0.01, multires_noise_iterations=6,
                          multires_noise_discount=0.3, ip_noise_gamma=0.1, ip_noise_gamma_random_strength=True,
                          min_timestep=100, max_timestep=900, loss_type="huber", huber_schedule="snr",
                          debiased_estimation_loss=True, v_pred_like_loss=0.1)
    result = train(config)
    assert len(result.losses) == 3 and all(math.isfinite(loss) for loss in result.losses)
    assert all(torch.isfinite(t).all() for t in load_lora(result.final_path).values())
    metadata = read_metadata(result.final_path)
    assert {key: metadata[key] for key in (
        "ss_multires_noise_iterations", "ss_multires_noise_discount", "ss_ip_noise_gamma", "ss_adaptive_noise_scale",
        "ss_noise_offset_random_strength", "ss_ip_noise_gamma_random_strength", "ss_min_timestep",
        "ss_max_timestep", "ss_loss_type", "ss_huber_schedule", "ss_huber_c", "ss_huber_scale",
        "ss_debiased_estimation")} == {
        "ss_multires_noise_iterations": "6", "ss_multires_noise_discount": "0.3", "ss_ip_noise_gamma": "0.1",
        "ss_adaptive_noise_scale": "0.01", "ss_noise_offset_random_strength": "True",
        "ss_ip_noise_gamma_random_strength": "True", "ss_min_timestep": "100", "ss_max_timestep": "900",
        "ss_loss_type": "huber", "ss_huber_schedule": "snr", "ss_huber_c": "0.1", "ss_huber_scale": "1.0",
        "ss_debiased_estimation": "True"}


def test_a_v_prediction_option_on_a_noise_model_is_refused_before_training(small_root, tmp_path):
    with pytest.raises(InvalidInput, match="scale_v_pred_loss_like_noise_pred"):
        train(quick_config(small_root, str(tmp_path), scale_v_pred_loss_like_noise_pred=True))
    assert not list(tmp_path.glob("*.safetensors"))


# --- helpers: one batch through batch_loss with a model that predicts zeros ---


class RecordingBundle:
    """Predicts zeros and keeps what it was given: the loss is then the target's alone."""
    prediction_type = "epsilon"

    def __init__(self):
        self.inputs, self.timesteps = [], []

    def predict(self, noisy, timesteps, conditioning, sizes):
        self.inputs.append(noisy.clone())
        self.timesteps.append(timesteps.clone())
        return torch.zeros_like(noisy)


def example(loss_weight: float) -> SimpleNamespace:
    """A stand-in example: its loss weight, from a folder of no dataset config subset."""
    return SimpleNamespace(loss_weight=loss_weight, item=SimpleNamespace(concept=SimpleNamespace(subset=None)))


def run_batch(config, bundle, batch=None, size=8) -> float:
    batch = batch or [example(1.0), example(1.0)]
    x0 = torch.zeros(len(batch), 4, size, size)  # zero latents: the noisy input is sqrt(1 - abar) x noise
    latents = lambda batch, flips, rng: (x0, None, None)  # noqa: E731  (no sizes, no loss masks)
    prompts = lambda batch, rng: None  # noqa: E731
    loss = batch_loss(config, bundle, batch, latents, prompts, SCHEDULE, torch.device("cpu"), random.Random(0),
                      generator(0))
    return loss.item()


def first_noise(batch: int, size: int) -> torch.Tensor:
    """The noise batch_loss draws first from generator(0) (no offset): an epsilon model's target."""
    return torch.randn(batch, 4, size, size, generator=generator(0))
