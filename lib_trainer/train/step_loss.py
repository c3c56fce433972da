"""The loss of one batch: draw noise and timesteps, noise the latents, score the model's
prediction of the target, weight each example.

The training loop calls `batch_loss` once per batch; everything a loss option changes
(noise, timesteps, the loss function, per-example or per-pixel weights) happens here or in
the modules it calls (noise.py for the diffusion math, losses.py for loss functions and
weights). `loss_option_notes` and `loss_option_refusals` say, once the model is known, which
of these options do nothing or cannot be used with it.
"""
from __future__ import annotations

import dataclasses

import torch

from ..dataset.dataset_config import example_flip_aug
from . import losses
from . import noise as diffusion


def batch_loss(config, bundle, batch, latents, prompts, schedule, device, data_rng, noise_rng) -> torch.Tensor:
    """Noise the latents at random timesteps and score the model's prediction of the target.
    Every random draw of the diffusion side comes from `noise_rng`, in a fixed order."""
    flips = [example_flip_aug(config, example) and data_rng.random() < 0.5 for example in batch]
    x0, sizes, masks = latents(batch, flips, data_rng)
    x0 = x0.to(device)
    conditioning = prompts(batch, data_rng)

    # --- noise and timesteps (kohya's order of draws: noise, offset, pyramid, timesteps, perturbation) ---
    noise = diffusion.sample_noise(x0.shape, config.noise_offset, noise_rng,
                                   random_strength=config.noise_offset_random_strength, latents=x0,
                                   adaptive_scale=config.adaptive_noise_scale)
    if config.multires_noise_iterations:
        noise = diffusion.pyramid_noise(noise, config.multires_noise_iterations, config.multires_noise_discount,
                                        noise_rng)
    noise = noise.to(device)
    timesteps = diffusion.sample_timesteps(len(batch), len(schedule), "cpu", noise_rng, config.min_timestep,
                                           config.max_timestep).to(device)
    input_noise = noise
    if config.ip_noise_gamma:  # the input gets the extra noise, the target does not
        input_noise = diffusion.perturbed_noise(noise, config.ip_noise_gamma, config.ip_noise_gamma_random_strength,
                                                noise_rng)
    noisy = diffusion.add_noise(x0, input_noise, timesteps, schedule)
    target = diffusion.prediction_target(x0, noise, timesteps, schedule, bundle.prediction_type)

    prediction = bundle.predict(noisy, timesteps, conditioning, sizes)
    # --- loss: per element, then the masks' per-pixel weights, then the mean of each example ---
    huber_c = (losses.huber_thresholds(timesteps, schedule, config.huber_schedule, config.huber_c, config.huber_scale)
               if config.loss_type in losses.HUBER_LOSSES else None)
    loss = losses.elementwise_loss(prediction.float(), target.float(), config.loss_type, huber_c)
    if masks is not None:  # masked_loss / alpha_mask: masked-out latents add nothing (dataset/masks.py)
        loss = loss * masks.to(device)
    per_sample = loss.mean(dim=tuple(range(1, loss.dim())))
    weights = example_weights(config, batch, timesteps, schedule, bundle.prediction_type)
    return (per_sample * weights).mean()


def example_weights(config, batch, timesteps, schedule, prediction_type) -> torch.Tensor:
    """Each example's loss weight (prior_loss_weight for regularisation images) times the
    timestep weights of the options that are on; kohya multiplies them in the same way."""
    weights = torch.tensor([example.loss_weight for example in batch], device=timesteps.device)
    if config.min_snr_gamma:
        weights = weights * losses.min_snr_weights(timesteps, schedule, config.min_snr_gamma, prediction_type)
    if config.scale_v_pred_loss_like_noise_pred:
        weights = weights * losses.v_to_noise_scale(timesteps, schedule)
    if config.v_pred_like_loss:
        weights = weights * losses.v_pred_like_factors(timesteps, schedule, config.v_pred_like_loss)
    if config.debiased_estimation_loss:
        weights = weights * losses.debiased_weights(timesteps, schedule, prediction_type)
    return weights


def loss_option_refusals(config, prediction_type: str) -> list[str]:
    """The options kohya refuses for this kind of model (known only once it is loaded)."""
    found = []
    if config.scale_v_pred_loss_like_noise_pred and prediction_type != "v_prediction":
        found.append("scale_v_pred_loss_like_noise_pred is for v-prediction models, and this model predicts noise: "
                     "turn it off, or set v_parameterization for a v-prediction checkpoint")
    if config.v_pred_like_loss and prediction_type == "v_prediction":
        found.append("v_pred_like_loss adds a v-prediction-like loss to a noise-prediction model, and this model "
                     "already predicts v: set v_pred_like_loss to 0")
    return found


# option -> the option it needs to have any effect, and when that one is on
_NEEDS = {
    "multires_noise_discount": ("multires_noise_iterations", lambda c: c.multires_noise_iterations > 0),
    "noise_offset_random_strength": ("noise_offset", lambda c: c.noise_offset > 0),
    "ip_noise_gamma_random_strength": ("ip_noise_gamma", lambda c: c.ip_noise_gamma > 0),
    "huber_schedule": ("loss_type=huber or smooth_l1", lambda c: c.loss_type in losses.HUBER_LOSSES),
    "huber_c": ("loss_type=huber or smooth_l1", lambda c: c.loss_type in losses.HUBER_LOSSES),
    "huber_scale": ("loss_type=huber or smooth_l1", lambda c: c.loss_type in losses.HUBER_LOSSES),
}


def loss_option_notes(config) -> list[str]:
    """Options changed from their default that do nothing in this run (kohya ignores them silently)."""
    defaults = {spec.name: spec.default for spec in dataclasses.fields(config)}
    notes = [f"{name}={getattr(config, name)} has no effect without {needed}"
             for name, (needed, is_on) in _NEEDS.items()
             if getattr(config, name) != defaults[name] and not is_on(config)]
    if config.huber_scale != defaults["huber_scale"] and config.loss_type in losses.HUBER_LOSSES \
            and config.huber_schedule == "snr":
        notes.append("huber_scale has no effect with huber_schedule=snr (as in kohya)")
    return notes
