"""Loss functions and per-example loss weights, with kohya's options and formulas.

With abar_t = alphas_cumprod[t], the signal-to-noise ratio of timestep t is
    SNR(t) = abar_t / (1 - abar_t)
Every weight here is a function of SNR(t), one value per example; the loss functions give one
value per element (reduction "none"), so masks and weights can be applied after them.
"""
from __future__ import annotations

import math

import torch

from ..config import HUBER_LOSSES, HUBER_SCHEDULES, LOSS_TYPES
# kohya caps the SNR here where it divides by it: at t = 0 it is over 1000 and at a zero
# terminal SNR schedule's first steps it grows without bound.
SNR_CAP = 1000.0


def snr(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    abar = alphas_cumprod.to(timesteps.device)[timesteps]
    return abar / (1 - abar)


def elementwise_loss(prediction: torch.Tensor, target: torch.Tensor, loss_type: str,
                     huber_c: torch.Tensor | None = None) -> torch.Tensor:
    """The loss of each element (kohya's conditional_loss with reduction "none"); d = prediction - target:
        l2:        d^2
        l1:        |d|
        huber:     2c (sqrt(d^2 + c^2) - c)   pseudo-Huber: ~d^2 below c, ~2c|d| above it
        smooth_l1: 2 (sqrt(d^2 + c^2) - c)    the same curve divided by c: ~d^2 / c, then ~2|d|
    `huber_c`: one threshold per example (huber_thresholds)."""
    if loss_type == "l2":
        return torch.nn.functional.mse_loss(prediction, target, reduction="none")
    if loss_type == "l1":
        return torch.nn.functional.l1_loss(prediction, target, reduction="none")
    if loss_type in HUBER_LOSSES:
        c = huber_c.to(prediction.device, prediction.dtype).reshape(-1, *([1] * (prediction.dim() - 1)))
        curve = 2 * (torch.sqrt((prediction - target) ** 2 + c ** 2) - c)
        return c * curve if loss_type == "huber" else curve
    raise ValueError(f"unknown loss_type {loss_type!r}; use one of {', '.join(LOSS_TYPES)}")


def huber_thresholds(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, schedule: str, huber_c: float,
                     huber_scale: float) -> torch.Tensor:
    """The Huber threshold c of each example, by kohya's huber_schedule (T = schedule length):
        constant:    huber_c * huber_scale
        exponential: huber_scale * exp(-a t), a = -ln(huber_c) / T   (1 at t=0, huber_c at t=T)
        snr:         (1 - huber_c) / (1 + sigma_t)^2 + huber_c, sigma_t = sqrt(1 / SNR(t))
                     (near 1 where the signal is clear, near huber_c in pure noise; huber_scale
                     is not used, as in kohya)"""
    if schedule == "constant":
        return torch.full(timesteps.shape, huber_c * huber_scale, device=timesteps.device)
    if schedule == "exponential":
        rate = -math.log(huber_c) / len(alphas_cumprod)
        return torch.exp(-rate * timesteps.float()) * huber_scale
    if schedule == "snr":
        abar = alphas_cumprod.to(timesteps.device)[timesteps]
        sigma = ((1 - abar) / abar).sqrt()
        return (1 - huber_c) / (1 + sigma) ** 2 + huber_c
    raise ValueError(f"unknown huber_schedule {schedule!r}; use one of {', '.join(HUBER_SCHEDULES)}")


def min_snr_weights(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, gamma: float,
                    prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, https://arxiv.org/abs/2303.09556).

    For an epsilon target the weight is min(SNR, gamma) / SNR; a v target already carries a
    factor SNR + 1, so there it is min(SNR, gamma) / (SNR + 1).
    """
    ratio = snr(timesteps, alphas_cumprod)
    clipped = torch.clamp(ratio, max=gamma)
    return clipped / (ratio + 1) if prediction_type == "v_prediction" else clipped / ratio


def v_to_noise_scale(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """SNR / (SNR + 1), SNR capped at 1000: a v-prediction loss times this is the size of the
    matching noise-prediction loss (kohya's scale_v_pred_loss_like_noise_pred)."""
    capped = torch.clamp(snr(timesteps, alphas_cumprod), max=SNR_CAP)
    return capped / (capped + 1)


def v_pred_like_factors(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, weight: float) -> torch.Tensor:
    """kohya's v_pred_like_loss: loss + weight * loss / scale, scale = v_to_noise_scale, i.e. the
    loss times 1 + weight * (SNR + 1) / SNR: a noise-prediction loss plus `weight` times the
    v-prediction-sized loss, which weighs the noisiest timesteps more."""
    return 1 + weight / v_to_noise_scale(timesteps, alphas_cumprod)


def debiased_weights(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """Debiased estimation (Yu et al. 2024, https://arxiv.org/abs/2310.08442), kohya's
    debiased_estimation_loss: 1 / sqrt(SNR) for noise prediction, 1 / (SNR + 1) for v, SNR
    capped at 1000."""
    capped = torch.clamp(snr(timesteps, alphas_cumprod), max=SNR_CAP)
    return 1 / (capped + 1) if prediction_type == "v_prediction" else 1 / capped.sqrt()
