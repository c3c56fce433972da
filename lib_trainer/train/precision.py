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
