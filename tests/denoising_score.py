"""Denoising loss with fixed noise and timesteps: a repeatable score of how well a model
(with or without a network attached) predicts a set of images, e.g. before vs after."""
from __future__ import annotations

import torch

from lib_trainer.hosts.bundle import ModelBundle
from lib_trainer.train import noise as diffusion


@torch.no_grad()
def fixed_denoising_loss(bundle: ModelBundle, latents: torch.Tensor, prompts: list[str], seed: int,
                         timesteps: list[int], max_token_length: int = 75) -> float:
    """Mean loss over every (image, timestep) pair, the noise drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    conditioning = bundle.encode_prompts(prompts, max_token_length)
    total = 0.0
    for timestep in timesteps:
        noise = diffusion.sample_noise(latents.shape, 0.0, generator)
        steps = torch.full((latents.shape[0],), timestep, dtype=torch.long)
        noisy = diffusion.add_noise(latents, noise, steps, bundle.alphas_cumprod)
        target = diffusion.prediction_target(latents, noise, steps, bundle.alphas_cumprod, bundle.prediction_type)
        prediction = bundle.predict(noisy, steps, conditioning)
        total += torch.nn.functional.mse_loss(prediction.float(), target.float()).item()
    return total / len(timesteps)
