"""Samplers for sample images, on the discrete 1000-step schedule the model was trained on.

Each is a plain function over `denoise(x_t, t) -> model output`: the noise for epsilon
models, v for v-prediction ones, classifier-free guidance already applied; `t` is a float
timestep (fractional for the Euler samplers). A host with its own txt2img needs none of
this; one without needs nothing else.

Notation: abar_t = alphas_cumprod[t], and a noisy latent is
    x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * eps.
- DDIM, deterministic (eta = 0; Song et al., https://arxiv.org/abs/2010.02502): at each of
  the WebUI's (CompVis') timesteps 1 + i * (1000 // steps), largest first, predict x0 and
  eps and move x0 to the next timestep's noise level with the same eps. The last step goes
  to abar = 1, the clean latents.
- Euler and Euler ancestral work in sigma space like k-diffusion (Karras et al.,
  https://arxiv.org/abs/2206.00364): sigma_t = sqrt((1 - abar_t) / abar_t) and
  x = x_t / sqrt(abar_t) = x0 + sigma * eps. Their timesteps are evenly spaced from 999
  down to 0, a fractional t getting the sigma interpolated in log sigma between its two
  neighbours (k-diffusion's DiscreteSchedule), then sigma = 0. The model sees
  x * sqrt(abar) and the fractional t.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

Denoise = Callable[[torch.Tensor, float], torch.Tensor]


def predicted_x0_and_noise(x_t: torch.Tensor, output: torch.Tensor, abar: float,
                           prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) that a model output implies at noise level abar:
        epsilon: x0 = (x_t - sqrt(1 - abar) * eps) / sqrt(abar)
        v:       x0 = sqrt(abar) * x_t - sqrt(1 - abar) * v,  eps = sqrt(1 - abar) * x_t + sqrt(abar) * v
    """
    signal, noise = math.sqrt(abar), math.sqrt(1 - abar)
    if prediction_type == "epsilon":
        return (x_t - noise * output) / signal, output
    if prediction_type == "v_prediction":
        return signal * x_t - noise * output, noise * x_t + signal * output
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def ddim_timesteps(steps: int, train_steps: int) -> list[int]:
    """The WebUI's DDIM timesteps, largest first: 1, 1 + c, 1 + 2c, ... with c = train_steps // steps."""
    stride = max(1, train_steps // steps)
    return sorted({min(1 + i * stride, train_steps - 1) for i in range(steps)}, reverse=True)


def ddim(denoise: Denoise, noise: torch.Tensor, alphas_cumprod: torch.Tensor, prediction_type: str, steps: int,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Deterministic DDIM from x_T = noise to x0; draws no random numbers."""
    timesteps = ddim_timesteps(steps, len(alphas_cumprod))
    x = noise
    for index, t in enumerate(timesteps):
        abar = float(alphas_cumprod[t])
        x0, eps = predicted_x0_and_noise(x, denoise(x, float(t)), abar, prediction_type)
        abar_next = float(alphas_cumprod[timesteps[index + 1]]) if index + 1 < len(timesteps) else 1.0
        x = math.sqrt(abar_next) * x0 + math.sqrt(1 - abar_next) * eps
    return x


def euler_schedule(alphas_cumprod: torch.Tensor, steps: int) -> tuple[list[float], list[float]]:
    """(timesteps, sigmas): `steps` timesteps evenly spaced from the last to 0 and their
    sigmas interpolated in log sigma, with a final sigma of 0 (one more than timesteps)."""
    abar = alphas_cumprod.double()
    log_sigmas = ((1 - abar) / abar).sqrt().log()
    timesteps = torch.linspace(len(abar) - 1, 0, steps, dtype=torch.float64)
    low = timesteps.floor().long()
    high = timesteps.ceil().long()
    weight = timesteps - low
    sigmas = ((1 - weight) * log_sigmas[low] + weight * log_sigmas[high]).exp()
    return timesteps.tolist(), sigmas.tolist() + [0.0]


def _denoised(denoise: Denoise, x: torch.Tensor, sigma: float, t: float, prediction_type: str) -> torch.Tensor:
    """The model as k-diffusion sees it: x = x0 + sigma * eps in, the predicted x0 out."""
    abar = 1 / (1 + sigma ** 2)
    x_t = x * math.sqrt(abar)
    return predicted_x0_and_noise(x_t, denoise(x_t, t), abar, prediction_type)[0]


def euler(denoise: Denoise, noise: torch.Tensor, alphas_cumprod: torch.Tensor, prediction_type: str, steps: int,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Euler steps along dx/dsigma = (x - x0(x, sigma)) / sigma; draws no random numbers."""
    timesteps, sigmas = euler_schedule(alphas_cumprod, steps)
    x = noise * sigmas[0]
    for index, t in enumerate(timesteps):
        sigma, sigma_next = sigmas[index], sigmas[index + 1]
        slope = (x - _denoised(denoise, x, sigma, t, prediction_type)) / sigma
        x = x + slope * (sigma_next - sigma)
    return x


def euler_ancestral(denoise: Denoise, noise: torch.Tensor, alphas_cumprod: torch.Tensor, prediction_type: str,
                    steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Euler ancestral (eta = 1): each step goes down to sigma_down deterministically, then
    adds fresh noise of sigma_up, so that sigma_down^2 + sigma_up^2 = sigma_next^2. The noise
    is drawn from `generator`, on its device, after the caller drew the starting noise."""
    timesteps, sigmas = euler_schedule(alphas_cumprod, steps)
    x = noise * sigmas[0]
    for index, t in enumerate(timesteps):
        sigma, sigma_next = sigmas[index], sigmas[index + 1]
        sigma_up = min(sigma_next, math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
        sigma_down = math.sqrt(sigma_next ** 2 - sigma_up ** 2)
        slope = (x - _denoised(denoise, x, sigma, t, prediction_type)) / sigma
        x = x + slope * (sigma_down - sigma)
        if sigma_next > 0:
            device = generator.device if generator is not None else "cpu"
            fresh = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
            x = x + fresh.to(x.device, x.dtype) * sigma_up
    return x


@dataclass(frozen=True)
class Sampler:
    run: Callable[..., torch.Tensor]  # (denoise, noise, alphas_cumprod, prediction_type, steps, generator) -> x0
    webui_name: str                   # its name in the WebUI's infotext


# kohya's sample_sampler names; its k_ names are the same samplers.
SAMPLERS = {
    "ddim": Sampler(ddim, "DDIM"),
    "euler": Sampler(euler, "Euler"),
    "euler_a": Sampler(euler_ancestral, "Euler a"),
    "k_euler": Sampler(euler, "Euler"),
    "k_euler_a": Sampler(euler_ancestral, "Euler a"),
}
