"""The validation loss: the training loss on held-out images (dataset/validation_split.py),
with the same noise and timesteps at every pass, so its values compare across the run.

sd-scripts' validation (train_network.py) scores each held-out batch at four fixed timesteps
spread over [min_timestep, max_timestep] (200, 400, 600 and 800 by default), with its random generators re-seeded by `validation_seed` (the
run's `seed` when not set) for each pass, without gradients and with the network in eval
mode. Here each pass draws from its own generators, seeded the same way each time, so it
sees the same images, noise and timesteps at every pass and leaves the training's
generators alone (a resumed run stays bit for bit the same). The loss is `batch_loss`, the
training's own, so every loss option applies to both alike.

When it runs: every `validate_every_n_steps` steps (0: not by steps), after every
`validate_every_n_epochs` epochs (0: after every epoch, sd-scripts' default), and at the end
of the run. `max_validation_steps` caps the batches a pass scores. Each value goes out as a
progress event (TensorBoard's `loss/validation`, the Train tab's chart) and into the
metadata of the files saved after it (`ss_validation_loss`).
"""
from __future__ import annotations

import contextlib
import random

import torch

from .precision import autocast
from .step_loss import batch_loss

# sd-scripts scores each batch at 4 timesteps, evenly inside the trained range.
TIMESTEPS_PER_BATCH = 4


def validation_timesteps(config) -> list[int]:
    """The timesteps every batch is scored at: the inner points of an even split of
    [min_timestep, max_timestep] into 5 parts, rounded down, as sd-scripts picks them."""
    low, high = config.min_timestep, config.max_timestep
    parts = TIMESTEPS_PER_BATCH + 1
    return [int(low + (high - low) * i / parts) for i in range(1, parts)]


def validation_seed(config) -> int:
    return config.validation_seed if config.validation_seed is not None else config.seed


class Validator:
    """Scores the held-out batches when a pass is due; `latest` is the newest value (None before the first)."""

    def __init__(self, config, bundle, plan, trainable, latents, prompts, schedule, device, progress,
                 weights=contextlib.nullcontext) -> None:
        self.config, self.bundle, self.trainable = config, bundle, trainable
        self.weights = weights  # a context with the weights to score (schedule-free: the average x)
        self.latents, self.prompts, self.schedule, self.device = latents, prompts, schedule, device
        self.progress = progress
        limit = config.max_validation_steps
        self.batches = plan.validation_batches[:limit] if limit else plan.validation_batches
        self.latest: float | None = None
        self.last_step: int | None = None  # the step of the newest pass: one pass per step at most

    @property
    def enabled(self) -> bool:
        return bool(self.batches)

    def after_step(self, step: int) -> None:
        every = self.config.validate_every_n_steps
        if every and step % every == 0:
            self.run(step)

    def after_epoch(self, epoch: int, step: int) -> None:
        every = self.config.validate_every_n_epochs
        if not every or epoch % every == 0:
            self.run(step)

    def at_end(self, step: int) -> None:
        self.run(step)

    def run(self, step: int) -> float | None:
        if not self.enabled or self.last_step == step:
            return self.latest
        self.latest, self.last_step = self.loss(), step
        self.progress.validation(step, self.latest)
        return self.latest

    def loss(self) -> float:
        """The mean loss over the held-out examples, each batch scored at every validation timestep."""
        seed = validation_seed(self.config)
        # min = max timestep: batch_loss trains that one timestep
        pinned = [self.config.replace(min_timestep=t, max_timestep=t) for t in validation_timesteps(self.config)]
        data_rng, noise_rng = random.Random(seed), torch.Generator().manual_seed(seed)
        was_training = self.trainable.training
        self.trainable.eval()  # dropout, rank and module dropout off
        total, count = 0.0, 0
        try:
            with torch.no_grad(), self.weights(), autocast(self.device, self.config.mixed_precision):
                for batch in self.batches:
                    for config in pinned:
                        loss = batch_loss(config, self.bundle, batch, self.latents, self.prompts,
                                          self.schedule, self.device, data_rng, noise_rng)
                        total += loss.item() * len(batch)
                        count += len(batch)
        finally:
            self.trainable.train(was_training)
        return total / count
