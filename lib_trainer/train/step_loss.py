"""The loss of one batch: draw noise and timesteps, noise the latents, score the model's
prediction of the target, weight each example.

The training loop calls `batch_loss` once per batch; everything a loss option changes
(noise, timesteps, the loss function, per-example or per-pixel weights) happens here or in
the modules it calls (noise.py for the diffusion math).
"""
from __future__ import annotations

import torch

from . import noise as diffusion


def batch_loss(config, bundle, batch, latents, prompts, schedule, device, data_rng, noise_rng) -> torch.Tensor:
    """Noise the latents at random timesteps and score the model's prediction of the target."""
    flips = [config.flip_aug and data_rng.random() < 0.5 for _ in batch]
    x0, sizes, masks = latents(batch, flips, data_rng)
    x0 = x0.to(device)
    conditioning = prompts(batch, data_rng)

    noise = diffusion.sample_noise(x0.shape, config.noise_offset, noise_rng).to(device)
    timesteps = diffusion.sample_timesteps(len(batch), len(schedule), "cpu", noise_rng).to(device)
    noisy = diffusion.add_noise(x0, noise, timesteps, schedule)
    target = diffusion.prediction_target(x0, noise, timesteps, schedule, bundle.prediction_type)

    prediction = bundle.predict(noisy, timesteps, conditioning, sizes)
    per_sample = torch.nn.functional.mse_loss(prediction.float(), target.float(), reduction="none")
    if masks is not None:  # masked_loss / alpha_mask: masked-out latents add nothing (dataset/masks.py)
        per_sample = per_sample * masks.to(device)
    per_sample = per_sample.mean(dim=(1, 2, 3))
    weights = torch.tensor([example.loss_weight for example in batch], device=device)
    if config.min_snr_gamma:
        weights = weights * diffusion.min_snr_weights(timesteps, schedule, config.min_snr_gamma,
                                                      bundle.prediction_type)
    return (per_sample * weights).mean()
