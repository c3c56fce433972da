"""An estimate, shown before a run starts, of the memory training will need.

Exact parts: the model's weights as they will be held and the network's own state (its
weights, gradients and optimizer state) from the real layer shapes. Estimated part: the
activations kept for the backward pass, from per-megapixel figures for each family with
16-bit autocast (doubled in fp32), with and without gradient checkpointing. Those depend on
the attention implementation, so the total is rounded and labelled as an estimate.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from torch import nn

from ..config import TrainConfig
from ..formats.kohya_names import TargetLayer
from ..networks.registry import find_method

GB = 1024 ** 3
# GB of activations per megapixel of training image, batch 1, 16-bit: (plain, checkpointed).
ACTIVATIONS_PER_MEGAPIXEL = {"sd1": (9.0, 2.5), "sd2": (9.0, 2.5), "sdxl": (11.0, 3.0)}
VAE_ENCODE_PER_MEGAPIXEL = 3.0  # the VAE encoder's peak when latents are not cached
# Bytes per trainable parameter beside its fp32 weight and gradient (8).
OPTIMIZER_STATE_BYTES = {"AdamW": 8, "AdamW8bit": 2, "Lion": 4, "Prodigy": 16, "Adafactor": 4, "SGDNesterov": 4}


@dataclass
class MemoryEstimate:
    weights_gb: float
    network_gb: float
    activations_gb: float
    where: str  # "GPU" or "RAM"

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.network_gb + self.activations_gb

    def summary(self) -> str:
        return (f"Memory estimate ({self.where}): about {self.total_gb:.1f} GB = model weights {self.weights_gb:.1f} GB"
                f" + network and optimizer {self.network_gb:.2f} GB + activations ~{self.activations_gb:.1f} GB "
                "(a rough figure; gradient checkpointing, cached latents and a smaller batch lower it)")


def network_parameters(targets: list[TargetLayer], config: TrainConfig) -> int:
    """The parameters the configured network method puts on these layers."""
    method = find_method(config)
    return method.parameter_count(targets, method.settings(config))


def estimate_memory(config: TrainConfig, family: str, weight_bytes: int, targets: list[TargetLayer],
                    where: str = "GPU") -> MemoryEstimate:
    trainable = network_parameters(targets, config)
    state_bytes = 8 + OPTIMIZER_STATE_BYTES.get(config.optimizer_type, 8)
    width, height = config.resolution_wh()
    megapixels = width * height / 1e6 * config.train_batch_size
    plain, checkpointed = ACTIVATIONS_PER_MEGAPIXEL.get(family, ACTIVATIONS_PER_MEGAPIXEL["sd1"])
    activations = (checkpointed if config.gradient_checkpointing else plain) * megapixels
    if not config.cache_latents:
        activations = max(activations, VAE_ENCODE_PER_MEGAPIXEL * megapixels)
    if config.mixed_precision == "no":
        activations *= 2
    return MemoryEstimate(weight_bytes / GB, trainable * state_bytes / GB, activations, where)


def module_bytes(modules: list[nn.Module]) -> int:
    return sum(p.numel() * p.element_size() for module in modules for p in module.parameters())


@functools.lru_cache(maxsize=8)
def _full_size_layout(family: str):
    """(parameter counts of UNet, text encoders, VAE; LoRA targets) of a full-size model,
    built on the meta device: no memory, a second or two."""
    from ..hosts.components import build_components
    from ..hosts.diffusers_sd import DiffusersSDBundle

    components = build_components(family, device="meta", seed=None)
    bundle = DiffusersSDBundle(components)
    counts = (sum(p.numel() for p in components.unet.parameters()),
              sum(p.numel() for e in components.text_encoders for p in e.parameters()),
              sum(p.numel() for p in components.vae.parameters()))
    return counts, {include_conv: bundle.target_layers(include_conv) for include_conv in (False, True)}


def estimate_for_checkpoint(config: TrainConfig, family: str) -> MemoryEstimate:
    """The standalone trainer: it loads its own copy, cast to the compute dtype (VAE in fp32)."""
    (unet, text, vae), targets = _full_size_layout(family)
    weight_size = 4 if config.mixed_precision == "no" else 2
    method = find_method(config)
    include_conv = method.adapts_conv(method.settings(config))
    chosen = [t for t in targets[include_conv] if (t.component == "unet" and config.train_unet())
              or (t.component == "text_encoder" and config.train_text_encoder())]
    device = config.device if config.device != "auto" else "GPU or RAM"
    return estimate_memory(config, family, (unet + text) * weight_size + vae * 4, chosen, where=device)


def memory_summary(config: TrainConfig) -> str:
    """The standalone trainer's estimate for the configured base model."""
    model = config.pretrained_model_name_or_path
    if model.startswith("tiny:"):
        return "Memory estimate: the tiny test model needs well under 1 GB."
    if os.path.isfile(model):
        from ..hosts.single_file import detect_checkpoint

        return estimate_for_checkpoint(config, detect_checkpoint(model).family).summary()
    if os.path.isdir(model):
        family = "sdxl" if os.path.isdir(os.path.join(model, "text_encoder_2")) else "sd1"
        return estimate_for_checkpoint(config, family).summary()
    return "Memory estimate: unavailable until the base model exists."
