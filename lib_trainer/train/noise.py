"""The diffusion side of a training step: noising latents and the loss target.

Forward process at timestep t, with abar_t = alphas_cumprod[t]:
    x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * noise
The model is trained to predict either the noise (epsilon models, SD1.x) or
    v = sqrt(abar_t) * noise - sqrt(1 - abar_t) * x_0     (v-prediction, SD2.x 768-v)
"""
from __future__ import annotations

import torch


def sample_noise(shape: torch.Size, noise_offset: float, generator: torch.Generator | None, *,
                 random_strength: bool = False, latents: torch.Tensor | None = None,
                 adaptive_scale: float = 0.0) -> torch.Tensor:
    """Gaussian noise (drawn on the CPU so a seed gives the same noise on every device).

    `noise_offset` adds one random value per image and channel, which lets the model learn
    to change an image's overall brightness (crosslabs' offset-noise trick). As in kohya:
    `random_strength` draws the offset's size in [0, noise_offset) once per batch, and
    `adaptive_scale` adds adaptive_scale * |mean of the latents' channel| to it (never
    below zero), so brighter or darker latents get a larger offset."""
    noise = torch.randn(shape, generator=generator)
    if not noise_offset:
        return noise
    strength = noise_offset * torch.rand(1, generator=generator).item() if random_strength else noise_offset
    if adaptive_scale:
        channel_means = latents.detach().float().mean(dim=(2, 3), keepdim=True).abs().cpu()
        strength = torch.clamp(strength + adaptive_scale * channel_means, min=0.0)
    return noise + strength * torch.randn(tuple(shape[:2]) + (1, 1), generator=generator)


def pyramid_noise(noise: torch.Tensor, iterations: int, discount: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Multi-resolution ("pyramid") noise, kohya's multires_noise_iterations / _discount
    (https://wandb.ai/johnowhitaker/multires_noise): add `iterations` layers of noise, layer i
    drawn at 1 / r**i of the size (r random in [2, 4)), upsampled bilinearly and weighted
    discount**i, stopping once a layer is 1 pixel wide; then rescale to unit std. The coarse
    layers give the noise low-frequency energy, so the model learns to change large areas."""
    batch, channels, height, width = noise.shape
    upsample = torch.nn.Upsample(size=(height, width), mode="bilinear")
    noise = noise.clone()
    for i in range(iterations):
        r = 2 + 2 * torch.rand((), generator=generator).item()
        small_h, small_w = max(1, int(height / r ** i)), max(1, int(width / r ** i))
        layer = torch.randn(batch, channels, small_h, small_w, generator=generator).to(noise.device)
        noise += upsample(layer.to(noise.dtype)) * discount ** i
        if small_h == 1 or small_w == 1:
            break
    return noise / noise.std()


def perturbed_noise(noise: torch.Tensor, gamma: float, random_strength: bool,
                    generator: torch.Generator | None) -> torch.Tensor:
    """Input perturbation (Ning et al. 2023, https://arxiv.org/abs/2301.11706), kohya's
    ip_noise_gamma: the noisy input is made with noise + gamma * extra noise, while the target
    keeps the plain noise. `random_strength` draws gamma's size in [0, gamma) once per batch."""
    strength = gamma * torch.rand(1, generator=generator).item() if random_strength else gamma
    return noise + strength * torch.randn(noise.shape, generator=generator).to(noise.device, noise.dtype)


def sample_timesteps(batch: int, steps: int, device, generator: torch.Generator | None,
                     min_timestep: int = 0, max_timestep: int | None = None) -> torch.Tensor:
    """Timesteps drawn uniformly from [min_timestep, max_timestep) (max: the schedule's length
    when not given). As in kohya, min_timestep == max_timestep trains that one timestep."""
    high = steps if max_timestep is None else max_timestep
    if not 0 <= min_timestep <= high <= steps or (min_timestep == high == steps):
        raise ValueError(f"timesteps [{min_timestep}, {high}) do not fit a schedule of {steps} steps")
    if min_timestep == high:
        return torch.full((batch,), high, dtype=torch.int64, device=device)
    return torch.randint(min_timestep, high, (batch,), generator=generator, device=device)


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
