"""An estimate, shown before a run starts, of the memory training will need.

Exact parts: the model's weights as training will hold them (the bundle says in which
dtype, base_weights_dtype's layers in theirs; before loading, the host side builds the
architecture on the meta device, so nothing is read to estimate) and the network's own state (its weights, gradients and optimizer
state) from the real layer shapes. Estimated part: the
activations kept for the backward pass, from per-megapixel figures for each family with
16-bit autocast (doubled in fp32), with and without gradient checkpointing. Those depend on
the attention implementation, so the total is rounded and labelled as an estimate.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import TrainConfig
from ..formats.kohya_names import TargetLayer
from ..hosts.bundle import ModelBundle
from ..networks.registry import find_method, network_targets, trainable_parameter_count
from .auto_precision import with_resolved_precision
from .base_weights import requested_layer_dtype
from .precision import compute_dtype

GB = 1024 ** 3
# GB of activations per megapixel of training image, batch 1, 16-bit: (plain, checkpointed).
ACTIVATIONS_PER_MEGAPIXEL = {"sd1": (9.0, 2.5), "sd2": (9.0, 2.5), "sdxl": (11.0, 3.0)}
VAE_ENCODE_PER_MEGAPIXEL = 3.0  # the VAE encoder's peak when latents are not cached
# Bytes per trainable parameter beside its fp32 weight and gradient (8).
OPTIMIZER_STATE_BYTES = {"AdamW": 8, "AdamW8bit": 2, "Lion": 4, "Prodigy": 16, "Adafactor": 4, "SGDNesterov": 4}
# issue 14's: schedule-free keeps z (and Adam's second moment), D-Adaptation two or three
# buffers besides its moments, bitsandbytes one or two bytes a moment.
OPTIMIZER_STATE_BYTES.update({"AdamWScheduleFree": 8, "RAdamScheduleFree": 8, "SGDScheduleFree": 4,
                              "DAdaptAdam": 12, "DAdaptLion": 8, "DAdaptSGD": 8, "DAdaptAdaGrad": 8,
                              "Lion8bit": 1, "PagedAdamW8bit": 2, "PagedLion8bit": 1})


@dataclass
class MemoryEstimate:
    weights_gb: float
    network_gb: float
    activations_gb: float
    where: str  # "GPU" or "RAM"
    network: str = ""  # the method and its parameter count, e.g. "LoHa, 1,234,560 parameters"

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.network_gb + self.activations_gb

    def summary(self) -> str:
        return (f"Memory estimate ({self.where}): about {self.total_gb:.1f} GB = model weights {self.weights_gb:.1f} GB"
                f" + network{f' ({self.network})' if self.network else ''} and optimizer {self.network_gb:.2f} GB"
                f" + activations ~{self.activations_gb:.1f} GB "
                "(a rough figure; gradient checkpointing, cached latents and a smaller batch lower it)")


def network_parameters(targets: list[TargetLayer], config: TrainConfig) -> int:
    """The parameters the configured network method puts on these layers."""
    method = find_method(config)
    return method.parameter_count(targets, method.settings(config))


def estimate_memory(config: TrainConfig, family: str, weight_bytes: int, targets: list[TargetLayer],
                    where: str = "GPU", parameters: int | None = None) -> MemoryEstimate:
    """`parameters`: what the run trains when the bundle counted it (an embedding adapts no layer)."""
    trainable = network_parameters(targets, config) if parameters is None else parameters
    config = with_resolved_precision(config)
    state_bytes = 8 + OPTIMIZER_STATE_BYTES.get(config.optimizer_type, 8)
    if config.full_fp16 or config.full_bf16:  # weights, gradients and moments in 16 bits
        state_bytes //= 2
    width, height = config.resolution_wh()
    megapixels = width * height / 1e6 * config.train_batch_size
    plain, checkpointed = ACTIVATIONS_PER_MEGAPIXEL.get(family, ACTIVATIONS_PER_MEGAPIXEL["sd1"])
    activations = (checkpointed if config.gradient_checkpointing else plain) * megapixels
    if not config.cache_latents:
        activations = max(activations, VAE_ENCODE_PER_MEGAPIXEL * megapixels)
    if config.mixed_precision == "no":
        activations *= 2
    return MemoryEstimate(weight_bytes / GB, trainable * state_bytes / GB, activations, where,
                          f"{find_method(config).label}, {trainable:,} parameters")


def bundle_memory(config: TrainConfig, bundle: ModelBundle, where: str) -> MemoryEstimate:
    """The estimate for a bundle, loaded or built on the meta device: its weights as training
    will hold them (the bundle says in which dtype), the network on its real layers."""
    _, _, targets = network_targets(config, bundle)
    config = with_resolved_precision(config)
    weights = bundle.held_weight_bytes(compute_dtype(config.mixed_precision), requested_layer_dtype(config))
    return estimate_memory(config, bundle.family, weights, targets, where, trainable_parameter_count(config, bundle))


def memory_summary(config: TrainConfig) -> str:
    """The standalone trainer's estimate for the configured base model, counted on a meta-device
    build of its architecture (the host side makes it; nothing is loaded)."""
    from ..hosts import meta_bundle

    model = config.pretrained_model_name_or_path
    if model.startswith("tiny:"):
        return "Memory estimate: the tiny test model needs well under 1 GB."
    bundle = meta_bundle(model)
    if bundle is None:
        return "Memory estimate: unavailable until the base model exists."
    where = config.device if config.device != "auto" else "GPU or RAM"
    return bundle_memory(config, bundle, where).summary()
