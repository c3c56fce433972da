"""base_weights_dtype: the frozen base layers stored in fp16/bf16 under fp32 compute.

What the run does with the option: the dtype the loader and `frozen_for_training` hold the
UNet's and text encoders' Linear/Conv2d weights in (hosts/stored_layers.py; each layer up-casts
as it computes, hosts/upcast_layers.py), when it changes nothing, when it is refused, and what
the user is told about exactness.
"""
from __future__ import annotations

import torch

from ..config import TrainConfig
from ..errors import InvalidInput
from .auto_precision import with_resolved_precision

STORAGE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def requested_layer_dtype(config: TrainConfig) -> torch.dtype | None:
    """The storage dtype to load and train with; None when the option is empty, or with 16-bit
    compute in the same dtype (the weights are held in it already; config refuses another)."""
    if not config.base_weights_dtype or with_resolved_precision(config).mixed_precision != "no":
        return None
    return STORAGE_DTYPES[config.base_weights_dtype]


def layer_dtype_for(config: TrainConfig, bundle) -> tuple[torch.dtype | None, list[str]]:
    """(the dtype `frozen_for_training` stores the layers in, notes for the user). A borrowed
    model (the WebUI's) is never cast: the option is a no-op when it already is in that dtype,
    and refused otherwise, since casting it down and back would change the loaded model."""
    if not config.base_weights_dtype:
        return None, []
    name = config.base_weights_dtype
    wanted = STORAGE_DTYPES[name]
    if not bundle.owns_weights:
        held = next(bundle.denoiser().parameters()).dtype
        if held != wanted:
            raise InvalidInput(f"base_weights_dtype={name}: the WebUI's loaded model is in {NAMES.get(held, held)}, "
                               "and training may not cast it; leave base_weights_dtype empty (or load the model "
                               f"in {name} in the WebUI)")
        return None, [f"base_weights_dtype={name}: the loaded model already is in {name}; nothing to change"]
    dtype = requested_layer_dtype(config)
    if dtype is None:
        return None, [f"base_weights_dtype={name}: with mixed_precision={config.mixed_precision} the base weights "
                      f"are held in {config.mixed_precision} already (it is for fp32 compute); nothing to change"]
    return dtype, [storage_note(dtype, bundle.source_dtype)]


def storage_note(dtype: torch.dtype, source: torch.dtype | None) -> str:
    """Whether storing the base weights in `dtype` keeps them exactly."""
    name = NAMES[dtype]
    head = f"base_weights_dtype={name}: the base UNet's and text encoders' layers are held in {name} and " \
           "computed in fp32"
    if source == dtype:
        return f"{head}; the checkpoint is {name}, so its weights are kept exactly"
    what = f"the checkpoint's {NAMES.get(source, source)} weights" if source is not None else "the base weights"
    if dtype == torch.bfloat16:
        return (f"{head}; bf16 rounds {what} (8 significant bits, fp16 has 11): the model the network trains on "
                "changes slightly; fp16 keeps an fp16 checkpoint exactly")
    if source is None:
        return f"{head}; an fp16 checkpoint is kept exactly"
    return f"{head}; fp16 rounds {what}: the model the network trains on changes slightly"
