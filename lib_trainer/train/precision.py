"""mixed_precision: base weights and activations in fp16/bf16, trainable weights in fp32.

fp16 has a small range, so its loss is scaled up before backward and the gradients
scaled back (torch's GradScaler); bf16 has fp32's range and needs no scaling.
"""
from __future__ import annotations

import contextlib

import torch

from ..errors import InvalidInput

COMPUTE_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32}


def compute_dtype(mixed_precision: str) -> torch.dtype:
    return COMPUTE_DTYPES[mixed_precision]


def autocast(device: torch.device, mixed_precision: str):
    if mixed_precision == "no":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=COMPUTE_DTYPES[mixed_precision])


def grad_scaler(device: torch.device, mixed_precision: str) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(device.type, enabled=mixed_precision == "fp16")


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
