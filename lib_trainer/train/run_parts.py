"""The parts of a run's set-up and step that the bench's phase pass (bench_phases.py) builds in
the same way as `train()`: the trainable, the model made ready for training, train mode, the
optimizer with its schedule, and one optimizer step (the trainable itself comes from loop.new_trainable)."""
from __future__ import annotations

import contextlib

import torch

from ..config import TrainConfig
from ..dataset.plan import TrainingPlan
from ..hosts.bundle import ModelBundle
from ..networks.trainable import TEXT_ENCODER, TOKEN_EMBEDDINGS
from ..progress import Progress
from .compile import compiled_denoiser
from .optimizers import is_schedule_free, make_optimizer, uses_relative_step
from .precision import FP8_DTYPE, compute_dtype
from .schedulers import make_run_scheduler, warmup_steps


@contextlib.contextmanager
def model_in_training(config: TrainConfig, bundle: ModelBundle, trainable, device: torch.device, progress=None,
                      times=None, layer_dtype: torch.dtype | None = None):
    """The base model frozen in the run's dtypes on the device (its layers stored in
    `layer_dtype`: base_weights_dtype), the trainable attached, gradient checkpointing on when
    asked, the UNet compiled with torch_compile (its first calls timed in `times`); all undone
    afterwards."""
    with bundle.frozen_for_training(device, compute_dtype(config.mixed_precision), no_half_vae=config.no_half_vae,
                                    denoiser_dtype=FP8_DTYPE if config.fp8_base else None,
                                    layer_dtype=layer_dtype), \
            trainable.attached(bundle), \
            gradient_checkpointing(bundle, config.gradient_checkpointing), \
            compiled_denoiser(bundle, config.torch_compile, config.dynamo_backend, progress or Progress(), times):
        if config.xformers and device.type == "cuda" and hasattr(bundle, "set_xformers"):
            bundle.set_xformers(True)
        yield


def training_mode(config: TrainConfig, bundle: ModelBundle, trainable) -> bool:
    """Put the trainable (and, when gradients flow through them, the text encoders under
    checkpointing) in train mode; returns whether gradients flow through the text encoders."""
    # An embedding's gradients flow through the (frozen) text encoders too.
    trains_text = bool({TEXT_ENCODER, TOKEN_EMBEDDINGS} & set(trainable.conditioned()))
    if trains_text and config.gradient_checkpointing:
        for encoder in bundle.text_encoders():
            encoder.train()  # transformers checkpoints only in train mode
    trainable.train()
    return trains_text


def optimizer_and_schedule(config: TrainConfig, trainable, plan: TrainingPlan, device: torch.device):
    """The optimizer over the trainable's groups, its description, the warm-up steps and the schedule."""
    optimizer, optimizer_text = make_optimizer(
        config.optimizer_type, trainable.parameter_groups(config.effective_unet_lr(),
                                                          config.effective_text_encoder_lr()),
        config.learning_rate, config.parsed_optimizer_args(), device.type)
    warmup = warmup_steps(config.lr_warmup_steps, plan.total_steps)
    scheduler = make_run_scheduler(config, optimizer, plan.total_steps, warmup, is_schedule_free(config.optimizer_type),
                                   uses_relative_step(config.optimizer_type, config.parsed_optimizer_args()))
    return optimizer, optimizer_text, warmup, scheduler


def optimizer_step(config: TrainConfig, scaler, optimizer, scheduler, params) -> None:
    """Unscale, clip (max_grad_norm), step, clear the gradients; the schedule moves only on
    steps the scaler did not skip (an fp16 overflow skips one)."""
    scaler.unscale_(optimizer)
    if config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm, foreach=True)
    scale_before = scaler.get_scale() if scaler.is_enabled() else None
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if scale_before is None or scaler.get_scale() >= scale_before:
        scheduler.step()


@contextlib.contextmanager
def gradient_checkpointing(bundle: ModelBundle, enabled: bool):
    if not enabled:
        yield
        return
    bundle.set_gradient_checkpointing(True)
    try:
        yield
    finally:
        bundle.set_gradient_checkpointing(False)
