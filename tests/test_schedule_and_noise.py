"""Learning-rate schedules and the diffusion maths of a step, against hand-worked numbers."""
from __future__ import annotations

import math

import pytest
import torch

from lib_trainer.train.losses import min_snr_weights
from lib_trainer.train.noise import add_noise, prediction_target, sample_noise, sample_timesteps
from lib_trainer.train.schedulers import SCHEDULES, effective_scheduler, lr_factor, make_scheduler, warmup_steps

# --- schedules (100 steps, no warm-up unless said) ---


@pytest.mark.parametrize("name, step, expected", [
    ("constant", 0, 1.0), ("constant", 50, 1.0), ("constant", 99, 1.0),
    ("linear", 0, 1.0), ("linear", 50, 0.5), ("linear", 75, 0.25), ("linear", 100, 0.0),
    ("cosine", 0, 1.0), ("cosine", 50, 0.5), ("cosine", 100, 0.0),
    ("cosine", 25, 0.5 * (1 + math.sqrt(0.5))),  # cos(pi/4) = sqrt(1/2): 0.8536
    ("cosine", 75, 0.5 * (1 - math.sqrt(0.5))),
])
def test_schedule_values(name, step, expected):
    assert lr_factor(name, step, total_steps=100, warmup=0) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("step, power, expected", [
    (0, 2.0, 1.0), (50, 2.0, 0.25), (75, 2.0, 0.0625), (100, 2.0, 0.0),
    (50, 1.0, 0.5),   # power 1 is the linear schedule
    (50, 0.5, math.sqrt(0.5)),
])
def test_polynomial(step, power, expected):
    assert lr_factor("polynomial", step, 100, 0, power=power) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"])
def test_warmup_ramps_linearly_then_decays_over_the_rest(name):
    # 10 warm-up steps out of 110: 0, 0.1, ..., 0.9, then the schedule from 1.0
    for step in range(10):
        assert lr_factor(name, step, 110, 10) == pytest.approx(step / 10)
    assert lr_factor(name, 10, 110, 10) == pytest.approx(1.0)
    if name in ("linear", "cosine"):
        # step 60 is half way through the 100 decay steps
        assert lr_factor(name, 60, 110, 10) == pytest.approx(0.5)


def scheduled_rates(name: str, lr: float, total: int, warmup: int, steps: int, **options) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make_scheduler(optimizer, name, total, warmup, **options)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_constant_with_a_warmup_trains_as_constant_with_warmup():
    # sd-scripts refuses constant + warm-up; here the warm-up is done, not silently dropped.
    assert effective_scheduler("constant", 10) == "constant_with_warmup"
    assert effective_scheduler("constant", 0) == "constant"
    assert effective_scheduler("cosine", 10) == "cosine"
    rates = scheduled_rates("constant", 1.0, total=20, warmup=4, steps=8)
    assert rates == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0])


def test_polynomial_ends_at_kohyas_lr_end():
    # transformers' polynomial decay as sd-scripts calls it, lr_end = 1e-7, lr_init = 1e-4,
    # 100 steps, power 1: lr = (1e-4 - 1e-7) * (1 - step / 100) + 1e-7
    rates = scheduled_rates("polynomial", 1e-4, total=100, warmup=0, steps=102)
    assert rates[0] == pytest.approx(1e-4, rel=1e-12)
    assert rates[50] == pytest.approx(0.5 * (1e-4 - 1e-7) + 1e-7, rel=1e-9)  # 5.005e-5
    assert rates[100] == pytest.approx(1e-7, rel=1e-6)
    assert rates[101] == pytest.approx(1e-7, rel=1e-6)  # stays there, never 0
    # power 2 at step 50: (1e-4 - 1e-7) * 0.25 + 1e-7 = 2.5075e-5
    assert scheduled_rates("polynomial", 1e-4, 100, 0, 51, power=2.0)[50] == pytest.approx(2.5075e-5, rel=1e-9)


def test_polynomial_needs_a_learning_rate_above_its_end():
    with pytest.raises(ValueError, match="1e-07"):
        scheduled_rates("polynomial", 1e-8, total=10, warmup=0, steps=1)


def test_warmup_steps_fraction_or_count():
    assert warmup_steps(0.1, 200) == 20
    assert warmup_steps(0.25, 200) == 50
    assert warmup_steps(30, 200) == 30
    assert warmup_steps(0, 200) == 0
    assert warmup_steps(1, 200) == 1  # 1 is one step, not the whole run


def test_cosine_with_restarts_two_cycles():
    f = lambda step: lr_factor("cosine_with_restarts", step, 100, 0, cycles=2)  # noqa: E731
    assert f(0) == pytest.approx(1.0)
    assert f(25) == pytest.approx(0.5)          # half of the first cycle
    assert f(49) < 0.01                         # the first cycle's end: cos(0.98 pi) -> ~0.001
    assert f(50) == pytest.approx(1.0)          # the restart
    assert f(75) == pytest.approx(0.5)
    assert f(100) == 0.0
    # one cycle is plain cosine
    for step in (0, 20, 50, 80):
        assert lr_factor("cosine_with_restarts", step, 100, 0, cycles=1) == pytest.approx(lr_factor("cosine", step,
                                                                                                    100, 0))


def test_make_scheduler_drives_the_optimizer_learning_rate():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    scheduler = make_scheduler(optimizer, "linear", total_steps=4, warmup=0)
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0])


def test_make_scheduler_unknown_name_lists_choices():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError) as error:
        make_scheduler(optimizer, "cosine_annealing", 10, 0)
    assert "cosine_annealing" in str(error.value)
    assert all(name in str(error.value) for name in SCHEDULES)


# --- noise ---

# made-up schedule: abar = 0.9, 0.5, 0.2, 0.1 for t = 0..3
ALPHAS = torch.tensor([0.9, 0.5, 0.2, 0.1], dtype=torch.float64)
LATENTS = torch.tensor([[[[1.0, 2.0]]], [[[3.0, -1.0]]]], dtype=torch.float64)   # (2, 1, 1, 2)
NOISE = torch.tensor([[[[0.5, -1.0]]], [[[2.0, 0.0]]]], dtype=torch.float64)
TIMESTEPS = torch.tensor([1, 2])


def test_add_noise_by_hand():
    noisy = add_noise(LATENTS, NOISE, TIMESTEPS, ALPHAS)
    r5, r2, r8 = math.sqrt(0.5), math.sqrt(0.2), math.sqrt(0.8)
    expected = [
        [r5 * 1.0 + r5 * 0.5, r5 * 2.0 + r5 * -1.0],     # t=1: sqrt(.5) x0 + sqrt(.5) noise
        [r2 * 3.0 + r8 * 2.0, r2 * -1.0 + r8 * 0.0],     # t=2: sqrt(.2) x0 + sqrt(.8) noise
    ]
    assert noisy.shape == LATENTS.shape
    assert noisy.reshape(2, 2).flatten().tolist() == pytest.approx(sum(expected, []), abs=1e-12)
    assert noisy[0, 0, 0, 0].item() == pytest.approx(1.0606601717798212)  # 1.5 / sqrt(2)


def test_epsilon_target_is_the_noise():
    assert torch.equal(prediction_target(LATENTS, NOISE, TIMESTEPS, ALPHAS, "epsilon"), NOISE)


def test_v_target_by_hand():
    v = prediction_target(LATENTS, NOISE, TIMESTEPS, ALPHAS, "v_prediction")
    r5, r2, r8 = math.sqrt(0.5), math.sqrt(0.2), math.sqrt(0.8)
    expected = [
        r5 * 0.5 - r5 * 1.0, r5 * -1.0 - r5 * 2.0,       # sqrt(abar) noise - sqrt(1 - abar) x0
        r2 * 2.0 - r8 * 3.0, r2 * 0.0 - r8 * -1.0,
    ]
    assert v.flatten().tolist() == pytest.approx(expected, abs=1e-12)
    assert v[1, 0, 0, 1].item() == pytest.approx(0.8944271909999159)  # sqrt(0.8)


def test_unknown_prediction_type():
    with pytest.raises(ValueError, match="sample"):
        prediction_target(LATENTS, NOISE, TIMESTEPS, ALPHAS, "sample")


def test_min_snr_weights_by_hand():
    timesteps = torch.tensor([0, 1, 2, 3])
    # SNR = abar / (1 - abar) = 9, 1, 0.25, 1/9; with gamma 5 only t=0 is clipped
    eps = min_snr_weights(timesteps, ALPHAS, 5.0, "epsilon")
    assert eps.tolist() == pytest.approx([5 / 9, 1.0, 1.0, 1.0])
    v = min_snr_weights(timesteps, ALPHAS, 5.0, "v_prediction")
    assert v.tolist() == pytest.approx([5 / 10, 1 / 2, 0.25 / 1.25, (1 / 9) / (10 / 9)])
    # gamma 0.5 clips every t with SNR above 0.5
    assert min_snr_weights(timesteps, ALPHAS, 0.5, "epsilon").tolist() == pytest.approx([0.5 / 9, 0.5, 1.0, 1.0])


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_noise_offset_shifts_each_image_channel_by_a_constant():
    shape = torch.Size([8, 4, 16, 16])
    plain = sample_noise(shape, 0.0, generator(3))
    offset = sample_noise(shape, 0.1, generator(3))
    difference = offset - plain
    # the same spatial noise plus one value per (image, channel)
    per_channel = difference[:, :, :1, :1]
    assert torch.allclose(difference, per_channel.expand_as(difference), atol=1e-6)
    assert per_channel.abs().max() > 0
    assert per_channel.abs().max() < 0.1 * 5  # 0.1 x a standard normal


def test_noise_offset_spreads_the_channel_means():
    shape = torch.Size([64, 4, 16, 16])
    plain_means = sample_noise(shape, 0.0, generator(0)).mean(dim=(2, 3))
    offset_means = sample_noise(shape, 1.0, generator(0)).mean(dim=(2, 3))
    # without offset a mean of 256 normals has std 1/16; the offset adds std 1
    assert plain_means.std() < 0.15
    assert 0.7 < offset_means.std() < 1.3


def test_seeded_generator_repeats_noise_and_timesteps():
    shape = torch.Size([2, 4, 8, 8])
    assert torch.equal(sample_noise(shape, 0.05, generator(7)), sample_noise(shape, 0.05, generator(7)))
    assert not torch.equal(sample_noise(shape, 0.05, generator(7)), sample_noise(shape, 0.05, generator(8)))
    a = sample_timesteps(16, 1000, "cpu", generator(7))
    b = sample_timesteps(16, 1000, "cpu", generator(7))
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() < 1000 and a.dtype == torch.int64
