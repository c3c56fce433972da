"""mixed_precision: base weights and activations in fp16/bf16, trainable weights in fp32.

fp16 has a small range, so its loss is scaled up before backward and the gradients
scaled back (torch's GradScaler); bf16 has fp32's range and needs no scaling.

sd-scripts' experimental variants: full_fp16 / full_bf16 keep the trainable weights (and so
their gradients and optimizer moments) in the half dtype too, which saves memory and loses
the small updates fp32 weights would keep; fp8_base stores the base UNet in float8 (e4m3),
upcast by autocast in each layer, on GPUs with fp8 (compute capability 8.9 and later).
"""
from __future__ import annotations

import contextlib

import torch

from ..errors import InvalidInput
from .auto_precision import resolve_precision

COMPUTE_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32}


def compute_dtype(mixed_precision: str) -> torch.dtype:
    return COMPUTE_DTYPES[mixed_precision]


def autocast(device: torch.device, mixed_precision: str):
    mixed_precision = resolve_precision(mixed_precision, device)
    if mixed_precision == "no":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=COMPUTE_DTYPES[mixed_precision])


FP8_DTYPE = torch.float8_e4m3fn
FP8_CAPABILITY = (8, 9)  # Ada Lovelace and Hopper onwards


class _HalfGradScaler(torch.amp.GradScaler):
    """torch refuses to unscale fp16 gradients (its scaler expects fp32 master weights); with
    full_fp16 the weights are fp16 themselves, so it is told to, as sd-scripts patches it."""

    def _unscale_grads_(self, optimizer, inv_scale, found_inf, allow_fp16):  # noqa: D401 - torch's hook
        return super()._unscale_grads_(optimizer, inv_scale, found_inf, True)


def grad_scaler(device: torch.device, mixed_precision: str, full_fp16: bool = False) -> torch.amp.GradScaler:
    kind = _HalfGradScaler if full_fp16 else torch.amp.GradScaler
    return kind(device.type, enabled=mixed_precision == "fp16")


def trainable_dtype(full_fp16: bool, full_bf16: bool) -> torch.dtype | None:
    """The dtype full_fp16 / full_bf16 keep the trained weights in (None: fp32)."""
    return torch.float16 if full_fp16 else torch.bfloat16 if full_bf16 else None


def check_fp8(device: torch.device) -> None:
    """fp8_base needs a CUDA GPU that computes with fp8; anywhere else it is refused by name."""
    if device.type != "cuda":
        raise InvalidInput(f"fp8_base needs a CUDA GPU with fp8 support (compute capability 8.9 or later: RTX 40xx, "
                           f"L4, H100); this run is on {device.type}: turn fp8_base off")
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        raise InvalidInput(f"fp8_base: this GPU ({name}, compute capability {capability[0]}.{capability[1]}) has no "
                           "fp8; it needs 8.9 or later (RTX 40xx, L4, H100): turn fp8_base off")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device={name}: no CUDA GPU is available here; use device=cpu or auto")
    return device


def check_precision(device: torch.device, mixed_precision: str) -> None:
    """Refuse bf16 on a CUDA GPU that has none (before Ampere, e.g. a T4, V100 or GTX 10xx),
    before minutes go into loading the model: there it would fail or run emulated at a
    fraction of the speed, deep inside the first step."""
    if mixed_precision != "bf16" or device.type != "cuda":
        return
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        name = torch.cuda.get_device_name(device)
        raise InvalidInput(f"mixed_precision=bf16: this GPU ({name}) does not support bf16; "
                           "use mixed_precision=fp16 (with loss scaling) or no")
