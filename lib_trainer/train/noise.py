"""The diffusion side of a training step: noising latents and the loss target.

Forward process at timestep t, with abar_t = alphas_cumprod[t]:
    x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * noise
The model is trained to predict either the noise (epsilon models, SD1.x) or
    v = sqrt(abar_t) * noise - sqrt(1 - abar_t) * x_0     (v-prediction, SD2.x 768-v)
"""
from __future__ import annotations

import torch


def sample_noise(shape: torch.Size, noise_offset: float, generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian noise (drawn on the CPU so a seed gives the same noise on every device).

    `noise_offset` adds one random value per image and channel, which lets the model learn
    to change an image's overall brightness (crosslabs' offset-noise trick)."""
    noise = torch.randn(shape, generator=generator)
    if noise_offset:
        noise = noise + noise_offset * torch.randn(tuple(shape[:2]) + (1, 1), generator=generator)
    return noise


def sample_timesteps(batch: int, steps: int, device, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(0, steps, (batch,), generator=generator, device=device)


def add_noise(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
              alphas_cumprod: torch.Tensor) -> torch.Tensor:
    abar = _per_sample(alphas_cumprod, timesteps, latents)
    return abar.sqrt() * latents + (1 - abar).sqrt() * noise


def prediction_target(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                      alphas_cumprod: torch.Tensor, prediction_type: str) -> torch.Tensor:
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        abar = _per_sample(alphas_cumprod, timesteps, latents)
        return abar.sqrt() * noise - (1 - abar).sqrt() * latents
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def min_snr_weights(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, gamma: float,
                    prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, https://arxiv.org/abs/2303.09556).

    SNR(t) = abar_t / (1 - abar_t). For an epsilon target the weight is min(SNR, gamma) / SNR;
    a v target already carries a factor SNR + 1, so there it is min(SNR, gamma) / (SNR + 1).
    """
    abar = alphas_cumprod.to(timesteps.device)[timesteps]
    snr = abar / (1 - abar)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr


def _per_sample(values: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device)[timesteps].to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


# kohya's floor for the last step's abar after the rescale: zero exactly would make the
# epsilon target and min-SNR weights divide by zero.
ZERO_TERMINAL_ABAR = 4.8973451890853435e-08


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The schedule shifted and scaled in sqrt(abar) so the last step is pure noise while
    the first keeps its value (Lin et al. 2023, https://arxiv.org/abs/2305.08891, alg. 1)."""
    root = alphas_cumprod.double().sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    rescaled = root.square()
    rescaled[-1] = ZERO_TERMINAL_ABAR
    return rescaled.float()
